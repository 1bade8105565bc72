"""The native checkpoint reader against TensorFlow's own, on checkpoints TensorFlow wrote.

Some tests rebuild a TF-written index with a small table writer below (snappy-compressed
blocks, other block layouts, big-endian data) and then check that TensorFlow reads the
result too, so the writer cannot share a misunderstanding with the reader.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import cramjam
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tfckpt import save_tf1_checkpoint

from danbert_convert.errors import InputError
from danbert_convert.readers.base import open_checkpoint
from danbert_convert.readers.bundle import (
    FOOTER_SIZE,
    TABLE_MAGIC,
    BundleReader,
    crc32c,
    mask_crc,
    parse_block,
    read_varint,
)
from danbert_convert.readers.tensorflow import TensorFlowReader

# --- a minimal writer for the table and protobuf formats -----------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def pb_varint(field: int, value: int) -> bytes:
    return varint(field << 3) + varint(value)


def pb_bytes(field: int, value: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(value)) + value


def entry_proto(dtype: int, shape: tuple[int, ...], shard: int, offset: int, size: int, crc: int):
    dims = b"".join(pb_bytes(2, pb_varint(1, d)) for d in shape)
    return (
        pb_varint(1, dtype)
        + pb_bytes(2, dims)
        + pb_varint(3, shard)
        + pb_varint(4, offset)
        + pb_varint(5, size)
        + varint(6 << 3 | 5)
        + struct.pack("<I", crc)
    )


def header_proto(num_shards: int, big_endian: bool) -> bytes:
    return pb_varint(1, num_shards) + pb_varint(2, int(big_endian)) + pb_bytes(3, pb_varint(1, 1))


def build_block(entries: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    out, restarts, last = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(last)) and key[shared] == last[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value))
        out += key[shared:] + value
        last = key
    restarts = restarts or [0]
    return bytes(out) + struct.pack(f"<{len(restarts) + 1}I", *restarts, len(restarts))


def append_block(table: bytearray, contents: bytes, compress: bool) -> bytes:
    """Append a block and its trailer; returns its encoded handle."""
    kind = 0
    if compress:
        contents, kind = bytes(cramjam.snappy.compress_raw(contents)), 1
    offset = len(table)
    table += contents + bytes([kind])
    table += struct.pack("<I", mask_crc(crc32c(bytes([kind]), crc32c(contents))))
    return varint(offset) + varint(len(contents))


def build_table(
    data_blocks: list[list[tuple[bytes, bytes]]],
    compress: bool,
    restart_interval: int = 16,
    mangle=lambda contents: contents,
) -> bytes:
    table = bytearray()
    index = []
    for block in data_blocks:
        handle = append_block(table, mangle(build_block(block, restart_interval)), compress)
        index.append((block[-1][0], handle))  # the last key is a valid separator
    meta = append_block(table, build_block([], 1), compress)
    idx = append_block(table, build_block(index, 1), compress)
    footer = (meta + idx).ljust(FOOTER_SIZE - 8, b"\0")
    return bytes(table + footer + struct.pack("<II", TABLE_MAGIC & 0xFFFFFFFF, TABLE_MAGIC >> 32))


def raw_blocks(index: bytes) -> list[tuple[int, int, int]]:
    """(offset, size, compression type) of each data block of a table, from its index block."""
    footer = index[-FOOTER_SIZE:]
    pos = read_varint(footer, read_varint(footer, 0)[1])[1]
    off, pos = read_varint(footer, pos)
    size, _ = read_varint(footer, pos)
    assert index[off + size] == 0  # TF's writer does not compress the index block
    blocks = []
    for _, handle in parse_block(index[off : off + size]):
        b_off, p = read_varint(handle, 0)
        b_size, _ = read_varint(handle, p)
        blocks.append((b_off, b_size, index[b_off + b_size]))
    return blocks


# --- helpers ------------------------------------------------------------------------------


def ckpt(folder: Path) -> Path:
    return folder / "bert_model.ckpt"


def copy_release(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return ckpt(dst)


def assert_matches_tensorflow(prefix: Path, expected: dict[str, np.ndarray] | None = None):
    """Both readers list the same variables and return byte-equal values (and `expected`)."""
    tf_reader, native = TensorFlowReader(prefix), BundleReader(prefix)
    try:
        assert list(native.variables()) == list(tf_reader.variables())
        for name, info in native.variables().items():
            ours, theirs = native.read(name), tf_reader.read(name)
            assert ours.shape == info.shape == tf_reader.variables()[name].shape, name
            assert ours.dtype == info.dtype, name
            # What is stored, through the protocol: TensorFlow's dtype name, the index's size.
            assert info.stored_dtype == tf_reader.variables()[name].stored_dtype, name
            assert info.stored_dtype == theirs.dtype.name or theirs.dtype == object, name
            assert info.stored_bytes == native.entry(name).size, name
            if theirs.dtype != object:
                assert info.stored == (theirs.dtype.name, theirs.nbytes), name
            if theirs.dtype.name == "bfloat16":
                # We widen bfloat16 to float32: the upper halves must be TF's bits, exactly.
                assert ours.dtype == np.float32
                assert not (ours.view(np.uint32) & 0xFFFF).any()
                ours_bits = (ours.view(np.uint32) >> 16).astype(np.uint16)
                assert ours_bits.tobytes() == theirs.view(np.uint16).tobytes(), name
            else:
                assert tf_reader.variables()[name] == info, name
                assert ours.dtype == theirs.dtype, name
                assert ours.tobytes() == theirs.tobytes(), name
            if expected is not None:
                assert theirs.tobytes() == np.asarray(expected[name]).tobytes(), name
    finally:
        native.close()
        tf_reader.close()
    return native


# --- cross-checks ---------------------------------------------------------------------------


def test_full_release_matches_tensorflow(full_release: Path) -> None:
    native = assert_matches_tensorflow(ckpt(full_release))
    names = list(native.variables())
    assert "global_step" in names and any(n.endswith("/adam_m") for n in names)
    assert native.variables()["global_step"].dtype == np.int64


def test_open_checkpoint_auto_and_native_are_the_native_reader(full_release: Path) -> None:
    for reader in ("auto", "native"):
        r = open_checkpoint(ckpt(full_release), reader)
        assert isinstance(r, BundleReader)
        r.close()


def test_tf_index_uses_shared_key_prefixes_and_restarts(full_release: Path) -> None:
    """TF's own layout: one data block (a BERT-base index, 23 kB, is one block too), keys
    delta-encoded, restart points every 16 entries. Other layouts: test_other_table_layouts_*."""
    index = Path(f"{ckpt(full_release)}.index").read_bytes()
    [(off, size, _)] = raw_blocks(index)
    block = index[off : off + size]
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    shared, pos, limit = [], 0, len(block) - 4 - 4 * restarts
    while pos < limit:
        n, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        value_len, pos = read_varint(block, pos)
        pos += unshared + value_len
        shared.append(n)
    assert 1 < restarts <= shared.count(0)
    assert max(shared) > 0


def test_listing_needs_only_the_index(full_release: Path, tmp_path: Path) -> None:
    shutil.copy(f"{ckpt(full_release)}.index", tmp_path / "bert_model.ckpt.index")
    expected = TensorFlowReader(ckpt(full_release)).variables()
    with BundleReader(tmp_path / "bert_model.ckpt") as reader:
        assert reader.variables() == expected
        with pytest.raises(InputError, match=r"missing data shard 0 of 1 .*global_step"):
            reader.read("global_step")


DTYPES = ["float32", "float16", "bfloat16", "float64", "int32", "int64", "bool"]
DTYPES += ["int8", "uint8", "int16", "uint16", "complex64", "complex128"]


def random_value(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Random bit patterns (NaNs, infinities, subnormals included) of `dtype`."""
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(np.bool_)
    if dtype == "bfloat16":
        import ml_dtypes  # comes with TensorFlow; used only to hand TF the values

        bits = rng.integers(0, 1 << 16, shape, dtype=np.uint16)
        return bits.view(ml_dtypes.bfloat16)
    itemsize = np.dtype(dtype).itemsize
    n = int(np.prod(shape, dtype=np.int64))
    value = np.frombuffer(rng.bytes(n * itemsize), dtype=dtype).reshape(shape).copy()
    if value.dtype.kind in "fc":
        # TF quiets signalling NaNs when it builds some variables (complex64 at least), so
        # values would not survive the trip into TF; both readers are compared on all bits.
        parts = value.reshape(-1).view(value.real.dtype)
        bits = parts.view(f"u{parts.dtype.itemsize}")
        quiet = 1 << (np.finfo(parts.dtype).nmant - 1)
        bits[np.isnan(parts)] |= np.array(quiet, dtype=bits.dtype)
    return value


variable_names = st.text(
    st.characters(blacklist_categories=("Cs",), min_codepoint=1), min_size=1, max_size=24
)
variable_specs = st.dictionaries(
    variable_names,
    st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 6), max_size=4).map(tuple)),
    min_size=1,
    max_size=40,
)


def save_under_any_names(prefix: Path, values: dict[str, np.ndarray]) -> None:
    """A tf.compat.v1 Saver whose checkpoint keys are the dict keys: any text, not only op
    names (TF graph names reject most characters)."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        tf_vars = {
            name: tf.compat.v1.Variable(value, name=f"v{i}")
            for i, (name, value) in enumerate(values.items())
        }
        saver = tf.compat.v1.train.Saver(var_list=tf_vars)
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(prefix), write_state=False)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=variable_specs, seed=st.integers(0, 2**32 - 1))
def test_random_checkpoints_match_tensorflow(tmp_path_factory, specs, seed) -> None:
    rng = np.random.default_rng(seed)
    values = {name: random_value(rng, dt, shape) for name, (dt, shape) in specs.items()}
    prefix = tmp_path_factory.mktemp("random") / "model.ckpt"
    save_under_any_names(prefix, values)
    assert_matches_tensorflow(prefix, values)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries_per_block=st.integers(1, 50),
    restart_interval=st.integers(1, 20),
    compress=st.booleans(),
)
def test_other_table_layouts_read_by_both(
    full_release: Path, tmp_path_factory, entries_per_block, restart_interval, compress
) -> None:
    """Re-lay the index: other block sizes and restart intervals, snappy or not."""
    src = ckpt(full_release)
    entries = _table_entries(src)
    blocks = [entries[i : i + entries_per_block] for i in range(0, len(entries), entries_per_block)]
    prefix = copy_release(full_release, tmp_path_factory.mktemp("layout") / "r")
    Path(f"{prefix}.index").write_bytes(build_table(blocks, compress, restart_interval))
    assert_matches_tensorflow(prefix)


def _table_entries(prefix: Path) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a TF-written index, read with the table code under test."""
    index = Path(f"{prefix}.index").read_bytes()
    out: list[tuple[bytes, bytes]] = []
    for off, size, kind in raw_blocks(index):
        assert kind == 0
        out += parse_block(index[off : off + size])
    return out


def test_snappy_compressed_index_blocks(full_release: Path, tmp_path: Path) -> None:
    """Each block of a TF-written index re-encoded with snappy, as TF 1.x writers did."""
    prefix = copy_release(full_release, tmp_path / "r")
    index = Path(f"{prefix}.index").read_bytes()
    blocks = raw_blocks(index)
    table = bytearray()
    handles = []
    for (off, size, _), (key, _) in zip(blocks, _index_keys(index), strict=True):
        handles.append((key, append_block(table, index[off : off + size], compress=True)))
    meta = append_block(table, build_block([], 1), compress=True)
    idx = append_block(table, build_block(handles, 1), compress=True)
    footer = (meta + idx).ljust(FOOTER_SIZE - 8, b"\0") + index[-8:]
    new = bytes(table + footer)
    Path(f"{prefix}.index").write_bytes(new)
    assert all(kind == 1 for _, _, kind in raw_blocks_any(new))
    assert len(new) < len(index)
    assert_matches_tensorflow(prefix)


def _index_keys(index: bytes) -> list[tuple[bytes, bytes]]:
    footer = index[-FOOTER_SIZE:]
    pos = read_varint(footer, read_varint(footer, 0)[1])[1]
    off, pos = read_varint(footer, pos)
    size, _ = read_varint(footer, pos)
    return list(parse_block(index[off : off + size]))


def raw_blocks_any(index: bytes) -> list[tuple[int, int, int]]:
    """Like raw_blocks, for a table whose index block may be compressed; includes it."""
    footer = index[-FOOTER_SIZE:]
    pos = read_varint(footer, read_varint(footer, 0)[1])[1]
    off, pos = read_varint(footer, pos)
    size, _ = read_varint(footer, pos)
    contents = index[off : off + size]
    if index[off + size] == 1:
        contents = bytes(cramjam.snappy.decompress_raw(contents))
    blocks = [(off, size, index[off + size])]
    for _, handle in parse_block(contents):
        b_off, p = read_varint(handle, 0)
        b_size, _ = read_varint(handle, p)
        blocks.append((b_off, b_size, index[b_off + b_size]))
    return blocks


def save_sharded(prefix: Path, values: dict[str, np.ndarray], devices: int) -> None:
    """A tf.compat.v1 sharded Saver with variables spread over `devices` CPU devices."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        tf_vars = {}
        for i, (name, value) in enumerate(values.items()):
            with tf.device(f"/cpu:{i % devices}"):
                tf_vars[name] = tf.compat.v1.Variable(value, name=f"v{i}")
        saver = tf.compat.v1.train.Saver(var_list=tf_vars, sharded=True)
        config = tf.compat.v1.ConfigProto(device_count={"CPU": devices})
        with tf.compat.v1.Session(graph=g, config=config) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(prefix), write_state=False)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    values = {f"layer_{i}/kernel": rng.normal(size=(i + 1, 5)).astype(np.float32) for i in range(9)}
    values["global_step"] = np.array(12, dtype=np.int64)
    prefix = tmp_path_factory.mktemp("sharded") / "model.ckpt"
    save_sharded(prefix, values, devices=3)
    return prefix, values


def test_multi_shard_checkpoint(sharded) -> None:
    prefix, values = sharded
    assert len(list(prefix.parent.glob("model.ckpt.data-*-of-00003"))) == 3
    native = assert_matches_tensorflow(prefix, values)
    assert native.header.num_shards == 3
    assert {native.entry(n).shard_id for n in values} == {0, 1, 2}


def test_missing_shard_names_file_and_variable(sharded, tmp_path: Path) -> None:
    src, values = sharded
    for f in src.parent.glob("model.ckpt.*"):
        shutil.copy(f, tmp_path / f.name)
    prefix = tmp_path / "model.ckpt"
    reader = BundleReader(prefix)
    lost = next(n for n in values if reader.entry(n).shard_id == 1)
    kept = next(n for n in values if reader.entry(n).shard_id == 2)
    Path(f"{prefix}.data-00001-of-00003").unlink()
    assert reader.read(kept).tobytes() == values[kept].tobytes()
    with pytest.raises(InputError) as e:
        reader.read(lost)
    msg = str(e.value)
    assert "model.ckpt.data-00001-of-00003" in msg and lost in msg and "missing" in msg
    assert "\n" not in msg


def test_big_endian_bundle_is_byte_swapped(tmp_path: Path) -> None:
    """A bundle as a big-endian machine writes it; TensorFlow swaps it too."""
    rng = np.random.default_rng(3)
    values = {
        f"v/{dt}": random_value(rng, dt, (3, 4))
        for dt in ["float32", "float16", "bfloat16", "float64", "int32", "int64", "bool"]
    }
    little = tmp_path / "le" / "model.ckpt"
    save_tf1_checkpoint(little, values)
    reader = BundleReader(little)
    data = bytearray()
    entries = [(b"", header_proto(1, big_endian=True))]
    for name in reader.variables():
        e = reader.entry(name)
        raw = Path(reader.data_path(0)).read_bytes()[e.offset : e.offset + e.size]
        itemsize = (
            2
            if reader.stored_dtype(name) == "bfloat16"
            else reader.variables()[name].dtype.itemsize
        )
        swapped = np.frombuffer(raw, dtype=f">u{itemsize}" if itemsize > 1 else "u1")
        swapped = swapped.astype(f"<u{itemsize}" if itemsize > 1 else "u1").tobytes()
        proto = entry_proto(e.dtype, e.shape, 0, len(data), e.size, mask_crc(crc32c(swapped)))
        entries.append((name.encode(), proto))
        data += swapped
    big = tmp_path / "be" / "model.ckpt"
    big.parent.mkdir()
    Path(f"{big}.data-00000-of-00001").write_bytes(bytes(data))
    Path(f"{big}.index").write_bytes(build_table([entries], compress=False))
    assert BundleReader(big).header.big_endian
    assert data != Path(reader.data_path(0)).read_bytes()[: len(data)]
    assert_matches_tensorflow(big, values)


def test_partitioned_variable_is_listed_and_refused(tmp_path: Path) -> None:
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        part = tf.compat.v1.get_variable(
            "part",
            shape=[10, 4],
            initializer=tf.compat.v1.ones_initializer(),
            partitioner=tf.compat.v1.fixed_size_partitioner(2),
        )
        plain = tf.compat.v1.Variable(np.arange(3, dtype=np.int32), name="plain")
        saver = tf.compat.v1.train.Saver(var_list=[part, plain])
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(tmp_path / "model.ckpt"), write_state=False)
    prefix = tmp_path / "model.ckpt"
    assert TensorFlowReader(prefix).read("part").shape == (10, 4)
    with BundleReader(prefix) as reader:
        assert list(reader.variables()) == ["part", "plain"]
        assert reader.variables()["part"].shape == (10, 4)
        assert reader.read("plain").tolist() == [0, 1, 2]
        with pytest.raises(InputError, match=r"model\.ckpt\.index: variable part is partitioned"):
            reader.read("part")


def test_unsupported_dtype_is_listed_and_refused(tmp_path: Path) -> None:
    values = {"name": np.array([b"abc", b"de"], dtype=object), "x": np.ones(2, np.float32)}
    save_tf1_checkpoint(tmp_path / "model.ckpt", values)
    with BundleReader(tmp_path / "model.ckpt") as reader:
        assert reader.variables()["name"].dtype == np.dtype(object)
        assert reader.stored_dtype("name") == "string"
        assert reader.read("x").tolist() == [1.0, 1.0]
        with pytest.raises(InputError, match=r"variable name has dtype string, which"):
            reader.read("name")


def test_read_string_matches_tensorflow(tmp_path: Path) -> None:
    """String vectors and scalars, empty and non-ASCII elements and one past 127 bytes (a
    two-byte length), read natively and by TensorFlow; `read` still refuses them."""
    long = bytes(range(256)) * 3
    values = {
        "names": np.array([b"abc", b"", "æøå".encode(), long], dtype=object),
        "one": np.array(b"scalar", dtype=object),
        "none": np.array([], dtype=object),
        "x": np.ones(2, np.float32),
    }
    save_tf1_checkpoint(tmp_path / "model.ckpt", values)
    tf_reader = TensorFlowReader(tmp_path / "model.ckpt")
    with BundleReader(tmp_path / "model.ckpt") as reader:
        assert reader.read_string("names") == [b"abc", b"", "æøå".encode(), long]
        assert reader.read_string("one") == [b"scalar"]
        assert reader.read_string("none") == []
        for name in ("names", "one", "none"):
            assert reader.read_string(name) == tf_reader.read_string(name), name
            with pytest.raises(InputError, match=rf"variable {name} has dtype string, which"):
                reader.read(name)
        with pytest.raises(
            InputError, match=r"model\.ckpt\.index: variable x has dtype float32, not"
        ):
            reader.read_string("x")
    with pytest.raises(InputError, match=r"variable x has dtype float32 and shape \[2\]; only"):
        tf_reader.read_string("x")


@pytest.mark.parametrize(
    ("where", "why"),
    [
        (0, r"CRC-32C mismatch in the lengths \(stored"),  # the first length
        (4, r"CRC-32C mismatch in the lengths \(stored"),  # the lengths' checksum
        (-1, r"CRC-32C mismatch \(stored"),  # the last string byte
    ],
)
def test_corrupt_string_names_file_and_variable(tmp_path: Path, where: int, why: str) -> None:
    save_tf1_checkpoint(tmp_path / "m", {"s": np.array([b"ab", b"cdef"], dtype=object)})
    with BundleReader(tmp_path / "m") as reader:
        e = reader.entry("s")
        assert e.size == 2 + 4 + 6  # two one-byte lengths, the checksum, the bytes
        flip_byte(reader.data_path(0), e.offset + where % e.size)
        with pytest.raises(InputError) as err:
            reader.read_string("s")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'm'}.data-00000-of-00001: string variable s (12 bytes")
    assert re.search(why, msg) and "\n" not in msg, msg


def test_string_lengths_must_add_up_to_the_entry(tmp_path: Path) -> None:
    """Lengths whose CRC is right but that claim more bytes than the entry holds."""
    save_tf1_checkpoint(tmp_path / "m", {"s": np.array([b"ab", b"cdef"], dtype=object)})
    with BundleReader(tmp_path / "m") as reader:
        e = reader.entry("s")
        data = bytearray(reader.data_path(0).read_bytes())
        lengths = bytes([2, 40])
        crc = crc32c(struct.pack("<II", 2, 40))
        data[e.offset : e.offset + 6] = lengths + struct.pack("<I", mask_crc(crc))
        reader.data_path(0).write_bytes(bytes(data))
        with pytest.raises(InputError, match=r"string variable s \(12 bytes at offset \d+\): "
                           r"element lengths add up to 48 bytes with their header: the data "
                           r"file is corrupt$"):  # fmt: skip
            reader.read_string("s")


def test_string_entry_claiming_more_than_its_shard_holds(tmp_path: Path) -> None:
    """A 4 GB string claimed by a tiny shard: refused before a buffer is allocated for it
    (in a child whose address space could not hold that buffer); a count of elements the
    entry's size cannot hold is refused before anything is read."""
    prefix = tmp_path / "m"
    save_tf1_checkpoint(prefix, {"s": np.array([b"ab", b"cdef"], dtype=object)})
    with BundleReader(prefix) as reader:
        e = reader.entry("s")
        shard_size = reader.data_path(0).stat().st_size
    claim = entry_proto(7, (2,), 0, e.offset, 1 << 32, e.crc32c)
    _rebuild_index(prefix, lambda key, value: claim if key == b"s" else value)
    r = _limited_child(
        f"""
        from danbert_convert.readers.bundle import BundleReader
        with BundleReader({str(prefix)!r}) as reader:
            reader.read_string("s")
        """
    )
    assert r.stderr.strip().splitlines()[-1] == (
        f"danbert_convert.errors.InputError: {prefix}.data-00000-of-00001: truncated data shard: "
        f"variable s needs bytes {e.offset}..{e.offset + (1 << 32)}, the file ends at {shard_size}"
    )
    many = entry_proto(7, (1 << 40,), 0, e.offset, e.size, e.crc32c)
    _rebuild_index(prefix, lambda key, value: many if key == b"s" else value)
    with (
        BundleReader(prefix) as reader,
        pytest.raises(
            InputError,
            match=r"string variable s: index says 12 bytes, too few for 1099511627776 el",
        ),
    ):
        reader.read_string("s")


# --- corruption ---------------------------------------------------------------------------


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_flipped_data_byte_names_the_tensor(full_release: Path, tmp_path: Path) -> None:
    prefix = copy_release(full_release, tmp_path / "r")
    name = "bert/encoder/layer_1/attention/self/key/kernel"
    with BundleReader(prefix) as reader:
        e = reader.entry(name)
        flip_byte(reader.data_path(0), e.offset + e.size // 2)
        with pytest.raises(InputError) as err:
            reader.read(name)
        msg = str(err.value)
        assert f"{prefix}.data-00000-of-00001" in msg and name in msg and "CRC-32C" in msg
        assert "\n" not in msg
        assert reader.read("bert/pooler/dense/kernel").shape == (16, 16)  # others are fine


def test_flipped_index_byte_fails_the_block_crc(full_release: Path, tmp_path: Path) -> None:
    prefix = copy_release(full_release, tmp_path / "r")
    index = Path(f"{prefix}.index")
    off, size, _ = raw_blocks(index.read_bytes())[0]
    flip_byte(index, off + size // 2)
    with pytest.raises(InputError, match=r"\.index: CRC-32C mismatch in data block at offset"):
        BundleReader(prefix)


def test_flipped_trailer_byte_fails_the_block_crc(full_release: Path, tmp_path: Path) -> None:
    prefix = copy_release(full_release, tmp_path / "r")
    index = Path(f"{prefix}.index")
    off, size, _ = raw_blocks(index.read_bytes())[0]
    flip_byte(index, off + size + 2)
    with pytest.raises(InputError, match=r"CRC-32C mismatch in data block"):
        BundleReader(prefix)


@pytest.mark.parametrize("keep", [0, 30, 0.5, -1])
def test_truncated_index(full_release: Path, tmp_path: Path, keep: float) -> None:
    prefix = copy_release(full_release, tmp_path / "r")
    index = Path(f"{prefix}.index")
    data = index.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    index.write_bytes(data[:n])
    with pytest.raises(InputError, match=r"bert_model\.ckpt\.index: .*truncated"):
        BundleReader(prefix)


def test_truncated_table_with_intact_footer(full_release: Path, tmp_path: Path) -> None:
    """Blocks cut out of the middle, footer kept: the handles point past the end."""
    prefix = copy_release(full_release, tmp_path / "r")
    index = Path(f"{prefix}.index")
    data = index.read_bytes()
    index.write_bytes(data[:100] + data[-FOOTER_SIZE:])
    with pytest.raises(InputError, match=r"truncated index: index block at offset"):
        BundleReader(prefix)


def test_wrong_magic(full_release: Path, tmp_path: Path) -> None:
    prefix = copy_release(full_release, tmp_path / "r")
    flip_byte(Path(f"{prefix}.index"), -3)
    with pytest.raises(InputError, match=r"\.index: bad magic number"):
        BundleReader(prefix)


def test_restart_point_inside_an_entry(full_release: Path, tmp_path: Path) -> None:
    """A block with a valid CRC whose restart array points into the middle of an entry."""
    prefix = copy_release(full_release, tmp_path / "r")

    def mangle(contents: bytes) -> bytes:
        (count,) = struct.unpack_from("<I", contents, len(contents) - 4)
        at = len(contents) - 4 - 4 * count + 4  # the second restart offset
        (second,) = struct.unpack_from("<I", contents, at)
        return contents[:at] + struct.pack("<I", second + 1) + contents[at + 4 :]

    index = Path(f"{prefix}.index")
    index.write_bytes(build_table([_table_entries(prefix)], False, 4, mangle))
    with pytest.raises(InputError, match=r"\.index: corrupt index table: restart point \d+ is"):
        BundleReader(prefix)


def test_truncated_data_shard(full_release: Path, tmp_path: Path) -> None:
    prefix = copy_release(full_release, tmp_path / "r")
    reader = BundleReader(prefix)
    last = max(reader.variables(), key=lambda n: reader.entry(n).offset)
    data = Path(reader.data_path(0))
    data.write_bytes(data.read_bytes()[: reader.entry(last).offset + 3])
    with pytest.raises(InputError, match=rf"truncated data shard: variable {last} needs"):
        reader.read(last)


# --- no TensorFlow, no torch --------------------------------------------------------------


def test_convert_imports_neither_tensorflow_nor_torch(full_release: Path, tmp_path: Path) -> None:
    """A whole `convert` with the default (native) reader, in a fresh interpreter."""
    code = textwrap.dedent(
        f"""
        import json, sys
        from danbert_convert.stages.convert import convert
        result = convert({str(full_release)!r}, {str(tmp_path / "out")!r}, progress=False)
        print(json.dumps({{"tensors": result.tensors, "modules": sorted(sys.modules)}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["tensors"] > 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    top = {m.split(".")[0] for m in result["modules"]}
    assert "danbert_convert.readers.bundle" in result["modules"]
    assert not top & {"tensorflow", "torch", "transformers", "ml_dtypes"}


# --- untrusted numbers in the index: one line, nothing allocated for them -------------------


def _rebuild_index(prefix: Path, change) -> None:
    """Rewrite `prefix`.index with `change(key, value) -> value` applied to every entry, as one
    uncompressed block with valid CRCs (TensorFlow's layout)."""
    entries = [(key, change(key, value)) for key, value in _table_entries(prefix)]
    Path(f"{prefix}.index").write_bytes(build_table([entries], compress=False))


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        (b"\x80", "truncated varint"),  # a field tag that stops after a continuation byte
        (b"\x20\xff", "truncated varint"),  # field 4 (offset) whose varint stops likewise
        (b"\x12\x05\x12", "truncated length-delimited field"),  # a shape claiming 5 bytes
    ],
)
def test_entry_ending_mid_varint_names_the_variable(full_release, tmp_path, tail, why) -> None:
    prefix = copy_release(full_release, tmp_path / "r")
    name = "bert/encoder/layer_0/output/dense/kernel"
    _rebuild_index(prefix, lambda key, value: value + tail if key == name.encode() else value)
    with pytest.raises(InputError) as e:
        BundleReader(prefix)
    assert str(e.value) == f"{prefix}.index: cannot parse variable {name}: {why}"


def test_entry_claiming_more_than_its_shard_holds(full_release, tmp_path) -> None:
    """A 4 GB tensor claimed by a 76 kB shard: refused before a buffer is allocated for it
    (checked in a child whose address space could not hold that buffer)."""
    prefix = copy_release(full_release, tmp_path / "r")
    name = "bert/pooler/dense/kernel"
    with BundleReader(prefix) as reader:
        e = reader.entry(name)
        shard_size = reader.data_path(0).stat().st_size
    claim = entry_proto(1, (1 << 15, 1 << 15), 0, 8, 1 << 32, e.crc32c)
    _rebuild_index(prefix, lambda key, value: claim if key == name.encode() else value)
    r = _limited_child(
        f"""
        from danbert_convert.readers.bundle import BundleReader
        with BundleReader({str(prefix)!r}) as reader:
            reader.read({name!r})
        """
    )
    assert r.returncode == 1 and "Traceback" in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"danbert_convert.errors.InputError: {prefix}.data-00000-of-00001: truncated data shard: "
        f"variable {name} needs bytes 8..{8 + (1 << 32)}, the file ends at {shard_size}"
    )


def test_snappy_block_claiming_gigabytes(full_release, tmp_path) -> None:
    """A snappy block's length preamble is allocated at once by the decompressor, which aborts
    the process when it cannot: a claim no valid block can make is refused first."""
    prefix = copy_release(full_release, tmp_path / "r")
    contents = build_block(_table_entries(prefix), 16)
    packed = bytes(cramjam.snappy.compress_raw(contents))
    _, body = read_varint(packed, 0)
    packed = varint((1 << 32) - 1) + packed[body:]
    table = bytearray()
    table += packed + b"\x01"
    table += struct.pack("<I", mask_crc(crc32c(b"\x01", crc32c(packed))))
    handle = varint(0) + varint(len(packed))
    meta = append_block(table, build_block([], 1), False)
    idx = append_block(table, build_block([(b"\xff", handle)], 1), False)
    footer = (meta + idx).ljust(FOOTER_SIZE - 8, b"\0")
    magic = struct.pack("<II", TABLE_MAGIC & 0xFFFFFFFF, TABLE_MAGIC >> 32)
    Path(f"{prefix}.index").write_bytes(bytes(table) + footer + magic)
    r = _limited_child(
        f"""
        from danbert_convert.readers.bundle import BundleReader
        BundleReader({str(prefix)!r})
        """
    )
    assert r.returncode == 1, r.stderr  # an abort would be -6
    assert r.stderr.strip().splitlines()[-1] == (
        f"danbert_convert.errors.InputError: {prefix}.index: data block at offset 0: bad snappy "
        f"data: claims {(1 << 32) - 1} bytes from {len(packed)}"
    )


def _limited_child(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter limited to 1 GB of address space."""
    script = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n" + textwrap.dedent(code)
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def scratch(full_release, tmp_path_factory) -> tuple[Path, list[tuple[bytes, bytes]]]:
    """A copy of the release whose index the examples below overwrite, and its entries."""
    prefix = copy_release(full_release, tmp_path_factory.mktemp("scratch") / "r")
    return prefix, _table_entries(prefix)


_MUTATIONS = st.sampled_from(["truncate", "flip", "insert", "set"])


@settings(max_examples=200, deadline=None)
@given(
    which=st.integers(0, 10**6),
    how=_MUTATIONS,
    at=st.integers(0, 10**6),
    byte=st.integers(0, 255),
    extra=st.binary(min_size=1, max_size=12),
)
def test_mangled_entries_give_input_errors_only(scratch, which, how, at, byte, extra) -> None:
    """Any damage to an entry's bytes that the block CRC cannot see (it is recomputed) ends in
    a clean read or an InputError: never IndexError, struct.error, MemoryError and the like."""
    prefix, entries = scratch
    target = entries[which % len(entries)][0]

    def mangle(value: bytes) -> bytes:
        i = at % (len(value) + 1)
        if how == "truncate":
            return value[:i]
        if how == "insert":
            return value[:i] + extra + value[i:]
        if not value:
            return extra
        i %= len(value)
        new = bytes([value[i] ^ (byte or 1)]) if how == "flip" else bytes([byte])
        return value[:i] + new + value[i + 1 :]

    changed = [(k, mangle(v) if k == target else v) for k, v in entries]
    Path(f"{prefix}.index").write_bytes(build_table([changed], compress=False))
    try:
        reader = BundleReader(prefix)
    except InputError:
        return
    with reader:
        for name in reader.variables():
            with contextlib.suppress(InputError):
                reader.read(name)


@settings(max_examples=100, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1,
                      max_size=4))  # fmt: skip
def test_mangled_block_layout_gives_input_errors_only(scratch, flips):
    """Flipped bytes anywhere in a data block (entry headers, keys, restart array), CRC valid."""
    prefix, entries = scratch

    def mangle(contents: bytes) -> bytes:
        data = bytearray(contents)
        for at, mask in flips:
            data[at % len(data)] ^= mask
        return bytes(data)

    Path(f"{prefix}.index").write_bytes(build_table([entries], False, 16, mangle))
    with contextlib.suppress(InputError):
        BundleReader(prefix).close()


# --- CRC-32C: google-crc32c's C extension, over any buffer --------------------------------


def test_crc32c_is_castagnoli_over_any_buffer_and_continues(tmp_path: Path) -> None:
    """The standard check value of CRC-32C (RFC 3720, B.4) over every kind of buffer the
    reader hands it, whole and continued from a prefix's CRC."""
    import mmap

    data = b"123456789"
    path = tmp_path / "d"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for buf in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8), mm):
            assert crc32c(buf) == 0xE3069283, type(buf)
            assert crc32c(memoryview(buf)[4:], crc32c(memoryview(buf)[:4])) == 0xE3069283
    assert crc32c(b"") == 0


def test_crc32c_runs_in_the_c_extension() -> None:
    import google_crc32c

    from danbert_convert.readers import bundle

    assert bundle.CRC_IMPLEMENTATION == google_crc32c.implementation == "c"


def test_pure_python_crc_fallback_reads_correctly_and_warns_once(full_release: Path) -> None:
    """Where google-crc32c's C extension cannot load, reading still works, with one warning."""
    import danbert_convert

    code = textwrap.dedent(
        f"""
        import logging, sys
        sys.modules["google_crc32c._crc32c"] = None  # the C extension fails to import
        logging.basicConfig(format="%(levelname)s %(message)s")
        from danbert_convert.readers import bundle
        for _ in range(2):
            r = bundle.BundleReader({str(full_release / "bert_model.ckpt")!r})
            print(bundle.CRC_IMPLEMENTATION, r.read("bert/pooler/dense/bias").shape)
        """
    )
    src = str(Path(danbert_convert.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src, "PYTHONWARNINGS": "error::RuntimeWarning"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["python (16,)", "python (16,)"]
    assert out.stderr.splitlines() == [
        "WARNING google-crc32c has no C extension here: checksums run in pure Python at "
        "~1.5 MB/s (minutes for a BERT-base checkpoint); install a google-crc32c wheel built "
        "for this platform, or use --reader tensorflow"
    ]

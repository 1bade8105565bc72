"""Reading TensorFlow name-based checkpoints (the tensor_bundle format) without TensorFlow.

A checkpoint is `PREFIX.index`, a LevelDB-style table mapping each variable name to a
`BundleEntryProto` (dtype, shape, shard, offset, size, CRC-32C), and the shards
`PREFIX.data-%05d-of-%05d` holding the raw tensor bytes. The index is read whole when the
reader opens (it is small); tensor bytes are read only on request, by offset, straight into
the array that is returned, and checked against their CRC before anything else sees them.

Decisions:
- bfloat16 comes back as float32. numpy has no bfloat16 and ml_dtypes is not a dependency;
  a bfloat16 is the upper half of a float32, so the widening is exact.
- Big-endian bundles (header endianness BIG) are byte-swapped after the CRC check, which
  TensorFlow computes over the bytes as they lie in the file.
- Partitioned (sliced) variables are listed with their full shape but refused by `read`.
- Variables of other dtypes (string, resource, quantized, ...) are listed with dtype object
  and refused by `read`, so a checkpoint holding one can still be inspected. Strings (the
  object graph of a TensorFlow 2 checkpoint) are read by `read_string` instead.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from danbert_convert._proto import as_bytes, as_int, int64, proto_fields, read_varint
from danbert_convert.errors import InputError
from danbert_convert.readers.base import VariableInfo

with warnings.catch_warnings():
    # Without its C extension google-crc32c warns at import in several lines; we say it in one.
    warnings.simplefilter("ignore", RuntimeWarning)
    import google_crc32c

log = logging.getLogger(__name__)
CRC_IMPLEMENTATION: str = google_crc32c.implementation
""""c" (hardware CRC-32C, several GB/s) or "python" (google-crc32c's fallback, ~1.5 MB/s)."""
_crc_extend = google_crc32c.extend
_warned_slow_crc = False

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles zero-padded to 40 bytes, then the 8-byte magic
TRAILER_SIZE = 5  # compression type byte + masked CRC-32C
NO_COMPRESSION, SNAPPY = 0, 1
HEADER_KEY = b""
_T = TypeVar("_T")
BUNDLE_VERSION = 1  # the format version this reader understands (TensorFlow's kTensorBundleVersion)

# TensorFlow DataType enum -> numpy dtype, for the types stored as plain little arrays.
_NUMPY_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32),
    2: np.dtype(np.float64),
    3: np.dtype(np.int32),
    4: np.dtype(np.uint8),
    5: np.dtype(np.int16),
    6: np.dtype(np.int8),
    8: np.dtype(np.complex64),
    9: np.dtype(np.int64),
    10: np.dtype(np.bool_),
    17: np.dtype(np.uint16),
    18: np.dtype(np.complex128),
    19: np.dtype(np.float16),
    22: np.dtype(np.uint32),
    23: np.dtype(np.uint64),
}
DT_BFLOAT16 = 14
_STRING = 7
# Names of the dtypes we list but cannot read, for error messages.
_OTHER_DTYPE_NAMES = {
    7: "string",
    11: "qint8",
    12: "quint8",
    13: "qint32",
    15: "qint16",
    16: "quint16",
    20: "resource",
    21: "variant",
}


def mask_crc(crc: int) -> int:
    """TensorFlow/LevelDB's CRC mask (a rotation plus a constant), as stored in files."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def crc32c(data: Any, value: int = 0) -> int:
    """CRC-32C (Castagnoli) of any buffer, continuing from `value`, without copying it.

    google-crc32c takes bytes and numpy arrays as they are; other buffers (memoryview, mmap,
    bytearray) are looked at through a numpy array over the same memory.
    """
    if not isinstance(data, (bytes, np.ndarray)):
        data = np.frombuffer(data, dtype=np.uint8)
    return int(_crc_extend(value, data))


def warn_if_slow_crc() -> None:
    """Say once, in one line, when CRCs will be checked by pure Python."""
    global _warned_slow_crc
    if CRC_IMPLEMENTATION != "c" and not _warned_slow_crc:
        _warned_slow_crc = True
        log.warning(
            "google-crc32c has no C extension here: checksums run in pure Python at ~1.5 MB/s "
            "(minutes for a BERT-base checkpoint); install a google-crc32c wheel built for "
            "this platform, or use --reader tensorflow"
        )


@dataclass(frozen=True)
class BundleHeader:
    num_shards: int
    big_endian: bool
    producer: int
    min_consumer: int
    bad_consumers: tuple[int, ...]


def parse_header(buf: bytes) -> BundleHeader:
    """BundleHeaderProto {1: num_shards, 2: endianness, 3: VersionDef}."""
    num_shards, endianness, producer, min_consumer = 0, 0, 0, 0
    bad: list[int] = []
    for field, _, value in proto_fields(buf):
        if field == 1:
            num_shards = int64(as_int(value))
        elif field == 2:
            endianness = as_int(value)
        elif field == 3:
            for f, wire, v in proto_fields(as_bytes(value)):
                if f == 1:
                    producer = int64(as_int(v))
                elif f == 2:
                    min_consumer = int64(as_int(v))
                elif f == 3 and wire == 2:  # packed repeated
                    packed, pos = as_bytes(v), 0
                    while pos < len(packed):
                        x, pos = read_varint(packed, pos)
                        bad.append(int64(x))
                elif f == 3:
                    bad.append(int64(as_int(v)))
    if endianness not in (0, 1):
        raise ValueError(f"unknown endianness {endianness}")
    return BundleHeader(num_shards, endianness == 1, producer, min_consumer, tuple(bad))


@dataclass(frozen=True)
class BundleEntry:
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    num_slices: int


def parse_entry(buf: bytes) -> BundleEntry:
    """BundleEntryProto {1: dtype, 2: TensorShapeProto, 3: shard_id, 4: offset, 5: size,
    6: crc32c (fixed32), 7: repeated TensorSliceProto}."""
    dtype = shard_id = offset = size = crc = slices = 0
    shape: list[int] = []
    for field, _, value in proto_fields(buf):
        if field == 1:
            dtype = as_int(value)
        elif field == 2:
            # TensorShapeProto {2: repeated Dim {1: size, 2: name}, 3: unknown_rank}
            for f, _, dim in proto_fields(as_bytes(value)):
                if f == 2:
                    size_ = 0
                    for g, _, v in proto_fields(as_bytes(dim)):
                        if g == 1:
                            size_ = int64(as_int(v))
                    shape.append(size_)
                elif f == 3 and as_int(dim):
                    raise ValueError("shape of unknown rank")
        elif field == 3:
            shard_id = int64(as_int(value))
        elif field == 4:
            offset = int64(as_int(value))
        elif field == 5:
            size = int64(as_int(value))
        elif field == 6:
            crc = as_int(value)
        elif field == 7:
            slices += 1
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    if offset < 0 or size < 0 or shard_id < 0:
        raise ValueError("negative shard, offset or size")
    return BundleEntry(dtype, tuple(shape), shard_id, offset, size, crc, slices)


# --- the LevelDB-style table ---------------------------------------------------------------


def parse_block(contents: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield the (key, value) entries of one uncompressed block, checking restart points.

    Layout: entries (varint32 shared, varint32 unshared, varint32 value length, key delta,
    value), then uint32 restart offsets, then uint32 restart count. Raises ValueError.
    """
    if len(contents) < 4:
        raise ValueError("block shorter than its restart count")
    (num_restarts,) = struct.unpack_from("<I", contents, len(contents) - 4)
    limit = len(contents) - 4 - 4 * num_restarts
    if num_restarts == 0 or limit < 0:
        raise ValueError(f"bad restart count {num_restarts}")
    restarts = struct.unpack_from(f"<{num_restarts}I", contents, limit)
    fresh: set[int] = set()  # offsets of entries that store their whole key
    pos, key = 0, b""
    while pos < limit:
        start = pos
        shared, pos = read_varint(contents, pos)
        unshared, pos = read_varint(contents, pos)
        value_len, pos = read_varint(contents, pos)
        if shared > len(key) or pos + unshared + value_len > limit:
            raise ValueError(f"bad entry at block offset {start}")
        if shared == 0:
            fresh.add(start)
        key = key[:shared] + contents[pos : pos + unshared]
        pos += unshared
        yield key, contents[pos : pos + value_len]
        pos += value_len
    # A restart point must be an entry that does not lean on its predecessor's key; an empty
    # block has the single restart 0.
    if fresh or restarts != (0,):
        bad = [r for r in restarts if r not in fresh]
        if bad:
            raise ValueError(f"restart point {bad[0]} is not the start of a full-key entry")


def _varint_handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return offset, size, pos


class _Table:
    """An index file held in memory; yields its entries in key order."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path = path
        self.data = data
        if len(data) < FOOTER_SIZE:
            raise InputError(
                f"{path}: truncated index ({len(data)} bytes, shorter than the "
                f"{FOOTER_SIZE}-byte table footer)"
            )
        lo, hi = struct.unpack_from("<II", data, len(data) - 8)
        if (hi << 32) | lo != TABLE_MAGIC:
            raise InputError(
                f"{path}: bad magic number {(hi << 32) | lo:#018x} (expected "
                f"{TABLE_MAGIC:#018x}): not a TensorFlow checkpoint index, or a truncated one"
            )
        footer = data[len(data) - FOOTER_SIZE :]
        try:
            _, _, pos = _varint_handle(footer, 0)  # meta-index: TF writes it empty
            self.index_offset, self.index_size, _ = _varint_handle(footer, pos)
        except ValueError as e:
            raise InputError(f"{path}: corrupt table footer: {e}") from None

    def block(self, offset: int, size: int, what: str) -> bytes:
        """The uncompressed contents of the block at `offset`, its trailer's CRC checked."""
        end = len(self.data) - FOOTER_SIZE
        if offset + size + TRAILER_SIZE > end:
            raise InputError(
                f"{self.path}: truncated index: {what} at offset {offset} ({size} bytes) "
                f"runs past the end of the table ({end} bytes)"
            )
        raw = self.data[offset : offset + size]
        kind = self.data[offset + size]
        (stored,) = struct.unpack_from("<I", self.data, offset + size + 1)
        actual = mask_crc(crc32c(self.data[offset + size : offset + size + 1], crc32c(raw)))
        if stored != actual:
            raise InputError(
                f"{self.path}: CRC-32C mismatch in {what} at offset {offset} (stored "
                f"{stored:#010x}, computed {actual:#010x}): the index file is corrupt"
            )
        if kind == NO_COMPRESSION:
            return raw
        if kind == SNAPPY:
            import cramjam  # only old TF 1.x writers compressed index blocks

            # The block starts with its uncompressed length, which cramjam allocates at once
            # (and aborts the process if it cannot). Snappy's best case is a 3-byte copy of
            # 64 bytes, so no valid block claims more than 64/3 of its own size.
            try:
                claimed, _ = read_varint(raw, 0)
            except ValueError:
                claimed = 0
            if claimed > len(raw) * 64 // 3:
                raise InputError(
                    f"{self.path}: {what} at offset {offset}: bad snappy data: claims "
                    f"{claimed} bytes from {size}"
                )
            try:
                return bytes(cramjam.snappy.decompress_raw(raw))
            except Exception as e:
                raise InputError(
                    f"{self.path}: {what} at offset {offset}: bad snappy data: {e}"
                ) from None
        raise InputError(f"{self.path}: {what} at offset {offset}: unknown compression {kind}")

    def entries(self) -> Iterator[tuple[bytes, bytes]]:
        index = self.block(self.index_offset, self.index_size, "index block")
        last: bytes | None = None
        try:
            for _, handle in parse_block(index):
                offset, size, _ = _varint_handle(handle, 0)
                contents = self.block(offset, size, "data block")
                for key, value in parse_block(contents):
                    if last is not None and key <= last:
                        raise ValueError(f"key {key!r} out of order after {last!r}")
                    last = key
                    yield key, value
        except ValueError as e:
            raise InputError(f"{self.path}: corrupt index table: {e}") from None


# --- the reader ----------------------------------------------------------------------------


def _dtype_name(dtype: int) -> str:
    if dtype in _NUMPY_DTYPES:
        return str(_NUMPY_DTYPES[dtype])
    if dtype == DT_BFLOAT16:
        return "bfloat16"
    return _OTHER_DTYPE_NAMES.get(dtype, f"TensorFlow dtype {dtype}")


def data_filename(prefix: Path, shard: int, num_shards: int) -> Path:
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


class BundleReader:
    """Reads a TensorFlow checkpoint given its prefix; implements `CheckpointReader`.

    Opening reads and checks the whole `.index` file; data shards are opened on first use.
    """

    def __init__(self, prefix: Path) -> None:
        warn_if_slow_crc()
        self.prefix = Path(prefix)
        self.index_path = Path(f"{self.prefix}.index")
        try:
            data = self.index_path.read_bytes()
        except OSError as e:
            raise InputError(f"{self.index_path}: cannot read: {e.strerror or e}") from None
        table = _Table(self.index_path, data)
        self._entries: dict[str, BundleEntry] = {}
        header: BundleHeader | None = None
        for key, value in table.entries():
            if key == HEADER_KEY:
                header = self._parse(parse_header, value, "the header entry")
                continue
            if key.startswith(b"\x00"):
                continue  # one slice of a partitioned variable, stored under an encoded key
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{self.index_path}: variable name {key!r} is not UTF-8") from None
            if header is None:
                raise InputError(f"{self.index_path}: no header entry before {name}")
            self._entries[name] = self._parse(parse_entry, value, f"variable {name}")
        if header is None:
            raise InputError(f"{self.index_path}: no header entry (an empty index table)")
        self.header = header
        if header.min_consumer > BUNDLE_VERSION or BUNDLE_VERSION in header.bad_consumers:
            raise InputError(
                f"{self.index_path}: checkpoint format version {header.producer} needs a newer "
                f"reader (min_consumer {header.min_consumer})"
            )
        if header.num_shards < 1:
            raise InputError(f"{self.index_path}: header says {header.num_shards} data shards")
        for name, ent in self._entries.items():
            if ent.num_slices == 0 and ent.shard_id >= header.num_shards:
                raise InputError(
                    f"{self.index_path}: variable {name} is in shard {ent.shard_id}, but the "
                    f"header says there are {header.num_shards}"
                )
        self._swap = header.big_endian != (sys.byteorder == "big")
        self._vars = {name: self._info(name, self._entries[name]) for name in sorted(self._entries)}
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()

    def _parse(self, parse: Callable[[bytes], _T], value: bytes, what: str) -> _T:
        try:
            return parse(value)
        except ValueError as e:
            raise InputError(f"{self.index_path}: cannot parse {what}: {e}") from None

    @staticmethod
    def _info(name: str, entry: BundleEntry) -> VariableInfo:
        dtype = _NUMPY_DTYPES.get(entry.dtype)
        if dtype is None:
            dtype = np.dtype(np.float32 if entry.dtype == DT_BFLOAT16 else object)
        return VariableInfo(name, entry.shape, dtype, _dtype_name(entry.dtype), entry.size)

    def variables(self) -> dict[str, VariableInfo]:
        return self._vars

    def entry(self, name: str) -> BundleEntry:
        """The raw index entry of `name` (stored dtype, shard, offset, size, CRC)."""
        try:
            return self._entries[name]
        except KeyError:
            raise InputError(f"{self.index_path}: no variable named {name}") from None

    def stored_dtype(self, name: str) -> str:
        """The dtype as stored in the file, spelled as numpy does (or 'bfloat16', 'string')."""
        return _dtype_name(self.entry(name).dtype)

    def data_path(self, shard: int) -> Path:
        return data_filename(self.prefix, shard, self.header.num_shards)

    def data_file(self, name: str) -> Path:
        return self.data_path(self.entry(name).shard_id)

    def _fd(self, shard: int, name: str) -> int:
        fd = self._fds.get(shard)
        if fd is None:
            path = self.data_path(shard)
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except FileNotFoundError:
                raise InputError(
                    f"{path}: missing data shard {shard} of {self.header.num_shards} "
                    f"(needed for variable {name})"
                ) from None
            except OSError as e:
                raise InputError(f"{path}: cannot open: {e.strerror or e}") from None
            self._fds[shard] = fd
        return fd

    def _read_into(self, fd: int, buf: np.ndarray, offset: int, path: Path, name: str) -> None:
        view = buf.data
        done = 0
        while done < len(view):
            try:
                if hasattr(os, "preadv"):
                    n = os.preadv(fd, [view[done:]], offset + done)
                else:  # Windows: no positional reads, so seek and read under a lock
                    with self._lock:
                        os.lseek(fd, offset + done, os.SEEK_SET)
                        with open(fd, "rb", buffering=0, closefd=False) as f:
                            n = f.readinto(view[done:]) or 0
            except OSError as e:  # EIO and the like: the fd's error names no file
                raise InputError(f"{path}: reading variable {name}: {e.strerror or e}") from e
            if n == 0:
                raise InputError(
                    f"{path}: truncated data shard: variable {name} needs bytes "
                    f"{offset}..{offset + len(view)}, the file ends at {offset + done}"
                )
            done += n

    def read(self, name: str) -> np.ndarray:
        entry = self.entry(name)
        if entry.num_slices:
            raise InputError(
                f"{self.index_path}: variable {name} is partitioned into {entry.num_slices} "
                "slices; partitioned variables are not supported"
            )
        stored: np.dtype | None = _NUMPY_DTYPES.get(entry.dtype)
        if entry.dtype == DT_BFLOAT16:
            stored = np.dtype(np.uint16)
        if stored is None:
            raise InputError(
                f"{self.index_path}: variable {name} has dtype {_dtype_name(entry.dtype)}, "
                "which this reader does not support"
            )
        count = math.prod(entry.shape)  # Python ints: no int64 overflow
        path = self.data_path(entry.shard_id)
        if entry.size != count * stored.itemsize:
            raise InputError(
                f"{self.index_path}: variable {name}: index says {entry.size} bytes, but shape "
                f"{list(entry.shape)} of {_dtype_name(entry.dtype)} takes {count * stored.itemsize}"
            )
        buf = self._read_entry(entry, path, name)
        actual = mask_crc(crc32c(buf))
        if actual != entry.crc32c:
            raise InputError(
                f"{path}: CRC-32C mismatch in variable {name} ({entry.size} bytes at offset "
                f"{entry.offset}; stored {entry.crc32c:#010x}, computed {actual:#010x}): "
                "the data file is corrupt"
            )
        array = buf.view(stored).reshape(entry.shape)
        if self._swap:
            array.byteswap(inplace=True)
        if entry.dtype == DT_BFLOAT16:
            array = _bfloat16_to_float32(array)
        return array

    def read_string(self, name: str) -> list[bytes]:
        """The elements of a string variable (a scalar or 1-D), checked against both CRCs.

        Layout (TensorFlow's tensor_bundle.cc, WriteStringTensor): a varint64 length per
        element, the masked CRC-32C of those lengths (each as a little-endian uint32, or uint64
        when it does not fit), then the bytes. The entry's CRC continues the lengths' CRC over
        the 4 checksum bytes and then the bytes, so it is not the CRC of the stored bytes.
        """
        entry = self.entry(name)
        if entry.dtype != _STRING:
            raise InputError(
                f"{self.index_path}: variable {name} has dtype {_dtype_name(entry.dtype)}, "
                "not string"
            )
        if entry.num_slices or len(entry.shape) > 1:
            raise InputError(
                f"{self.index_path}: string variable {name} has shape {list(entry.shape)} in "
                f"{entry.num_slices} slices; only whole scalars and vectors are read"
            )
        count = math.prod(entry.shape)
        path = self.data_path(entry.shard_id)
        # Each element takes at least its one-byte length, and the checksum 4 bytes: a count
        # the entry cannot hold is refused before anything is read for it.
        if entry.size < count + 4:
            raise InputError(
                f"{path}: string variable {name}: index says {entry.size} bytes, too few for "
                f"{count} elements"
            )
        raw = self._read_entry(entry, path, name).tobytes()

        def bad(why: str) -> InputError:
            return InputError(f"{path}: string variable {name} ({entry.size} bytes at offset "
                              f"{entry.offset}): {why}: the data file is corrupt")  # fmt: skip

        lengths: list[int] = []
        crc, pos = 0, 0
        try:
            for _ in range(count):
                n, pos = read_varint(raw, pos)
                lengths.append(n)
                crc = crc32c(struct.pack("<I" if n <= 0xFFFFFFFF else "<Q", n), crc)
        except ValueError as e:
            raise bad(f"bad element length ({e})") from None
        if pos + 4 > len(raw):
            raise bad("lengths run into the end of the entry")
        (stored,) = struct.unpack_from("<I", raw, pos)
        if stored != mask_crc(crc):
            raise bad(f"CRC-32C mismatch in the lengths (stored {stored:#010x}, computed "
                      f"{mask_crc(crc):#010x})")  # fmt: skip
        crc = crc32c(raw[pos : pos + 4], crc)
        pos += 4
        if pos + sum(lengths) != len(raw):
            raise bad(f"element lengths add up to {pos + sum(lengths)} bytes with their header")
        crc = crc32c(raw[pos:], crc)
        if mask_crc(crc) != entry.crc32c:
            raise bad(f"CRC-32C mismatch (stored {entry.crc32c:#010x}, computed "
                      f"{mask_crc(crc):#010x})")  # fmt: skip
        out = []
        for n in lengths:
            out.append(raw[pos : pos + n])
            pos += n
        return out

    def _read_entry(self, entry: BundleEntry, path: Path, name: str) -> np.ndarray:
        """The entry's bytes (CRC not checked yet), in a new buffer."""
        fd = self._fd(entry.shard_id, name)
        # The index's numbers are untrusted: nothing is allocated for bytes the shard lacks.
        try:
            end = os.fstat(fd).st_size
        except OSError as e:
            raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
        if entry.offset + entry.size > end:
            raise InputError(
                f"{path}: truncated data shard: variable {name} needs bytes {entry.offset}.."
                f"{entry.offset + entry.size}, the file ends at {end}"
            )
        buf = np.empty(entry.size, dtype=np.uint8)
        self._read_into(fd, buf, entry.offset, path, name)
        return buf

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 exactly: they are its upper 16 bits."""
    out = np.zeros(bits.shape, dtype=np.uint32)
    halves = out.reshape(-1).view(np.uint16)
    halves[1 if sys.byteorder == "little" else 0 :: 2] = bits.reshape(-1)
    return out.view(np.float32)

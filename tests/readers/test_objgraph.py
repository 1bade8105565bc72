"""TensorFlow 2 object-based checkpoints: the object graph read natively, variables named by
canonical object path, checked against TensorFlow's own reader and protobuf parser and against
the objects the checkpoint was saved from (tests/tfckpt_tf2obj.py)."""

from __future__ import annotations

import shutil
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_bundle import _rebuild_index, entry_proto, flip_byte, varint
from tfckpt_tf2obj import Written, save_keras3_checkpoint, save_module_checkpoint

from danbert_convert.errors import InputError
from danbert_convert.families.table import skip_reason
from danbert_convert.readers.base import open_checkpoint
from danbert_convert.readers.bundle import BundleReader, crc32c, mask_crc
from danbert_convert.readers.objgraph import (
    MAX_NAME_CHARS,
    MAX_PATHS,
    OBJECT_GRAPH_KEY,
    ObjectGraphReader,
    parse_object_graph,
)
from danbert_convert.readers.tensorflow import TensorFlowReader


@pytest.fixture(scope="module")
def module_ckpt(tmp_path_factory) -> Written:
    return save_module_checkpoint(tmp_path_factory.mktemp("tf2") / "ckpt")


@pytest.fixture(scope="module")
def keras3_ckpt(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    return save_keras3_checkpoint(tmp_path_factory.mktemp("keras3") / "ckpt")


def copy_ckpt(prefix: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in prefix.parent.glob(f"{prefix.name}.*"):
        shutil.copy(f, dst / f.name)
    return dst / prefix.name


def tf_values(prefix: Path) -> dict[str, object]:
    import tensorflow as tf

    r = tf.train.load_checkpoint(str(prefix))
    return {k: r.get_tensor(k) for k in r.get_variable_to_shape_map()}


def tf_graph(prefix: Path):  # noqa: ANN201 - a TrackableObjectGraph message
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    raw = tf_values(prefix)[OBJECT_GRAPH_KEY]
    return trackable_object_graph_pb2.TrackableObjectGraph.FromString(raw)


MODEL_WEIGHTS = ("model/encoder/", "model/head/")


def test_names_follow_the_model_not_the_saver(module_ckpt: Written) -> None:
    w = module_ckpt
    theirs = tf_values(w.prefix)
    reader = open_checkpoint(w.prefix)
    try:
        assert isinstance(reader, ObjectGraphReader) and isinstance(reader.inner, BundleReader)
        names = reader.variables()
        assert set(names) == set(w.values) | {OBJECT_GRAPH_KEY}
        assert list(names) == sorted(names)
        # Every bundle key once, each under one name.
        assert sorted(reader.key(n) for n in names) == sorted(theirs)
        for name, info in names.items():
            key = reader.key(name)
            assert info.name == name
            assert info == replace(reader.inner.variables()[key], name=name)
            if name == OBJECT_GRAPH_KEY:
                continue
            expected = w.values[name]
            if isinstance(expected, list):  # strings
                assert reader.read_string(name) == expected, name
                assert [bytes(x) for x in np.asarray(theirs[key]).reshape(-1)] == expected
            else:
                ours = reader.read(name)
                assert ours.tobytes() == np.asarray(expected).tobytes(), name
                assert ours.tobytes() == np.asarray(theirs[key]).tobytes(), name
        # The saver keyed weights by the shortest alias, the list of variables...
        kernel = "model/encoder/blocks/1/dense/kernel"
        assert reader.key(kernel).startswith("variables/")
        # ...and the reader knows every path to them, its chosen one first.
        for name, paths in w.aliases.items():
            assert reader.paths(name)[0] == name
            assert set(reader.paths(name)) == paths, name
        assert reader.data_file(kernel) == Path(f"{w.prefix}.data-00000-of-00001")
    finally:
        reader.close()


def test_skip_reasons_of_object_paths(module_ckpt: Written) -> None:
    with open_checkpoint(module_ckpt.prefix) as reader:
        listing = reader.variables()
        reasons = {n: skip_reason(n, listing) for n in listing}
    for name, reason in reasons.items():
        if ".OPTIMIZER_SLOT/" in name:
            assert reason == "optimizer slot", name
        elif name.startswith("model/"):
            assert reason is None, name
    assert reasons["optimizer/beta1_power"] == "optimizer state"
    assert reasons["save_counter"] == "checkpoint save counter"
    assert reasons[OBJECT_GRAPH_KEY] == "object graph (read for the variable names)"
    assert reasons["state/.ATTRIBUTES/py_state"] == "object metadata, not a weight"
    # TF1 names are untouched by the TF2 rules.
    assert skip_reason("bert/encoder/layer_0/output/dense/kernel") is None
    assert skip_reason("bert/encoder/layer_0/output/dense/kernel/adam_m") == "Adam optimizer slot"
    assert skip_reason("global_step") == "training step counter"


def test_parse_matches_tensorflows_protobuf(module_ckpt: Written, keras3_ckpt) -> None:
    for prefix in (module_ckpt.prefix, keras3_ckpt[0]):
        theirs = tf_graph(prefix)
        with BundleReader(prefix) as reader:
            ours = parse_object_graph(reader.read_string(OBJECT_GRAPH_KEY)[0])
        assert len(ours) == len(theirs.nodes) > 10
        slots = 0
        for node, pb in zip(ours, theirs.nodes, strict=True):
            assert node.children == [(c.node_id, c.local_name) for c in pb.children]
            assert [(a.name, a.full_name, a.checkpoint_key) for a in node.attributes] == [
                (a.name, a.full_name, a.checkpoint_key) for a in pb.attributes
            ]
            assert [(s.original, s.slot_name, s.slot) for s in node.slot_variables] == [
                (s.original_variable_node_id, s.slot_name, s.slot_variable_node_id)
                for s in pb.slot_variables
            ]
            slots += len(node.slot_variables)
        # compat.v1 Adam: SlotVariableReferences; Keras 3's Adam: none (slots are children).
        legacy = sum(".OPTIMIZER_SLOT/" in n for n in module_ckpt.values)
        assert slots == (legacy if prefix == module_ckpt.prefix else 0) and legacy == 20


def test_tensorflow_reader_gives_the_same_names(module_ckpt: Written) -> None:
    with (
        open_checkpoint(module_ckpt.prefix, "tensorflow") as tf_reader,
        open_checkpoint(module_ckpt.prefix, "native") as native,
    ):
        assert isinstance(tf_reader, ObjectGraphReader)
        assert isinstance(tf_reader.inner, TensorFlowReader)
        assert list(tf_reader.variables()) == list(native.variables())
        for name, info in native.variables().items():
            theirs = tf_reader.variables()[name]
            assert (theirs.shape, theirs.dtype, theirs.stored_dtype) == (
                info.shape, info.dtype, info.stored_dtype)  # fmt: skip
            assert tf_reader.key(name) == native.key(name)
            if info.stored_dtype == "string":
                assert tf_reader.read_string(name) == native.read_string(name), name
            else:
                assert tf_reader.read(name).tobytes() == native.read(name).tobytes(), name


def test_keras3_weights_are_named_by_model_paths(keras3_ckpt) -> None:
    """Keras 3's saver keys the model's weights under `optimizer/_trainable_variables/N`; the
    reader names them by their paths under `model/`, and everything else is skippable."""
    prefix, weights = keras3_ckpt
    with open_checkpoint(prefix) as reader:
        listing = reader.variables()
        values = {n: reader.read(n) for n in listing if n != OBJECT_GRAPH_KEY}
        found = set()
        for w in weights:
            same = [n for n, v in values.items() if v.shape == w.shape and np.array_equal(v, w)]
            name = next(n for n in same if not n.startswith("optimizer/"))
            assert name.startswith("model/") and skip_reason(name, listing) is None, name
            assert reader.key(name).startswith("optimizer/_trainable_variables/"), name
            assert any(p.startswith("optimizer/_trainable_variables/") for p in reader.paths(name))
            found.add(name)
        rest = set(reader.variables()) - found
        assert len(found) == len(weights) == 4
        assert any(n.startswith("optimizer/_momentums/") for n in rest)
        assert all(skip_reason(n, listing) for n in rest), {
            n for n in rest if not skip_reason(n, listing)
        }


def test_tf1_checkpoints_are_not_wrapped(full_release: Path) -> None:
    for reader, cls in (("auto", BundleReader), ("tensorflow", TensorFlowReader)):
        r = open_checkpoint(full_release / "bert_model.ckpt", reader)
        assert type(r) is cls
        r.close()


# --- corruption ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "why"),
    [
        ("lengths", "CRC-32C mismatch in the lengths"),
        ("checksum", "CRC-32C mismatch in the lengths"),
        ("bytes", "CRC-32C mismatch (stored"),
    ],
)
def test_corrupt_object_graph_entry(module_ckpt: Written, tmp_path: Path, part, why) -> None:
    prefix = copy_ckpt(module_ckpt.prefix, tmp_path / "c")
    with BundleReader(prefix) as reader:
        e = reader.entry(OBJECT_GRAPH_KEY)
        data = reader.data_path(0)
    header = len(varint(e.size - 4 - 2)) + 4  # one length, then the checksum
    at = {"lengths": 0, "checksum": header - 2, "bytes": header + (e.size - header) // 2}[part]
    flip_byte(data, e.offset + at)
    with pytest.raises(InputError) as err:
        open_checkpoint(prefix)
    msg = str(err.value)
    assert msg.startswith(f"{data}: string variable {OBJECT_GRAPH_KEY} ({e.size} bytes"), msg
    assert why in msg and "\n" not in msg


def test_truncated_data_file_names_the_object_graph(module_ckpt: Written, tmp_path: Path) -> None:
    prefix = copy_ckpt(module_ckpt.prefix, tmp_path / "c")
    with BundleReader(prefix) as reader:
        e = reader.entry(OBJECT_GRAPH_KEY)
        data = reader.data_path(0)
    data.write_bytes(data.read_bytes()[: e.offset + e.size // 2])
    with pytest.raises(InputError) as err:
        open_checkpoint(prefix)
    assert str(err.value) == (
        f"{data}: truncated data shard: variable {OBJECT_GRAPH_KEY} needs bytes "
        f"{e.offset}..{e.offset + e.size}, the file ends at {e.offset + e.size // 2}"
    )


def string_entry(value: bytes) -> tuple[bytes, int]:
    """One string as a bundle stores it, and its entry's masked CRC."""
    crc = crc32c(struct.pack("<I", len(value)))
    checksum = struct.pack("<I", mask_crc(crc))
    return varint(len(value)) + checksum + value, mask_crc(crc32c(value, crc32c(checksum, crc)))


def replace_graph(prefix: Path, change) -> None:
    """Rewrite the checkpoint's object graph: `change(graph)` edits TensorFlow's parsed message
    in place, or returns bytes to store instead. The new entry is appended to the data file
    with valid CRCs, which TensorFlow's own reader is made to confirm."""
    graph = tf_graph(prefix)
    raw = change(graph)
    raw = raw if isinstance(raw, bytes) else graph.SerializeToString()
    stored, crc = string_entry(raw)
    data = Path(f"{prefix}.data-00000-of-00001")
    offset = data.stat().st_size
    with data.open("ab") as f:
        f.write(stored)
    entry = entry_proto(7, (), 0, offset, len(stored), crc)
    _rebuild_index(prefix, lambda k, v: entry if k == OBJECT_GRAPH_KEY.encode() else v)
    assert tf_values(prefix)[OBJECT_GRAPH_KEY] == raw


def node_of(graph, key: str) -> int:
    return next(
        i for i, n in enumerate(graph.nodes) for a in n.attributes if a.checkpoint_key == key
    )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda g: g.nodes[3].children.add(node_id=10_000, local_name="x"), "node 3 refers to "
         "node 10000, of"),
        (lambda g: g.nodes[0].children.add(node_id=-1, local_name="x"), "node 0 refers to node -1"),
        (lambda g: g.nodes[-1].slot_variables.add(original_variable_node_id=1,
                                                  slot_variable_node_id=999), "refers to node 999"),
        (lambda g: g.SerializeToString()[:-3], "truncated"),
        (lambda g: b"", "no nodes"),
        # node { children { local_name: b"\xff" } }
        (lambda g: b"\x0a\x05\x0a\x03\x12\x01\xff", "a local name is not UTF-8"),
    ],
)  # fmt: skip
def test_malformed_graph_is_one_line(module_ckpt: Written, tmp_path: Path, change, why) -> None:
    prefix = copy_ckpt(module_ckpt.prefix, tmp_path / "c")
    replace_graph(prefix, change)
    with pytest.raises(InputError) as err:
        open_checkpoint(prefix)
    msg = str(err.value)
    assert msg.startswith(f"{prefix}.index: {OBJECT_GRAPH_KEY}: bad object graph: "), msg
    assert why in msg and "\n" not in msg, msg


def test_cycles_are_fine(module_ckpt: Written, tmp_path: Path) -> None:
    """A child pointing back at the root and at its own parent: names do not change."""
    prefix = copy_ckpt(module_ckpt.prefix, tmp_path / "c")

    def change(g) -> None:
        for node in g.nodes[1:]:
            node.children.add(node_id=0, local_name="root")
        g.nodes[0].children.add(node_id=0, local_name="self")

    replace_graph(prefix, change)
    with open_checkpoint(prefix) as reader:
        assert set(reader.variables()) == set(module_ckpt.values) | {OBJECT_GRAPH_KEY}


def test_two_keys_one_name_is_refused(module_ckpt: Written, tmp_path: Path) -> None:
    prefix = copy_ckpt(module_ckpt.prefix, tmp_path / "c")

    def change(g) -> None:
        # A root child whose local name spells another variable's path.
        counter = node_of(g, "save_counter/.ATTRIBUTES/VARIABLE_VALUE")
        g.nodes[0].children.add(node_id=counter, local_name="model/head/bias")

    replace_graph(prefix, change)
    with pytest.raises(InputError) as err:
        open_checkpoint(prefix)
    assert str(err.value).startswith(f"{prefix}.index: {OBJECT_GRAPH_KEY}: keys ")
    assert str(err.value).endswith(" both have the object path model/head/bias")


def test_one_key_named_twice_is_refused(module_ckpt: Written, tmp_path: Path) -> None:
    prefix = copy_ckpt(module_ckpt.prefix, tmp_path / "c")
    key = "save_counter/.ATTRIBUTES/VARIABLE_VALUE"
    replace_graph(prefix, lambda g: g.nodes[1].attributes.add(name="X", checkpoint_key=key))
    with pytest.raises(InputError, match=rf"bad object graph: key {key} is named by nodes 1 and"):
        open_checkpoint(prefix)


def test_unnamed_and_unreachable_keys_keep_their_keys(module_ckpt: Written, tmp_path) -> None:
    """A key no attribute names, and a variable no path reaches (here: deeper than the walk
    goes), are listed under their keys, which no skip rule covers."""
    prefix = copy_ckpt(module_ckpt.prefix, tmp_path / "c")
    counter_key = "save_counter/.ATTRIBUTES/VARIABLE_VALUE"
    kernel = "model/head/dense/kernel"
    with open_checkpoint(prefix) as reader:
        kernel_key = reader.key(kernel)
        slot_key = reader.key(f"{kernel}/.OPTIMIZER_SLOT/optimizer/m")

    def change(g) -> None:
        counter = g.nodes[node_of(g, counter_key)]
        del counter.attributes[:]
        # Cut the kernel off from the root, and hang it at the end of a chain of 70 nodes.
        target = node_of(g, kernel_key)
        for node in g.nodes:
            kept = [c for c in node.children if c.node_id != target]
            del node.children[:]
            node.children.extend(kept)
        first = len(g.nodes)
        for i in range(70):
            g.nodes.add().children.add(node_id=first + i + 1, local_name="c")
        g.nodes[-1].children[0].node_id = target
        g.nodes[0].children.add(node_id=first, local_name="chain")

    replace_graph(prefix, change)
    with open_checkpoint(prefix) as reader:
        listing = reader.variables()
        names = set(listing)
        assert counter_key in names and "save_counter" not in names
        assert skip_reason(counter_key, listing) is None
        assert kernel not in names and kernel_key in names
        assert reader.key(kernel_key) == kernel_key
        assert reader.paths(kernel_key) == (kernel_key,)
        assert skip_reason(kernel_key, listing) is None
        assert reader.read(kernel_key).tobytes() == module_ckpt.values[kernel].tobytes()
        # Its slots, named through it, fall back to their keys too: still skippable.
        assert slot_key in names and skip_reason(slot_key, listing) == "optimizer slot"


def test_paths_are_capped_and_the_walk_is_bounded(module_ckpt: Written, tmp_path: Path) -> None:
    """30 diamonds in a row make 2**30 paths to the variable below them: 64 are kept (the
    canonical one still the short one), and the walk stays small."""
    prefix = copy_ckpt(module_ckpt.prefix, tmp_path / "c")
    key = "save_counter/.ATTRIBUTES/VARIABLE_VALUE"

    def change(g) -> None:
        counter = node_of(g, key)
        first = len(g.nodes)
        for i in range(30):
            node = g.nodes.add()
            nxt = first + i + 1 if i < 29 else counter
            node.children.add(node_id=nxt, local_name="a")
            node.children.add(node_id=nxt, local_name="b")
        g.nodes[0].children.add(node_id=first, local_name="diamonds")

    replace_graph(prefix, change)
    with open_checkpoint(prefix) as reader:
        paths = reader.paths("save_counter")
    assert len(paths) == MAX_PATHS and paths[0] == "save_counter"
    assert all(p.startswith("diamonds/") and p.count("/") == 30 for p in paths[1:])


def test_optimizer_aliases_do_not_name_weights(module_ckpt: Written, tmp_path: Path) -> None:
    """Without the root's `model`, the embedding's shortest unpositional path would be an alias
    under the optimizer (as Keras 3's `_trainable_variables`, minus the list): not chosen."""
    prefix = copy_ckpt(module_ckpt.prefix, tmp_path / "c")
    with open_checkpoint(prefix) as reader:
        key = reader.key("model/encoder/embedding/embeddings")

    def change(g) -> None:
        kept = [c for c in g.nodes[0].children if c.local_name != "model"]
        del g.nodes[0].children[:]
        g.nodes[0].children.extend(kept)
        opt = next(c.node_id for c in kept if c.local_name == "optimizer")
        g.nodes[opt].children.add(node_id=node_of(g, key), local_name="e")

    replace_graph(prefix, change)
    with open_checkpoint(prefix) as reader:
        name = "encoder/embedding/embeddings"
        assert reader.key(name) == key
        assert reader.paths(name) == (
            name,
            "variables/6",
            "encoder/layer_with_weights-0/embeddings",
            "optimizer/e",
        )


def test_slot_of_a_slot_is_named_through_it(module_ckpt: Written, tmp_path: Path) -> None:
    prefix = copy_ckpt(module_ckpt.prefix, tmp_path / "c")
    slot = "model/head/bias/.OPTIMIZER_SLOT/optimizer/m"
    with open_checkpoint(prefix) as reader:
        slot_key = reader.key(slot)

    def change(g) -> None:
        opt = next(c.node_id for c in g.nodes[0].children if c.local_name == "optimizer")
        counter = node_of(g, "save_counter/.ATTRIBUTES/VARIABLE_VALUE")
        ref = g.nodes[opt].slot_variables.add(slot_name="mm", slot_variable_node_id=counter)
        ref.original_variable_node_id = node_of(g, slot_key)

    replace_graph(prefix, change)
    with open_checkpoint(prefix) as reader:
        name = f"{slot}/.OPTIMIZER_SLOT/optimizer/mm"
        assert reader.paths(name) == (name, "save_counter")
        assert reader.read(name) == module_ckpt.values["save_counter"]


def test_slot_cycle_is_refused(module_ckpt: Written, tmp_path: Path) -> None:
    prefix = copy_ckpt(module_ckpt.prefix, tmp_path / "c")

    def change(g) -> None:
        counter = node_of(g, "save_counter/.ATTRIBUTES/VARIABLE_VALUE")
        g.nodes[0].slot_variables.add(original_variable_node_id=counter, slot_name="s",
                                      slot_variable_node_id=counter)  # fmt: skip

    replace_graph(prefix, change)
    with pytest.raises(InputError, match=r"bad object graph: slot variables nested over 8 deep"):
        open_checkpoint(prefix)


def test_long_names_are_refused_within_a_budget(module_ckpt: Written, tmp_path: Path) -> None:
    """A ladder 64 deep and 2 wide with 10 kB local names and a value on every rung: 64 paths
    of up to 640 kB name each rung, ~2.5 GB in all. Refused in one line once the names built
    pass MAX_NAME_CHARS, rather than built."""
    prefix = copy_ckpt(module_ckpt.prefix, tmp_path / "c")

    def change(g) -> None:
        first, depth, fan = len(g.nodes), 64, 2
        for level in range(depth):
            for k in range(fan):
                node = g.nodes.add()
                node.attributes.add(name="VARIABLE_VALUE", checkpoint_key=f"rung{level}_{k}")
                if level < depth - 1:
                    for j in range(fan):
                        node.children.add(node_id=first + (level + 1) * fan + j,
                                          local_name=f"c{j}" + "x" * 10_000)  # fmt: skip
        for j in range(fan):
            g.nodes[0].children.add(node_id=first + j, local_name=f"r{j}")

    replace_graph(prefix, change)
    with pytest.raises(InputError) as err:
        open_checkpoint(prefix)
    assert str(err.value) == (
        f"{prefix}.index: {OBJECT_GRAPH_KEY}: bad object graph: object paths of more than "
        f"{MAX_NAME_CHARS} characters in all"
    )


def test_long_names_within_the_budget_name_as_short_ones(module_ckpt: Written, tmp_path) -> None:
    """Local names are not capped: a ladder as deep as the walk goes, with 1 kB names and one
    value at its foot, names it by its best path, built from the local names as they are."""
    prefix = copy_ckpt(module_ckpt.prefix, tmp_path / "c")
    key = "save_counter/.ATTRIBUTES/VARIABLE_VALUE"
    long = ["c0" + "x" * 1000, "c1" + "x" * 1000]

    def change(g) -> None:
        counter = node_of(g, key)
        kept = [c for c in g.nodes[0].children if c.node_id != counter]
        del g.nodes[0].children[:]
        g.nodes[0].children.extend(kept)
        first, depth, fan = len(g.nodes), 63, 2
        for level in range(depth):
            for _ in range(fan):
                node = g.nodes.add()
                for j in range(fan):
                    nxt = first + (level + 1) * fan + j if level < depth - 1 else counter
                    node.children.add(node_id=nxt, local_name=long[j])
        g.nodes[0].children.add(node_id=first + 1, local_name="ladder")

    replace_graph(prefix, change)
    with open_checkpoint(prefix) as reader:
        name = "/".join(["ladder", *[long[0]] * 63])  # MAX_DEPTH components
        assert reader.key(name) == key
        assert len(reader.paths(name)) == MAX_PATHS
        assert reader.paths(name)[1] == "/".join(["ladder", *[long[0]] * 62, long[1]])


def test_paths_of_one_length_sort_by_their_joined_names(module_ckpt: Written, tmp_path) -> None:
    """ "save-counter/x" sorts before "save/counter" ("-" < "/"), though "save" is a prefix of
    "save-counter": the walk orders by name without joining names, as if it had."""
    prefix = copy_ckpt(module_ckpt.prefix, tmp_path / "c")

    def change(g) -> None:
        counter = node_of(g, "save_counter/.ATTRIBUTES/VARIABLE_VALUE")
        for parent, child in (("save", "counter"), ("save-counter", "x")):
            g.nodes.add().children.add(node_id=counter, local_name=child)
            g.nodes[0].children.add(node_id=len(g.nodes) - 1, local_name=parent)

    replace_graph(prefix, change)
    with open_checkpoint(prefix) as reader:
        assert reader.paths("save_counter") == ("save_counter", "save-counter/x", "save/counter")

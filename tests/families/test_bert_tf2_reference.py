"""families/bert_tf2_reference.py, the numpy forward of Model Garden's BERT that verify trusts for
TF2 checkpoints, against Model Garden's own outputs on the same inputs.

The checkpoints and outputs are Model Garden's, written in the test run by the
modelgarden_release fixture (tests/tfckpt_tf2.py: a tiny BertEncoder or BertEncoderV2 under
BertPretrainerV2, one AdamW step, saved in each of Model Garden's layouts).

Variables are read with TensorFlow and named by object path from the checkpoint's object graph,
parsed by TensorFlow's own protocol buffer class: nothing here shares the converter's reader
(one test checks that both name the variables alike).
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from tfckpt_tf2 import TINY_DIMS

from danbert_convert.errors import InputError
from danbert_convert.families.bert_tf2_reference import Paths, forward, variable_shapes

KINDS = ["bert", "bert_v2"]  # Model Garden's functional BertEncoder, layer-based BertEncoderV2
# Checkpoint(encoder=).save, the same .write as published encoders are, the trainer's,
# Checkpoint(model=).save ("trainer_params" is the trainer's checkpoint with a params.yaml).
LAYOUTS = ["encoder", "encoder_release", "trainer", "model"]
ENCODERS = ("encoder", "encoder_release")
# The fixture's sizes with transformers' keys, as forward() takes them.
CONFIG = {("num_hidden_layers" if k == "num_layers" else k): v for k, v in TINY_DIMS.items()}
# float64 reference against Model Garden's float32: ~3e-7 relative is float32 rounding; 1e-5
# leaves room for that and, at the fixture's initializer_range, none for exact gelu (see the end).
RTOL = 1e-5
ORDINAL = re.compile(r"layer(_with_weights)?-\d+")


# --- reading a Model Garden checkpoint by object path -------------------------------------------


def object_paths(graph, limit: int = 64) -> dict[int, list[tuple[str, ...]]]:
    """node id -> the simple paths from the root (tuples of local names), shortest first."""
    paths: dict[int, list[tuple[str, ...]]] = {}
    queue = deque([(0, (), frozenset([0]))])
    while queue:
        node, path, seen = queue.popleft()
        found = paths.setdefault(node, [])
        if len(found) >= limit:
            continue
        found.append(path)
        for child in graph.nodes[node].children:
            if child.node_id not in seen:
                queue.append((child.node_id, (*path, child.local_name), seen | {child.node_id}))
    return paths


def canonical(paths: list[tuple[str, ...]]) -> str | None:
    """One object path of a variable, as the converter's reader is to present it: a named path
    (no layer-N / layer_with_weights-N ordinal), under `model/` where there is one, shortest
    first; None for the optimizer's own variables."""
    named = [p for p in paths if p[0] != "optimizer" and not any(ORDINAL.fullmatch(c) for c in p)]
    if not named:
        return None
    return "/".join(min(named, key=lambda p: (p[0] != "model", len(p), p)))


def model_keys(reader) -> dict[str, str]:
    """checkpoint key -> canonical object path of every model variable of a TF2 checkpoint
    (TensorFlow's reader); slots and the optimizer's own variables left out."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    slots = {s.slot_variable_node_id for n in graph.nodes for s in n.slot_variables}
    paths = object_paths(graph)
    out = {}
    for i, node in enumerate(graph.nodes):
        if i in slots:  # legacy optimizer slots: no child path leads to them
            continue
        for attr in node.attributes:
            name = canonical(paths[i])
            if attr.name == "VARIABLE_VALUE" and name is not None:
                out[attr.checkpoint_key] = name
    return out


def read_checkpoint(prefix: Path) -> dict[str, np.ndarray]:
    """Every model variable of a TF2 checkpoint by canonical object path (slots left out)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(key) for key, name in model_keys(reader).items()}


def checkpoint_prefix(folder: Path) -> Path:
    """ckpt-1 as Checkpoint.save and CheckpointManager name it, or a release's bert_model.ckpt."""
    release = folder / "bert_model.ckpt"
    return release if release.with_suffix(".ckpt.index").is_file() else folder / "ckpt-1"


@pytest.fixture
def release(modelgarden_release):
    """release(kind, layout) -> (variables by object path, Model Garden's inputs and outputs).

    outputs.npz: input_word_ids, input_mask, input_type_ids; sequence_output, pooled_output
    (the encoder's _pooler_layer), mlm_logits [batch, seq, vocab] (every position),
    next_sentence (the next-sentence head's logits).
    """

    def load(kind: str, layout: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        folder = modelgarden_release(kind, layout)
        with np.load(folder / "outputs.npz") as npz:
            io = {k: npz[k] for k in npz.files}
        return read_checkpoint(checkpoint_prefix(folder)), io

    return load


def run(variables: dict, config: dict, io: dict, get=None, **kwargs):
    kwargs = {"names": variables.keys(), "hidden_act": "gelu_new", **kwargs}
    return forward(get or variables.__getitem__, config, io["input_word_ids"],
                   io["input_type_ids"], io["input_mask"], **kwargs)  # fmt: skip


def assert_close(got: np.ndarray, want: np.ndarray, what: str, rtol: float = RTOL) -> None:
    assert got.shape == want.shape, (what, got.shape, want.shape)
    diff, scale = np.max(np.abs(got - want)), np.max(np.abs(want))
    assert diff <= rtol * scale, f"{what}: max |diff| {diff:.3g}, scale {scale:.3g}"


# --- against Model Garden ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_model_garden(release, kind, layout):
    variables, io = release(kind, layout)
    out = run(variables, CONFIG, io)
    assert_close(out.sequence, io["sequence_output"], "sequence_output")
    assert len(out.hidden_states) == 1 + CONFIG["num_hidden_layers"]
    assert out.hidden_states[-1] is out.sequence
    if layout in ENCODERS:
        # No pre-training heads: the encoder's own pooler.
        assert_close(out.pooled, io["pooled_output"], "pooled_output")
        assert out.mlm_logits is None and out.nsp_logits is None
        return
    assert_close(out.mlm_logits, io["mlm_logits"], "mlm_logits")
    assert_close(out.nsp_logits, io["next_sentence"], "next-sentence logits")
    # The pooled output is the next-sentence head's dense, not the untrained _pooler_layer
    # (whose output Model Garden reports as pooled_output).
    assert np.max(np.abs(out.pooled - io["pooled_output"])) > 100 * RTOL


@pytest.mark.parametrize("kind", KINDS)
def test_the_encoders_pooler_where_the_head_has_none(release, kind):
    variables, io = release(kind, "trainer")
    names = [n for n in variables if "/classification_heads/" not in n]
    out = run(variables, CONFIG, io, names=names)
    assert_close(out.pooled, io["pooled_output"], "pooled_output")
    assert out.nsp_logits is None
    assert out.mlm_logits is not None


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_outputs_under_any_root_and_either_alias(release, kind):
    """A SavedModel's variables/ has no root prefix; the position table has two local names;
    an older MaskedLM's bias is `masked_lm/bias`."""
    variables, io = release(kind, "model")
    want = run(variables, CONFIG, io)
    renamed = {}
    for name, value in variables.items():
        name = name.removeprefix("model/")
        name = name.replace("/_position_embeddings", "/embeddings")
        name = name.replace("masked_lm/output_bias/bias", "masked_lm/bias")
        renamed[name] = value
    assert len(renamed) == len(variables)
    got = run(renamed, CONFIG, io)
    for field in ("sequence", "pooled", "mlm_logits", "nsp_logits"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    # Both local names of the position table present: one variable, either is read.
    position = next(n for n in variables if n.endswith("/_position_embeddings"))
    both = {**variables, position.replace("/_position_embeddings", "/embeddings"): np.zeros(0)}
    np.testing.assert_array_equal(run(both, CONFIG, io).sequence, want.sequence)


@pytest.mark.parametrize("kind", KINDS)
def test_has_leaves_heads_out(release, kind):
    variables, io = release(kind, "trainer")
    out = run(variables, CONFIG, io, has=lambda n: "masked_lm/" not in n)
    assert out.mlm_logits is None and out.nsp_logits is not None
    out = run(variables, CONFIG, io, has=lambda n: "/classification_heads/" not in n)
    # The head's dense is the pooler: left out, there is neither pooled output nor NSP.
    assert out.pooled is None and out.nsp_logits is None and out.mlm_logits is not None


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_variable_shapes_are_what_forward_reads_and_the_checkpoint_holds(release, kind, layout):
    variables, io = release(kind, layout)
    shapes = variable_shapes(CONFIG, variables.keys(), lambda n: True)
    for name, shape in shapes.items():
        assert tuple(variables[name].shape) == shape, name
    read: set[str] = set()
    run(variables, CONFIG, io, get=lambda n: read.add(n) or variables[n])
    assert read == set(shapes)
    # Model weights not read: the encoder's untrained pooler beside the head's, the counters.
    rest = set(variables) - read
    assert all(n.endswith(("_pooler_layer/kernel", "_pooler_layer/bias", "save_counter",
                           "global_step")) for n in rest), rest  # fmt: skip
    if layout in ENCODERS:
        assert not rest - {"save_counter"}


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_the_converters_reader_names_the_variables_alike(modelgarden_release, kind, layout):
    """What the reference is tested on here is what verify gives it: readers/objgraph.py names
    every model variable by the same object path, and all it names besides are optimizer
    state and the object graph."""
    import tensorflow as tf

    from danbert_convert.readers import objgraph
    from danbert_convert.readers.base import open_checkpoint

    prefix = checkpoint_prefix(modelgarden_release(kind, layout))
    want = model_keys(tf.train.load_checkpoint(str(prefix)))
    with open_checkpoint(prefix) as reader:
        assert isinstance(reader, objgraph.ObjectGraphReader)
        got = {reader.key(name): name for name in reader.variables()}
    assert {k: got[k] for k in want} == want
    others = {got[k] for k in got.keys() - want.keys()}
    graph, slot = objgraph.OBJECT_GRAPH_KEY, f"/{objgraph.SLOT_MARK}/"
    assert graph in others
    assert all(n == graph or n.startswith("optimizer/") or slot in n for n in others), others
    assert any(slot in n for n in others) == (layout == "trainer")


def test_paths_match_whole_components_only():
    paths = Paths(["a/_transformer_layers/11/_output_dense/kernel",
                   "a/_transformer_layers/1/_attention_layer/_output_dense/kernel",
                   "a/_type_embedding_layer/embeddings"])  # fmt: skip
    assert paths.find("_transformer_layers/1/_output_dense/kernel") is None
    assert paths.find("_embedding_layer/embeddings") is None
    assert paths.get("_transformer_layers/1/_attention_layer/_output_dense/kernel").startswith("a/")
    assert paths.find("x", "_type_embedding_layer/embeddings") == (
        "a/_type_embedding_layer/embeddings"
    )


def test_missing_and_ambiguous_names_are_one_line_errors(release):
    variables, io = release("bert_v2", "encoder")
    gone = "encoder/_transformer_layers/1/_intermediate_dense/kernel"
    names = [n for n in variables if n != gone]
    with pytest.raises(InputError, match=r"^no variable ends in _transformer_layers/1/"
                       r"_intermediate_dense/kernel, which") as e:  # fmt: skip
        run(variables, CONFIG, io, names=names)
    assert "\n" not in str(e.value)
    twice = [*variables, "other/" + gone]
    end = r"_transformer_layers/1/_intermediate_dense/kernel"
    with pytest.raises(InputError, match=rf"^2 variables end in {end} \(encoder/.*, other/") as e:
        variable_shapes(CONFIG, twice)
    assert "\n" not in str(e.value)


# --- gelu and heads: what the comparisons above can tell apart -----------------------------------

# At the fixture's initializer_range (0.3, not BERT's 0.02) feed-forward pre-activations are
# large enough that exact gelu is 1e-4 to 4e-4 of the outputs off (tanh gelu, Model Garden's,
# ~3e-7), and attention sharp enough that two heads of the query swapped alone move the outputs
# by ~0.5 of their scale. 3 heads of 8 (TINY_DIMS): heads and head_dim cannot trade places unseen.


@pytest.mark.parametrize("kind", KINDS)
def test_model_garden_gelu_is_the_tanh_form(release, kind):
    variables, io = release(kind, "trainer")
    got = run(variables, CONFIG, io, hidden_act="gelu_new")
    assert_close(got.sequence, io["sequence_output"], "gelu_new")
    assert_close(got.mlm_logits, io["mlm_logits"], "gelu_new")
    exact = run(variables, CONFIG, io, hidden_act="gelu")
    with pytest.raises(AssertionError, match="max [|]diff[|]"):
        assert_close(exact.sequence, io["sequence_output"], "exact gelu")
    want = io["mlm_logits"]
    diff = np.max(np.abs(exact.mlm_logits - want))
    assert diff > 10 * RTOL * np.max(np.abs(want)), f"exact gelu off by only {diff:.3g}"


def swap_heads(value: np.ndarray, axis: int) -> np.ndarray:
    """`value` with heads 0 and 1 swapped along `axis`."""
    order = [1, 0, *range(2, value.shape[axis])]
    return np.take(value, order, axis=axis)


@pytest.mark.parametrize("kind", KINDS)
def test_attention_takes_heads_from_the_kernels_axes(release, kind):
    """Heads 0 and 1 of the query swapped alone: the output is not Model Garden's. Swapped in
    the query, key, value and output kernels alike: it is, as attention is the same sum over
    heads."""
    variables, io = release(kind, "encoder")
    want = io["sequence_output"]
    layer = "encoder/_transformer_layers/0/_attention_layer"
    swapped = dict(variables)
    for name in (f"{layer}/_query_dense/kernel", f"{layer}/_query_dense/bias"):
        swapped[name] = swap_heads(variables[name], -2)
    diff = np.max(np.abs(run(swapped, CONFIG, io).sequence - want))
    assert diff > 10 * RTOL * np.max(np.abs(want)), f"a head swap moved outputs by {diff:.3g}"
    for dense in ("_key_dense", "_value_dense"):
        for name in (f"{layer}/{dense}/kernel", f"{layer}/{dense}/bias"):
            swapped[name] = swap_heads(variables[name], -2)
    out = f"{layer}/_output_dense/kernel"
    swapped[out] = swap_heads(variables[out], 0)
    assert_close(run(swapped, CONFIG, io).sequence, want, "all heads swapped alike")

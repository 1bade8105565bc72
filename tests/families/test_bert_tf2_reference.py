"""families/bert_tf2_reference.py, the numpy forward of Model Garden's BERT that verify trusts for
TF2 checkpoints, against Model Garden's own outputs on the same inputs.

The checkpoints and outputs are Model Garden's (tf-models-official 2.20: a tiny BertEncoder and
BertEncoderV2 under BertPretrainerV2, one AdamW step, saved three ways). Until tests/
tfckpt_tf2.py writes them in the test run, they are read from the scratch folder the groundwork
made (/work/wt/tf2scratch/exp2, see exp2_save.py there); without it these tests skip.

Variables are read with TensorFlow and named by object path from the checkpoint's object graph,
parsed by TensorFlow's own protocol buffer class: nothing here shares the converter's reader.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from danbert_convert.errors import InputError
from danbert_convert.families.bert_tf2_reference import Paths, forward, variable_shapes

SCRATCH = Path("/work/wt/tf2scratch")
ENCODERS = ["bert", "bert_v2"]  # Model Garden's functional BertEncoder, layer-based BertEncoderV2
SAVES = ["encoder", "trainer", "model"]  # Checkpoint(encoder=), the trainer's, Checkpoint(model=)
# float64 reference against Model Garden's float32: ~1e-7 relative is float32 rounding; 1e-5
# leaves room for that and, with large enough activations, none for exact gelu (see the end).
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


def read_checkpoint(prefix: Path) -> dict[str, np.ndarray]:
    """Every model variable of a TF2 checkpoint by canonical object path (slots left out)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    reader = tf.train.load_checkpoint(str(prefix))
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
                out[name] = reader.get_tensor(attr.checkpoint_key)
    return out


def release(encoder: str, save: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(variables by object path, Model Garden's inputs and outputs) of one scratch checkpoint.

    io.npz: input_word_ids, input_type_ids, input_mask, masked_lm_positions [batch, 3];
    sequence_output, pooled_output (the encoder's _pooler_layer), mlm_logits (at
    masked_lm_positions), nsp (the next-sentence head's logits).
    """
    folder = SCRATCH / "exp2" / encoder
    if not (folder / save / "ckpt-1.index").is_file():
        pytest.skip(f"no Model Garden checkpoint at {folder / save}")
    return read_checkpoint(folder / save / "ckpt-1"), dict(np.load(folder / "io.npz"))


def config_of(encoder: str) -> dict:
    """The transformers-style config of the scratch checkpoints (exp2_save.py's sizes)."""
    return json.loads((SCRATCH / "exp2" / encoder / "dims.json").read_text())


def run(variables: dict, config: dict, io: dict, get=None, **kwargs):
    kwargs = {"names": variables.keys(), "hidden_act": "gelu_new", **kwargs}
    return forward(get or variables.__getitem__, config, io["input_word_ids"],
                   io["input_type_ids"], io["input_mask"], **kwargs)  # fmt: skip


def assert_close(got: np.ndarray, want: np.ndarray, what: str, rtol: float = RTOL) -> None:
    assert got.shape == want.shape, (what, got.shape, want.shape)
    diff, scale = np.max(np.abs(got - want)), np.max(np.abs(want))
    assert diff <= rtol * scale, f"{what}: max |diff| {diff:.3g}, scale {scale:.3g}"


def at_positions(logits: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The [batch, seq, vocab] logits at [batch, n] positions, as Model Garden gathers them."""
    return np.take_along_axis(logits, positions[:, :, None], axis=1)


# --- against Model Garden ------------------------------------------------------------------------


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_forward_matches_model_garden(encoder, save):
    variables, io = release(encoder, save)
    config = config_of(encoder)
    out = run(variables, config, io)
    assert_close(out.sequence, io["sequence_output"], "sequence_output")
    assert len(out.hidden_states) == 1 + config["num_hidden_layers"]
    assert out.hidden_states[-1] is out.sequence
    if save == "encoder":
        # No pre-training heads: the encoder's own pooler.
        assert_close(out.pooled, io["pooled_output"], "pooled_output")
        assert out.mlm_logits is None and out.nsp_logits is None
        return
    assert_close(at_positions(out.mlm_logits, io["masked_lm_positions"]), io["mlm_logits"],
                 "mlm_logits")  # fmt: skip
    assert_close(out.nsp_logits, io["nsp"], "next-sentence logits")
    # The pooled output is the next-sentence head's dense, not the untrained _pooler_layer
    # (whose output Model Garden reports as pooled_output).
    assert np.max(np.abs(out.pooled - io["pooled_output"])) > 100 * RTOL


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_encoders_pooler_where_the_head_has_none(encoder):
    variables, io = release(encoder, "trainer")
    names = [n for n in variables if "/classification_heads/" not in n]
    out = run(variables, config_of(encoder), io, names=names)
    assert_close(out.pooled, io["pooled_output"], "pooled_output")
    assert out.nsp_logits is None
    assert out.mlm_logits is not None


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_same_outputs_under_any_root_and_either_alias(encoder):
    """A SavedModel's variables/ has no root prefix; the position table has two local names;
    an older MaskedLM's bias is `masked_lm/bias`."""
    variables, io = release(encoder, "model")
    config = config_of(encoder)
    want = run(variables, config, io)
    renamed = {}
    for name, value in variables.items():
        name = name.removeprefix("model/")
        name = name.replace("/_position_embeddings", "/embeddings")
        name = name.replace("masked_lm/output_bias/bias", "masked_lm/bias")
        renamed[name] = value
    assert len(renamed) == len(variables)
    got = run(renamed, config, io)
    for field in ("sequence", "pooled", "mlm_logits", "nsp_logits"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    # Both local names of the position table present: one variable, either is read.
    position = next(n for n in variables if n.endswith("/_position_embeddings"))
    both = {**variables, position.replace("/_position_embeddings", "/embeddings"): np.zeros(0)}
    np.testing.assert_array_equal(run(both, config, io).sequence, want.sequence)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_has_leaves_heads_out(encoder):
    variables, io = release(encoder, "trainer")
    config = config_of(encoder)
    out = run(variables, config, io, has=lambda n: "masked_lm/" not in n)
    assert out.mlm_logits is None and out.nsp_logits is not None
    out = run(variables, config, io, has=lambda n: "/classification_heads/" not in n)
    # The head's dense is the pooler: left out, there is neither pooled output nor NSP.
    assert out.pooled is None and out.nsp_logits is None and out.mlm_logits is not None


@pytest.mark.parametrize("save", SAVES)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_variable_shapes_are_what_forward_reads_and_the_checkpoint_holds(encoder, save):
    variables, io = release(encoder, save)
    config = config_of(encoder)
    shapes = variable_shapes(config, variables.keys(), lambda n: True)
    for name, shape in shapes.items():
        assert tuple(variables[name].shape) == shape, name
    read: set[str] = set()
    run(variables, config, io, get=lambda n: read.add(n) or variables[n])
    assert read == set(shapes)
    # Model weights not read: the encoder's untrained pooler beside the head's, save_counter.
    rest = set(variables) - read
    assert all(n.endswith(("_pooler_layer/kernel", "_pooler_layer/bias", "save_counter",
                           "global_step")) for n in rest), rest  # fmt: skip
    if save == "encoder":
        assert not rest - {"save_counter"}


# --- names ---------------------------------------------------------------------------------------


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


def test_missing_and_ambiguous_names_are_one_line_errors():
    variables, io = release("bert_v2", "encoder")
    config = config_of("bert_v2")
    gone = "encoder/_transformer_layers/1/_intermediate_dense/kernel"
    names = [n for n in variables if n != gone]
    with pytest.raises(InputError, match=r"^no variable ends in _transformer_layers/1/"
                       r"_intermediate_dense/kernel, which") as e:  # fmt: skip
        run(variables, config, io, names=names)
    assert "\n" not in str(e.value)
    twice = [*variables, "other/" + gone]
    end = r"_transformer_layers/1/_intermediate_dense/kernel"
    with pytest.raises(InputError, match=rf"^2 variables end in {end} \(encoder/.*, other/") as e:
        variable_shapes(config, twice)
    assert "\n" not in str(e.value)


# --- gelu: Model Garden's is the tanh form -------------------------------------------------------

# Model Garden run in a subprocess: a fresh BertEncoder and BertEncoderV2 with two heads of 8
# (the scratch models have 4 of 4, so heads and head_dim could be swapped unseen), every weight
# moved off its initial value, then the query, intermediate and output kernels scaled by 10;
# saved with Checkpoint(encoder=), Model Garden's outputs beside it. In the tiny models as
# trained, pre-activations are too small for exact and tanh gelu to differ measurably (below
# 1e-6 of the outputs) and attention is near uniform (swapping two heads moves outputs ~1e-5).
# Scaled, exact gelu is 3e-4 of the outputs off, tanh gelu 3e-7, a head swap 2e-2.
SCALED_CONFIG = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2,
                 "num_attention_heads": 2, "intermediate_size": 32,
                 "max_position_embeddings": 20, "type_vocab_size": 2}  # fmt: skip
SCALED = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf, tf_keras
    from official.nlp.configs import encoders
    out, dims, scale = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
    rng = np.random.default_rng(0)
    batch, seq = 2, 8
    inputs = dict(
        input_word_ids=rng.integers(1, dims["vocab_size"], (batch, seq)).astype(np.int32),
        input_mask=np.array([[1] * seq, [1] * 5 + [0] * 3], np.int32),
        input_type_ids=np.array([[0] * 4 + [1] * 4, [0] * seq], np.int32))
    for kind in ("bert", "bert_v2"):
        tf_keras.utils.set_random_seed(0)
        bert = encoders.BertEncoderConfig(
            vocab_size=dims["vocab_size"], hidden_size=dims["hidden_size"],
            num_layers=dims["num_hidden_layers"], num_attention_heads=dims["num_attention_heads"],
            intermediate_size=dims["intermediate_size"],
            max_position_embeddings=dims["max_position_embeddings"],
            type_vocab_size=dims["type_vocab_size"], dropout_rate=0.0, attention_dropout_rate=0.0)
        encoder = encoders.build_encoder(encoders.EncoderConfig(type=kind, **{kind: bert}))
        encoder(inputs)
        for v in encoder.trainable_variables:
            v.assign(v + rng.normal(0.0, 0.05, v.shape).astype(np.float32))
        for layer in encoder._transformer_layers:
            for k in (layer._attention_layer._query_dense.kernel,
                      layer._intermediate_dense.kernel, layer._output_dense.kernel):
                k.assign(k * scale)
        result = encoder(inputs, training=False)
        tf.train.Checkpoint(encoder=encoder).write(f"{out}/{kind}/ckpt")
        np.savez(f"{out}/{kind}/io.npz", **inputs,
                 sequence_output=result["sequence_output"].numpy(),
                 pooled_output=result["pooled_output"].numpy())
""")


@pytest.fixture(scope="module")
def scaled_encoders(tmp_path_factory) -> Path:
    site = SCRATCH / "site"
    if not (site / "official").is_dir():
        pytest.skip("no Model Garden (tf-models-official) to run")
    out = tmp_path_factory.mktemp("scaled")
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [str(out), json.dumps(SCALED_CONFIG), "10"]
    done = subprocess.run([sys.executable, "-c", SCALED, *args], env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def scaled(folder: Path, encoder: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return read_checkpoint(folder / encoder / "ckpt"), dict(np.load(folder / encoder / "io.npz"))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_model_garden_gelu_is_the_tanh_form(scaled_encoders, encoder):
    variables, io = scaled(scaled_encoders, encoder)
    want = io["sequence_output"]
    got = run(variables, SCALED_CONFIG, io, hidden_act="gelu_new")
    assert_close(got.sequence, want, "gelu_new")
    assert_close(got.pooled, io["pooled_output"], "pooled_output")
    exact = run(variables, SCALED_CONFIG, io, hidden_act="gelu").sequence
    diff = np.max(np.abs(exact - want))
    assert diff > 10 * RTOL * np.max(np.abs(want)), f"exact gelu off by only {diff:.3g}"


def swap_heads(value: np.ndarray, axis: int) -> np.ndarray:
    """`value` with heads 0 and 1 swapped along `axis`."""
    order = [1, 0, *range(2, value.shape[axis])]
    return np.take(value, order, axis=axis)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_attention_takes_heads_from_the_kernels_axes(scaled_encoders, encoder):
    """Heads 0 and 1 of the query swapped alone: the output is not Model Garden's. Swapped in
    the query, key, value and output kernels alike: it is, as attention is the same sum over
    heads. (The scaled query kernels make attention sharp enough for heads to matter: in the
    model as trained it is near uniform and a swap moves outputs by ~1e-5 only.)"""
    variables, io = scaled(scaled_encoders, encoder)
    config = SCALED_CONFIG
    want = io["sequence_output"]
    layer = "encoder/_transformer_layers/0/_attention_layer"
    swapped = dict(variables)
    for name in (f"{layer}/_query_dense/kernel", f"{layer}/_query_dense/bias"):
        swapped[name] = swap_heads(variables[name], -2)
    diff = np.max(np.abs(run(swapped, config, io).sequence - want))
    assert diff > 10 * RTOL * np.max(np.abs(want)), f"a head swap moved outputs by {diff:.3g}"
    for dense in ("_key_dense", "_value_dense"):
        for name in (f"{layer}/{dense}/kernel", f"{layer}/{dense}/bias"):
            swapped[name] = swap_heads(variables[name], -2)
    out = f"{layer}/_output_dense/kernel"
    swapped[out] = swap_heads(variables[out], 0)
    assert_close(run(swapped, config, io).sequence, want, "all heads swapped alike")

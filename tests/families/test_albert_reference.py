"""families/albert_reference.py, the numpy ALBERT forward verify trusts, against two other
computations: the TensorFlow-ops forward of tests/albert_reference.py, and transformers'
AlbertForPreTraining built in float64 by test_albert_layout.py's own table. Checkpoints are
written by TensorFlow with ALBERT's layout (tfckpt_albert.py)."""

from __future__ import annotations

import numpy as np
import pytest
from albert_reference import forward as tf_forward
from conftest import sample_inputs
from test_albert_layout import build, run
from tfckpt_albert import TINY_ALBERT, VARIANTS, checkpoint_prefix, layout

from danbert_convert.families.albert_reference import (
    HEAD_VARIABLES,
    forward,
    group_of,
    scope_prefix,
    variable_shapes,
)
from danbert_convert.readers.tensorflow import TensorFlowReader

# Both are float64 computations of the same sums in different orders: they agree to ~1e-15
# relative. 1e-9 leaves room for that and none for a wrong weight, group or activation.
RTOL = 1e-9

LAYOUTS = ["tiny", "inner-groups", "one-group", "module-copy", "module-only", "equal-width"]


def hf_config(variant: str) -> dict:
    """The transformers-style config of a variant's albert_config.json: "gelu" -> "gelu_new"."""
    config = dict(VARIANTS[variant][0])
    return {**config, "hidden_act": "gelu_new", "layer_norm_eps": 1e-12}


def numpy_forward(ckpt, config: dict, **kwargs):
    reader = TensorFlowReader(ckpt)
    names = set(reader.variables())
    ids, types, mask = sample_inputs(config)
    kwargs = {"names": names, "has": names.__contains__, **kwargs}
    return forward(reader.read, config, ids, types, mask, **kwargs)


def tf_reference(folder, variant: str):
    config = VARIANTS[variant][0]
    ids, types, mask = sample_inputs(config)
    scope = VARIANTS[variant][1].get("prefix", "")
    return tf_forward(checkpoint_prefix(folder), config, ids, types, mask, scope=scope)


def rel_diff(got, want) -> float:
    """max |got - want| / max |want|, for numpy arrays or torch tensors."""
    got, want = (t.detach().numpy() if hasattr(t, "detach") else np.asarray(t) for t in (got, want))
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# --- prefix, groups and shapes ----------------------------------------------------------------


def test_scope_prefix_follows_the_names():
    assert scope_prefix(set(layout(TINY_ALBERT))) == ""
    assert scope_prefix(set(layout(TINY_ALBERT, "module/"))) == "module/"
    # A TF-Hub copy beside the plain names: the plain ones are read.
    assert scope_prefix(set(layout(TINY_ALBERT)) | set(layout(TINY_ALBERT, "module/"))) == ""
    assert scope_prefix({"something/else"}) == ""


def test_group_of_is_modelings_rule():
    assert [group_of(i, TINY_ALBERT) for i in range(4)] == [0, 0, 1, 1]
    assert [group_of(i, {"num_hidden_layers": 3}) for i in range(3)] == [0, 0, 0]
    assert group_of(15, {"num_hidden_layers": 22, "num_hidden_groups": 22}) == 14


@pytest.mark.parametrize("variant", LAYOUTS)
def test_variable_shapes_are_what_forward_reads_and_the_checkpoint_holds(albert_release, variant):
    prefix = checkpoint_prefix(albert_release(variant))
    config = hf_config(variant)
    reader = TensorFlowReader(prefix)
    listed = reader.variables()
    read: list[str] = []

    def get(name: str) -> np.ndarray:
        read.append(name)
        return reader.read(name)

    ids, types, mask = sample_inputs(config)
    names = set(listed)
    forward(get, config, ids, types, mask, names=names, has=names.__contains__)
    shapes = variable_shapes(config, names, names.__contains__)
    assert set(read) == set(shapes)
    assert {n: listed[n].shape for n in shapes} == shapes
    p = VARIANTS[variant][1].get("prefix", "")
    assert set(shapes) == set(layout(VARIANTS[variant][0], p))  # every model variable, once


def test_variable_shapes_of_another_grouping_name_other_variables():
    """What verify reports before reading: one group where the checkpoint has two reads only
    group_0, so group_1's variables are never listed (and a checkpoint with one group lacks
    group_1 for a two-group config)."""
    names = set(layout(TINY_ALBERT))
    one = variable_shapes({**hf_config("tiny"), "num_hidden_groups": 1}, names)
    assert not any("/group_1/" in n for n in one)
    two = variable_shapes(hf_config("tiny"), set(layout(VARIANTS["one-group"][0])))
    assert any("/group_1/" in n for n in two)
    assert not any("/group_1/" in n for n in layout(VARIANTS["one-group"][0]))


def test_without_heads_there_are_no_logits_and_no_head_variables(albert_release):
    prefix = checkpoint_prefix(albert_release("tiny"))
    config = hf_config("tiny")
    names = set(layout(TINY_ALBERT))

    def no_cls(name: str) -> bool:
        return not name.startswith("cls/")

    out = numpy_forward(prefix, config, has=no_cls)
    assert out.logits == {}
    assert out.pooled is not None
    assert len(out.hidden_states) == config["num_hidden_layers"] + 1
    assert out.sequence is out.hidden_states[-1]
    assert not any(n.startswith("cls/") for n in variable_shapes(config, names, no_cls))

    def no_pooler(name: str) -> bool:
        return not name.startswith("bert/pooler/")

    out = numpy_forward(prefix, config, has=no_pooler)
    assert out.pooled is None
    assert set(out.logits) == {"mlm"}  # the SOP head reads the pooled output
    assert HEAD_VARIABLES["sop"] not in variable_shapes(config, names, no_pooler)


# --- against the TensorFlow forward and transformers ------------------------------------------


@pytest.mark.parametrize("variant", LAYOUTS)
def test_numpy_equals_tf_reference(albert_release, variant):
    folder = albert_release(variant)
    config = hf_config(variant)
    out = numpy_forward(checkpoint_prefix(folder), config)
    ref = tf_reference(folder, variant)
    blocks = config["num_hidden_layers"] * config["inner_group_num"]
    assert len(out.hidden_states) == len(ref.hidden_states) == blocks + 1
    assert out.hidden_states[0].shape[-1] == config["hidden_size"]  # after the mapping
    assert set(out.logits) == {"mlm", "sop"}
    assert out.logits["mlm"].shape == (2, 10, 100)
    diffs = [rel_diff(g, w) for g, w in zip(out.hidden_states, ref.hidden_states, strict=True)]
    diffs += [rel_diff(out.pooled, ref.pooled), rel_diff(out.logits["mlm"], ref.mlm_logits),
              rel_diff(out.logits["sop"], ref.sop_logits)]  # fmt: skip
    assert max(diffs) <= RTOL, diffs


@pytest.mark.parametrize("variant", LAYOUTS)
def test_numpy_equals_transformers_in_float64(albert_release, variant):
    folder = albert_release(variant)
    config = hf_config(variant)
    out = numpy_forward(checkpoint_prefix(folder), config)
    prefix = VARIANTS[variant][1].get("prefix", "")
    hf = run(build(folder, VARIANTS[variant][0], prefix=prefix).double(), config)
    diffs = [rel_diff(g, w) for g, w in zip(out.hidden_states, hf.hidden_states, strict=True)]
    diffs += [rel_diff(out.logits["mlm"], hf.prediction_logits),
              rel_diff(out.logits["sop"], hf.sop_logits)]  # fmt: skip
    assert max(diffs) <= RTOL, diffs


# --- the comparison can fail ------------------------------------------------------------------


def test_wrong_group_assignment_fails(albert_release):
    """One group for a two-group checkpoint: layers 2-3 run group_0 again."""
    folder = albert_release("tiny")
    ref = tf_reference(folder, "tiny")
    wrong = numpy_forward(checkpoint_prefix(folder), {**hf_config("tiny"), "num_hidden_groups": 1})
    assert rel_diff(wrong.hidden_states[2], ref.hidden_states[2]) <= RTOL  # layers 0-1 agree
    assert rel_diff(wrong.hidden_states[3], ref.hidden_states[3]) > 1e3 * RTOL
    assert rel_diff(wrong.logits["mlm"], ref.mlm_logits) > 1e3 * RTOL


def test_untransposed_square_kernel_fails(albert_release):
    folder = albert_release("tiny")
    reader = TensorFlowReader(checkpoint_prefix(folder))
    bad = "bert/encoder/transformer/group_1/inner_group_0/attention_1/self/query/kernel"

    def get(name: str) -> np.ndarray:
        value = reader.read(name)
        return value.T if name == bad else value

    config = hf_config("tiny")
    names = set(reader.variables())
    ids, types, mask = sample_inputs(config)
    wrong = forward(get, config, ids, types, mask, names=names)
    ref = tf_reference(folder, "tiny")
    assert rel_diff(wrong.hidden_states[2], ref.hidden_states[2]) <= RTOL
    assert rel_diff(wrong.logits["mlm"], ref.mlm_logits) > 1e3 * RTOL


def test_erf_gelu_fails(albert_release):
    """transformers' "gelu" (erf) for ALBERT's "gelu" (tanh): the mismatch a config copied
    verbatim from albert_config.json would make."""
    folder = albert_release("tiny")
    ref = tf_reference(folder, "tiny")
    wrong = numpy_forward(checkpoint_prefix(folder), {**hf_config("tiny"), "hidden_act": "gelu"})
    assert rel_diff(wrong.logits["mlm"], ref.mlm_logits) > 1e3 * RTOL
    assert rel_diff(wrong.hidden_states[0], ref.hidden_states[0]) <= RTOL  # before any gelu


def test_module_prefix_given_explicitly_reads_the_copy(albert_release):
    """With both name sets, prefix="module/" reads the TF-Hub copy: equal values, equal out."""
    reader = TensorFlowReader(checkpoint_prefix(albert_release("module-copy")))
    names = set(reader.variables())
    config = hf_config("module-copy")
    ids, types, mask = sample_inputs(config)
    read: list[str] = []

    def get(name: str) -> np.ndarray:
        read.append(name)
        return reader.read(name)

    module = forward(get, config, ids, types, mask, names=names, prefix="module/")
    assert read and all(n.startswith("module/") for n in read)
    plain = forward(reader.read, config, ids, types, mask, names=names)
    assert rel_diff(module.logits["mlm"], plain.logits["mlm"]) == 0.0

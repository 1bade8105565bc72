"""families/electra_reference.py, the numpy ELECTRA forward verify trusts, against two other
computations: the TensorFlow-ops forward of tests/electra_reference.py, and transformers'
ElectraForPreTraining / ElectraForMaskedLM built in float64 by test_electra_layout.py's own table.
Checkpoints are written by TensorFlow with ELECTRA's layout (tfckpt_electra.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import sample_inputs
from electra_reference import forward as tf_forward
from test_electra_layout import build, run
from tfckpt_electra import TINY_HPARAMS, VARIANTS, checkpoint_prefix, layout, sizes

from danbert_convert.families.electra_reference import (
    HEAD_VARIABLES,
    forward,
    scopes,
    variable_shapes,
)
from danbert_convert.readers.tensorflow import TensorFlowReader

# Both are float64 computations of the same sums in different orders: they agree to ~1e-15
# relative. 1e-9 leaves room for that and none for a wrong weight or shape.
RTOL = 1e-9

PARTS = ["discriminator", "generator"]
# Both projections; own generator embeddings; the generator is electra/ itself; E == H.
LAYOUTS = ["tiny", "untied-embeddings", "tied-generator", "base-like"]


@pytest.fixture(scope="module")
def electra_prefix(electra_release):
    """Factory: electra_prefix(variant) -> the checkpoint prefix of that shared release."""
    return lambda variant: checkpoint_prefix(electra_release(variant))


def part_config(variant: str, part: str) -> dict:
    """The transformers-style config of `part`, from ELECTRA's size rules (not from shapes)."""
    hparams = VARIANTS[variant]
    disc, gen = sizes(hparams)
    separate = hparams.get("untied_generator", True)
    s = gen if part == "generator" and separate else disc
    return {**s.__dict__, "hidden_act": "gelu", "layer_norm_eps": 1e-12}


def numpy_forward(prefix: Path, part: str, config: dict, **kwargs):
    reader = TensorFlowReader(prefix)
    names = set(reader.variables())
    ids, types, mask = sample_inputs(config)
    kwargs = {"names": names, "has": names.__contains__, **kwargs}
    return forward(reader.read, config, part, ids, types, mask, **kwargs)


def rel_diff(got, want) -> float:
    """max |got - want| / max |want|, for numpy arrays or torch tensors."""
    got, want = (t.detach().numpy() if hasattr(t, "detach") else np.asarray(t) for t in (got, want))
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def all_diffs(got_states, got_logits, want_states, want_logits) -> list[float]:
    assert len(got_states) == len(want_states)
    return [rel_diff(g, w) for g, w in zip(got_states, want_states, strict=True)] + [
        rel_diff(got_logits, want_logits)
    ]


# --- scopes and shapes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant, part, expected",
    [
        ("tiny", "discriminator",
         ("electra/embeddings", "electra", "discriminator_predictions")),
        ("tiny", "generator", ("electra/embeddings", "generator", "generator_predictions")),
        ("untied-embeddings", "generator",
         ("generator/embeddings", "generator", "generator_predictions")),
        ("tied-generator", "generator",
         ("electra/embeddings", "electra", "generator_predictions")),
    ],
)  # fmt: skip
def test_scopes_follow_the_names(variant, part, expected):
    assert scopes(set(layout(VARIANTS[variant])), part) == expected


def test_scopes_refuse_an_unknown_part():
    with pytest.raises(ValueError, match="'cloze'"):
        scopes(set(layout(TINY_HPARAMS)), "cloze")


@pytest.mark.parametrize("variant", LAYOUTS)
@pytest.mark.parametrize("part", PARTS)
def test_variable_shapes_are_what_forward_reads_and_the_checkpoint_holds(
    electra_prefix, variant, part
):
    prefix = electra_prefix(variant)
    config = part_config(variant, part)
    reader = TensorFlowReader(prefix)
    listed = reader.variables()
    read: list[str] = []

    def get(name: str) -> np.ndarray:
        read.append(name)
        return reader.read(name)

    ids, types, mask = sample_inputs(config)
    names = set(listed)
    forward(get, config, part, ids, types, mask, names=names, has=names.__contains__)
    shapes = variable_shapes(config, part, names, names.__contains__)
    assert set(read) == set(shapes)
    assert {n: listed[n].shape for n in shapes} == shapes
    assert HEAD_VARIABLES[part] in shapes
    has_projection = any(n.endswith("/embeddings_project/kernel") for n in shapes)
    assert has_projection == (config["embedding_size"] != config["hidden_size"])


def test_variable_shapes_tell_a_generator_config_from_the_discriminators():
    """What verify reports before reading: the generator's config against electra/'s tensors
    (a tied-generator checkpoint has no generator/) gives other shapes."""
    names = set(layout(VARIANTS["tied-generator"]))
    wrong = part_config("tiny", "generator")  # 64 wide: a separate generator's sizes
    shapes = variable_shapes(wrong, "generator", names)
    real = layout(VARIANTS["tied-generator"])
    assert shapes["electra/encoder/layer_0/attention/self/query/kernel"] == (64, 64)
    assert real["electra/encoder/layer_0/attention/self/query/kernel"] == (128, 128)


@pytest.mark.parametrize("part", PARTS)
def test_without_the_head_there_are_no_logits_and_no_head_variables(electra_prefix, part):
    prefix = electra_prefix("tiny")
    config = part_config("tiny", part)
    _, _, head = scopes(set(layout(TINY_HPARAMS)), part)

    def has(name: str) -> bool:
        return not name.startswith(f"{head}/")

    out = numpy_forward(prefix, part, config, has=has)
    assert out.logits == {}
    assert len(out.hidden_states) == config["num_hidden_layers"] + 1
    assert out.sequence is out.hidden_states[-1]
    shapes = variable_shapes(config, part, set(layout(TINY_HPARAMS)), has)
    assert not any(n.startswith(f"{head}/") for n in shapes)


# --- against the TensorFlow forward and transformers ------------------------------------------


@pytest.mark.parametrize("variant", LAYOUTS)
@pytest.mark.parametrize("part", PARTS)
def test_numpy_equals_tf_reference(electra_prefix, variant, part):
    prefix = electra_prefix(variant)
    config = part_config(variant, part)
    out = numpy_forward(prefix, part, config)
    ids, types, mask = sample_inputs(config)
    ref = tf_forward(prefix, part, ids, types, mask,
                     num_attention_heads=config["num_attention_heads"])  # fmt: skip
    assert len(out.hidden_states) == config["num_hidden_layers"] + 1
    assert out.hidden_states[0].shape[-1] == config["hidden_size"]  # after the projection
    assert set(out.logits) == {part}
    assert out.logits[part].shape == ((2, 10) if part == "discriminator" else (2, 10, 40))
    diffs = all_diffs(out.hidden_states, out.logits[part], ref.hidden_states, ref.logits)
    assert max(diffs) <= RTOL, diffs
    assert float(np.abs(ref.logits).max()) > 0.1  # not a comparison of near-zeros


@pytest.mark.parametrize("variant", LAYOUTS)
@pytest.mark.parametrize("part", PARTS)
def test_numpy_equals_transformers_in_float64(electra_prefix, variant, part):
    prefix = electra_prefix(variant)
    config = part_config(variant, part)
    out = numpy_forward(prefix, part, config)
    hf = run(build(prefix.parent, part).double(), config)
    diffs = all_diffs(out.hidden_states, out.logits[part], hf.hidden_states, hf.logits)
    assert max(diffs) <= RTOL, diffs


# --- the comparison can fail ------------------------------------------------------------------


def test_generator_with_the_discriminators_head_count_fails(electra_prefix):
    prefix = electra_prefix("tiny")
    config = part_config("tiny", "generator")
    assert config["num_attention_heads"] == 1
    ids, types, mask = sample_inputs(config)
    ref = tf_forward(prefix, "generator", ids, types, mask, num_attention_heads=1)
    wrong = numpy_forward(prefix, "generator", {**config, "num_attention_heads": 2})
    assert rel_diff(wrong.logits["generator"], ref.logits) > 1e3 * RTOL
    assert rel_diff(wrong.hidden_states[0], ref.hidden_states[0]) <= RTOL  # before attention


def test_another_activation_fails(electra_prefix):
    prefix = electra_prefix("tiny")
    config = part_config("tiny", "discriminator")
    hf = run(build(prefix.parent, "discriminator").double(), config)
    wrong = numpy_forward(prefix, "discriminator", {**config, "hidden_act": "gelu_new"})
    assert rel_diff(wrong.logits["discriminator"], hf.logits) > 1e3 * RTOL


def test_shared_embeddings_for_an_untied_generator_fail(electra_prefix):
    """Names that hide generator/embeddings send the generator to electra/embeddings, 32 wide
    instead of its own 64: variable_shapes says so, and forward cannot run."""
    prefix = electra_prefix("untied-embeddings")
    config = part_config("untied-embeddings", "generator")
    names = {n for n in TensorFlowReader(prefix).variables() if "generator/embeddings" not in n}
    listed = TensorFlowReader(prefix).variables()
    shapes = variable_shapes(config, "generator", names)
    assert shapes["electra/embeddings/word_embeddings"] == (40, 64)
    assert listed["electra/embeddings/word_embeddings"].shape == (40, 32)
    with pytest.raises(ValueError):
        numpy_forward(prefix, "generator", config, names=names)

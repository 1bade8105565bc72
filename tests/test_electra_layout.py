"""ELECTRA groundwork: the TF-written checkpoints have ELECTRA's layout, and a TF -> transformers
table (this test's own, not the converter's) turns them into models whose outputs equal the
independent TensorFlow reference (electra_reference.py).

This proves the family table and the reference before a converter exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import sample_inputs
from electra_reference import forward
from tfckpt_electra import TINY_HPARAMS, VARIANTS, Sizes, layout, sizes, write_release

TOL = 1e-5  # transformers in float32 against the TF reference in float64


def _reader(folder: Path):
    import tensorflow as tf

    return tf.train.load_checkpoint(tf.train.latest_checkpoint(str(folder)))


# --- the test's own TF -> transformers table -------------------------------------------------
# (HF name under the ElectraModel, TF name under the transformer's scope, transpose). TF dense
# kernels are [in, out]; torch Linear weights are [out, in]. Embedding tables are not transposed.
EMBEDDINGS = [
    ("embeddings.word_embeddings.weight", "word_embeddings", False),
    ("embeddings.position_embeddings.weight", "position_embeddings", False),
    ("embeddings.token_type_embeddings.weight", "token_type_embeddings", False),
    ("embeddings.LayerNorm.weight", "LayerNorm/gamma", False),
    ("embeddings.LayerNorm.bias", "LayerNorm/beta", False),
]
LAYER = [
    ("attention.self.query.weight", "attention/self/query/kernel", True),
    ("attention.self.query.bias", "attention/self/query/bias", False),
    ("attention.self.key.weight", "attention/self/key/kernel", True),
    ("attention.self.key.bias", "attention/self/key/bias", False),
    ("attention.self.value.weight", "attention/self/value/kernel", True),
    ("attention.self.value.bias", "attention/self/value/bias", False),
    ("attention.output.dense.weight", "attention/output/dense/kernel", True),
    ("attention.output.dense.bias", "attention/output/dense/bias", False),
    ("attention.output.LayerNorm.weight", "attention/output/LayerNorm/gamma", False),
    ("attention.output.LayerNorm.bias", "attention/output/LayerNorm/beta", False),
    ("intermediate.dense.weight", "intermediate/dense/kernel", True),
    ("intermediate.dense.bias", "intermediate/dense/bias", False),
    ("output.dense.weight", "output/dense/kernel", True),
    ("output.dense.bias", "output/dense/bias", False),
    ("output.LayerNorm.weight", "output/LayerNorm/gamma", False),
    ("output.LayerNorm.bias", "output/LayerNorm/beta", False),
]
HEADS = {
    "discriminator": [
        ("discriminator_predictions.dense.weight", "discriminator_predictions/dense/kernel", True),
        ("discriminator_predictions.dense.bias", "discriminator_predictions/dense/bias", False),
        # dense_1 is the second unnamed tf.layers.dense in the scope.
        ("discriminator_predictions.dense_prediction.weight",
         "discriminator_predictions/dense_1/kernel", True),
        ("discriminator_predictions.dense_prediction.bias",
         "discriminator_predictions/dense_1/bias", False),
    ],
    "generator": [
        ("generator_predictions.dense.weight", "generator_predictions/dense/kernel", True),
        ("generator_predictions.dense.bias", "generator_predictions/dense/bias", False),
        ("generator_predictions.LayerNorm.weight", "generator_predictions/LayerNorm/gamma", False),
        ("generator_predictions.LayerNorm.bias", "generator_predictions/LayerNorm/beta", False),
        # The decoder weight is the word-embedding table (tied); only the bias is stored.
        ("generator_lm_head.bias", "generator_predictions/output_bias", False),
    ],
}  # fmt: skip


def part_scopes(names: set[str], part: str) -> tuple[str, str]:
    """(embedding scope, transformer scope): the generator shares electra/embeddings unless
    generator/embeddings exists, and is electra/ itself when there is no generator/encoder."""
    if part == "discriminator":
        return "electra/embeddings", "electra"
    has = any(n.startswith("generator/embeddings/") for n in names)
    own = any(n.startswith("generator/encoder/") for n in names)
    emb = "generator/embeddings" if has else "electra/embeddings"
    return emb, ("generator" if own else "electra")


def table(names: set[str], part: str, heads: bool = True) -> dict[str, tuple[str, bool]]:
    """HF name -> (TF name, transpose) for `part`; HF names without the `electra.` prefix when
    `heads` is false (ElectraModel)."""
    emb, scope = part_scopes(names, part)
    base = "electra." if heads else ""
    rows = {f"{base}{hf}": (f"{emb}/{tf}", t) for hf, tf, t in EMBEDDINGS}
    if f"{scope}/embeddings_project/kernel" in names:
        rows[f"{base}embeddings_project.weight"] = (f"{scope}/embeddings_project/kernel", True)
        rows[f"{base}embeddings_project.bias"] = (f"{scope}/embeddings_project/bias", False)
    for i in range(num_layers(names, scope)):
        for hf, tf, t in LAYER:
            rows[f"{base}encoder.layer.{i}.{hf}"] = (f"{scope}/encoder/layer_{i}/{tf}", t)
    if heads:
        rows.update({hf: (tf, t) for hf, tf, t in HEADS[part]})
    return rows


def num_layers(names: set[str], scope: str) -> int:
    found = {int(m.group(1)) for n in names if (m := re.match(rf"{scope}/encoder/layer_(\d+)/", n))}
    assert found == set(range(len(found))), sorted(found)
    return len(found)


def inferred_sizes(folder: Path, part: str) -> Sizes:
    """Sizes from the tensor shapes alone, heads by ELECTRA's rule: what a converter must do,
    as ELECTRA releases ship no config."""
    reader = _reader(folder)
    shapes = reader.get_variable_to_shape_map()
    emb, scope = part_scopes(set(shapes), part)
    vocab, width = shapes[f"{emb}/word_embeddings"]
    hidden = shapes[f"{scope}/encoder/layer_0/attention/self/query/kernel"][1]
    return Sizes(
        vocab_size=vocab,
        embedding_size=width,
        hidden_size=hidden,
        num_hidden_layers=num_layers(set(shapes), scope),
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=shapes[f"{scope}/encoder/layer_0/intermediate/dense/kernel"][1],
        max_position_embeddings=shapes[f"{emb}/position_embeddings"][0],
        type_vocab_size=shapes[f"{emb}/token_type_embeddings"][0],
    )


def hf_config(s: Sizes):
    from transformers import ElectraConfig

    return ElectraConfig(
        vocab_size=s.vocab_size, embedding_size=s.embedding_size, hidden_size=s.hidden_size,
        num_hidden_layers=s.num_hidden_layers, num_attention_heads=s.num_attention_heads,
        intermediate_size=s.intermediate_size, max_position_embeddings=s.max_position_embeddings,
        type_vocab_size=s.type_vocab_size, hidden_act="gelu", layer_norm_eps=1e-12,
    )  # fmt: skip


def state_dict(folder: Path, part: str, heads: bool = True, rows=None) -> dict:
    import torch

    reader = _reader(folder)
    rows = rows or table(set(reader.get_variable_to_shape_map()), part, heads)
    out = {}
    for hf, (tf_name, transpose) in rows.items():
        value = reader.get_tensor(tf_name)
        out[hf] = torch.from_numpy(np.ascontiguousarray(value.T if transpose else value))
    return out


def build(folder: Path, part: str, heads: bool = True, sizes_: Sizes | None = None, rows=None):
    import transformers

    cls = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}[part]
    model = getattr(transformers, cls if heads else "ElectraModel")(
        hf_config(sizes_ or inferred_sizes(folder, part))
    )
    sd = state_dict(folder, part, heads, rows)
    if heads and part == "generator":
        # Tied to the word embeddings in the module; strict loading still wants the key.
        sd["generator_lm_head.weight"] = sd["electra.embeddings.word_embeddings.weight"]
    model.load_state_dict(sd, strict=True)
    return model.eval()


def run(model, config: dict):
    import torch

    ids, types, mask = sample_inputs(config)
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
            attention_mask=torch.tensor(mask), output_hidden_states=True,
        )  # fmt: skip


def reference(folder: Path, part: str, heads: int, config: dict):
    import tensorflow as tf

    ids, types, mask = sample_inputs(config)
    return forward(tf.train.latest_checkpoint(str(folder)), part, ids, types, mask,
                   num_attention_heads=heads)  # fmt: skip


def max_diff(a, b) -> float:
    a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)))


# --- ELECTRA's size rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    "hparams, disc, gen",
    [
        # google/electra-small-{discriminator,generator}: 256/4/1024, embeddings 128; the
        # release's generator is full width (electra README: "generator_hidden_size": 1.0).
        ({"model_size": "small", "generator_hidden_size": 1.0},
         (128, 256, 12, 4, 1024), (128, 256, 12, 4, 1024)),
        # google/electra-base-*: embeddings 768 (= hidden), generator 1/3 -> 256 wide, 4 heads.
        ({"model_size": "base", "embedding_size": 768, "generator_hidden_size": 0.33333},
         (768, 768, 12, 12, 3072), (768, 256, 12, 4, 1024)),
        # google/electra-large-*: generator 1/4 -> 256 wide, 4 heads, 24 layers.
        ({"model_size": "large", "embedding_size": 1024},
         (1024, 1024, 24, 16, 4096), (1024, 256, 24, 4, 1024)),
        # Ælæctra (MalteHB/-l-ctra notebooks): small, vocab 32000, defaults -> a 64-wide,
        # single-head generator.
        ({"model_size": "small", "vocab_size": 32000},
         (128, 256, 12, 4, 1024), (128, 64, 12, 1, 256)),
        # Overrides set the discriminator's heads only: the generator re-derives its own.
        ({"model_size": "small", "model_hparam_overrides": {"num_attention_heads": 8}},
         (128, 256, 12, 8, 1024), (128, 64, 12, 1, 256)),
    ],
)  # fmt: skip
def test_sizes_follow_electras_rules(hparams, disc, gen):
    d, g = sizes(hparams)
    pick = ("embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size")  # fmt: skip
    assert tuple(getattr(d, f) for f in pick) == disc
    assert tuple(getattr(g, f) for f in pick) == gen


# --- the written checkpoint ------------------------------------------------------------------


def test_release_folder_is_an_unpacked_electra_zip(electra_release):
    folder = electra_release("tiny")
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint", "model.ckpt-1000.data-00000-of-00001", "model.ckpt-1000.index",
        "model.ckpt-1000.meta", "vocab.txt",
    ]  # fmt: skip
    state = (folder / "checkpoint").read_text()
    assert 'model_checkpoint_path: "model.ckpt-1000"' in state


def test_checkpoint_holds_electras_names_and_shapes(electra_release):
    import tensorflow as tf

    folder = electra_release("tiny")
    listed = dict(tf.train.list_variables(tf.train.latest_checkpoint(str(folder))))
    model = {n: tuple(s) for n, s in listed.items() if not n.endswith(("/adam_m", "/adam_v"))}
    expected = layout(TINY_HPARAMS)
    assert model == {**expected, "global_step": ()}
    slots = set(listed) - set(model)
    assert slots == {f"{n}/{s}" for n in expected for s in ("adam_m", "adam_v")}
    assert _reader(folder).get_tensor("global_step").dtype == np.int64
    # Spot checks against ELECTRA's graph, written out rather than derived.
    assert listed["electra/embeddings/word_embeddings"] == [40, 32]
    assert listed["electra/embeddings_project/kernel"] == [32, 128]
    assert listed["generator/embeddings_project/kernel"] == [32, 64]
    assert listed["generator/encoder/layer_1/intermediate/dense/kernel"] == [64, 256]
    assert listed["generator_predictions/dense/kernel"] == [64, 32]
    assert listed["generator_predictions/LayerNorm/gamma"] == [32]
    assert listed["generator_predictions/output_bias"] == [40]
    assert listed["discriminator_predictions/dense_1/kernel"] == [128, 1]
    assert not any(n.startswith("generator/embeddings/") for n in listed)  # shared


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("part", ["discriminator", "generator"])
def test_shapes_give_back_electras_sizes(electra_release, variant, part):
    disc, gen = sizes(VARIANTS[variant])
    separate = VARIANTS[variant].get("untied_generator", True)
    expected = gen if part == "generator" and separate else disc
    assert inferred_sizes(electra_release(variant), part) == expected


def test_failure_variants_have_their_own_names(tmp_path):
    """Electric (two towers, cloze head) and untied generator embeddings, for issue 14's
    refusal tests."""
    electric = layout({**TINY_HPARAMS, "electric_objective": True})
    assert any(n.startswith("generator_ltr/encoder/") for n in electric)
    assert any(n.startswith("generator_rtl/encoder/") for n in electric)
    assert not any(n.startswith(("generator/", "generator_predictions/")) for n in electric)
    assert electric["cloze_predictions/dense/kernel"] == (128, 32)  # both towers concatenated
    assert "discriminator_predictions/dense_1/kernel" in electric
    untied = layout({**TINY_HPARAMS, "untied_generator_embeddings": True})
    assert untied["generator/embeddings/word_embeddings"] == (40, 64)
    assert "generator/embeddings_project/kernel" not in untied
    mlm = layout({**TINY_HPARAMS, "electra_objective": False})
    assert not any(n.startswith(("generator/", "discriminator_predictions/")) for n in mlm)
    assert mlm["generator_predictions/dense/kernel"] == (128, 32)
    hparams = {**TINY_HPARAMS, "electric_objective": True}
    folder = write_release(tmp_path / "electric", hparams=hparams, hparams_file="hparams.json")
    assert json.loads((folder / "hparams.json").read_text())["electric_objective"] is True


# --- transformers with this table equals the TF reference -------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("part", ["discriminator", "generator"])
def test_transformers_equals_tf_reference(electra_release, variant, part):
    folder = electra_release(variant)
    s = inferred_sizes(folder, part)
    config = {"vocab_size": s.vocab_size}
    out = run(build(folder, part), config)
    ref = reference(folder, part, s.num_attention_heads, config)
    assert len(out.hidden_states) == len(ref.hidden_states) == s.num_hidden_layers + 1
    for got, want in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert max_diff(got, want) <= TOL
    assert max_diff(out.logits, ref.logits) <= TOL
    assert float(np.abs(ref.logits).max()) > 0.1  # not a comparison of near-zeros


@pytest.mark.parametrize("part", ["discriminator", "generator"])
def test_electra_model_without_heads_equals_reference(electra_release, part):
    folder = electra_release("tiny")
    s = inferred_sizes(folder, part)
    config = {"vocab_size": s.vocab_size}
    out = run(build(folder, part, heads=False), config)
    ref = reference(folder, part, s.num_attention_heads, config)
    assert max_diff(out.last_hidden_state, ref.hidden_states[-1]) <= TOL


def test_saved_generator_needs_no_decoder_weight(electra_release, tmp_path):
    """A folder without generator_lm_head.weight loads tied, with nothing missing."""
    from safetensors.torch import save_file
    from transformers import ElectraForMaskedLM

    folder = electra_release("tiny")
    s = inferred_sizes(folder, "generator")
    hf_config(s).save_pretrained(tmp_path)
    save_file(state_dict(folder, "generator"), tmp_path / "model.safetensors")
    model, info = ElectraForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert model.generator_lm_head.weight is model.electra.embeddings.word_embeddings.weight
    config = {"vocab_size": s.vocab_size}
    ref = reference(folder, "generator", s.num_attention_heads, config)
    assert max_diff(run(model.eval(), config).logits, ref.logits) <= TOL


# --- the comparison can fail -----------------------------------------------------------------


def test_generator_with_the_discriminators_head_count_fails(electra_release):
    folder = electra_release("tiny")
    s = inferred_sizes(folder, "generator")
    assert s.num_attention_heads == 1
    wrong = Sizes(**{**s.__dict__, "num_attention_heads": 2})  # the discriminator's
    config = {"vocab_size": s.vocab_size}
    ref = reference(folder, "generator", 1, config)
    assert max_diff(run(build(folder, "generator", sizes_=wrong), config).logits, ref.logits) > 1e-2


def test_untransposed_square_kernel_fails(electra_release):
    folder = electra_release("tiny")
    rows = table(set(_reader(folder).get_variable_to_shape_map()), "discriminator")
    name = "electra.encoder.layer.0.attention.self.query.weight"
    rows[name] = (rows[name][0], False)  # square, so it loads without complaint
    s = inferred_sizes(folder, "discriminator")
    config = {"vocab_size": s.vocab_size}
    ref = reference(folder, "discriminator", s.num_attention_heads, config)
    got = run(build(folder, "discriminator", rows=rows), config)
    assert max_diff(got.logits, ref.logits) > 1e-2


def test_generator_cannot_load_as_discriminator(electra_release):
    """The generator's tensors do not fit a discriminator's shapes (issue 14, #6945)."""
    folder = electra_release("tiny")
    rows = table(set(_reader(folder).get_variable_to_shape_map()), "generator")
    rows = {k: v for k, v in rows.items() if k.startswith("electra.")}
    rows.update({hf: (tf, t) for hf, tf, t in HEADS["discriminator"]})
    with pytest.raises(RuntimeError, match="size mismatch"):
        build(folder, "discriminator", sizes_=inferred_sizes(folder, "discriminator"), rows=rows)

"""ALBERT groundwork: the TF-written checkpoints have ALBERT's layout, and a TF -> transformers
table (this test's own, not the converter's) turns them into AlbertForPreTraining models whose
outputs equal the independent TensorFlow reference (albert_reference.py).

This proves the family table and the reference before a converter exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from albert_reference import forward
from conftest import sample_inputs
from tfckpt_albert import (
    CHECKPOINT,
    SPM_MODEL,
    TINY_ALBERT,
    VARIANTS,
    checkpoint_prefix,
    group_of,
    layout,
    write_release,
)

TOL = 1e-5  # transformers in float32 against the TF reference in float64
# Every layout transformers can hold (all of them but a checkpoint with only slots renamed).
PARITY = ["tiny", "inner-groups", "one-group", "module-copy", "module-only", "equal-width"]


def _reader(folder: Path):
    import tensorflow as tf

    return tf.train.load_checkpoint(str(checkpoint_prefix(folder)))


def _config(variant: str) -> dict:
    return VARIANTS[variant][0]


def _prefix(variant: str) -> str:
    return VARIANTS[variant][1].get("prefix", "")


# --- the test's own TF -> transformers table -------------------------------------------------
# (HF name, TF name, transpose). TF dense kernels are [in, out]; torch Linear weights are
# [out, in]. Embedding tables and seq_relationship/output_weights ([2, H], used with
# transpose_b) are not transposed.
EMBEDDINGS = [
    ("albert.embeddings.word_embeddings.weight", "bert/embeddings/word_embeddings", False),
    ("albert.embeddings.position_embeddings.weight", "bert/embeddings/position_embeddings", False),
    ("albert.embeddings.token_type_embeddings.weight", "bert/embeddings/token_type_embeddings",
     False),
    ("albert.embeddings.LayerNorm.weight", "bert/embeddings/LayerNorm/gamma", False),
    ("albert.embeddings.LayerNorm.bias", "bert/embeddings/LayerNorm/beta", False),
    ("albert.encoder.embedding_hidden_mapping_in.weight",
     "bert/encoder/embedding_hidden_mapping_in/kernel", True),
    ("albert.encoder.embedding_hidden_mapping_in.bias",
     "bert/encoder/embedding_hidden_mapping_in/bias", False),
]  # fmt: skip
# Under albert.encoder.albert_layer_groups.G.albert_layers.I / bert/encoder/transformer/group_G/
# inner_group_I.
BLOCK = [
    ("attention.query.weight", "attention_1/self/query/kernel", True),
    ("attention.query.bias", "attention_1/self/query/bias", False),
    ("attention.key.weight", "attention_1/self/key/kernel", True),
    ("attention.key.bias", "attention_1/self/key/bias", False),
    ("attention.value.weight", "attention_1/self/value/kernel", True),
    ("attention.value.bias", "attention_1/self/value/bias", False),
    ("attention.dense.weight", "attention_1/output/dense/kernel", True),
    ("attention.dense.bias", "attention_1/output/dense/bias", False),
    ("attention.LayerNorm.weight", "LayerNorm/gamma", False),
    ("attention.LayerNorm.bias", "LayerNorm/beta", False),
    ("ffn.weight", "ffn_1/intermediate/dense/kernel", True),
    ("ffn.bias", "ffn_1/intermediate/dense/bias", False),
    ("ffn_output.weight", "ffn_1/intermediate/output/dense/kernel", True),
    ("ffn_output.bias", "ffn_1/intermediate/output/dense/bias", False),
    ("full_layer_layer_norm.weight", "LayerNorm_1/gamma", False),
    ("full_layer_layer_norm.bias", "LayerNorm_1/beta", False),
]
POOLER = [
    ("albert.pooler.weight", "bert/pooler/dense/kernel", True),
    ("albert.pooler.bias", "bert/pooler/dense/bias", False),
]
HEADS = [
    ("predictions.dense.weight", "cls/predictions/transform/dense/kernel", True),
    ("predictions.dense.bias", "cls/predictions/transform/dense/bias", False),
    ("predictions.LayerNorm.weight", "cls/predictions/transform/LayerNorm/gamma", False),
    ("predictions.LayerNorm.bias", "cls/predictions/transform/LayerNorm/beta", False),
    # predictions.decoder.bias is tied to predictions.bias, predictions.decoder.weight to the
    # word embeddings (AlbertForPreTraining._tied_weights_keys): only these are stored.
    ("predictions.bias", "cls/predictions/output_bias", False),
    ("sop_classifier.classifier.weight", "cls/seq_relationship/output_weights", False),
    ("sop_classifier.classifier.bias", "cls/seq_relationship/output_bias", False),
]


def table(config: dict, prefix: str = "", heads: bool = True) -> dict[str, tuple[str, bool]]:
    """HF name -> (TF name, transpose). HF group G reads TF group_G: right where transformers'
    group rule gives each layer the group ALBERT's does. Without `heads`, names are
    AlbertModel's (no `albert.` prefix)."""
    rows = {hf: (prefix + tf, t) for hf, tf, t in EMBEDDINGS + POOLER}
    if config["embedding_size"] == config["hidden_size"]:
        del rows["albert.encoder.embedding_hidden_mapping_in.weight"]  # see identity() below
        del rows["albert.encoder.embedding_hidden_mapping_in.bias"]
    for g in range(config["num_hidden_groups"]):
        for j in range(config["inner_group_num"]):
            hf = f"albert.encoder.albert_layer_groups.{g}.albert_layers.{j}"
            tf = f"{prefix}bert/encoder/transformer/group_{g}/inner_group_{j}"
            rows.update({f"{hf}.{h}": (f"{tf}/{t}", tr) for h, t, tr in BLOCK})
    if heads:
        rows.update({hf: (prefix + tf, t) for hf, tf, t in HEADS})
    else:
        rows = {k.removeprefix("albert."): v for k, v in rows.items()}
    return rows


def hf_config(config: dict, hidden_act: str | None = None):
    """transformers' AlbertConfig for an albert_config.json: ALBERT's "gelu" is the tanh form."""
    from transformers import AlbertConfig

    keys = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers",
            "num_hidden_groups", "num_attention_heads", "intermediate_size", "inner_group_num",
            "max_position_embeddings", "type_vocab_size")  # fmt: skip
    act = {"gelu": "gelu_new"}.get(config["hidden_act"], config["hidden_act"])
    return AlbertConfig(**{k: config[k] for k in keys}, hidden_act=hidden_act or act,
                        layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)  # fmt: skip


def state_dict(folder: Path, rows: dict[str, tuple[str, bool]], config: dict, base: str) -> dict:
    import torch

    reader = _reader(folder)
    out = {}
    for hf, (tf_name, transpose) in rows.items():
        value = reader.get_tensor(tf_name)
        out[hf] = torch.from_numpy(np.ascontiguousarray(value.T if transpose else value))
    if config["embedding_size"] == config["hidden_size"]:
        # modeling.py has no mapping when E == H; transformers always has one: the identity.
        out[f"{base}encoder.embedding_hidden_mapping_in.weight"] = torch.eye(config["hidden_size"])
        out[f"{base}encoder.embedding_hidden_mapping_in.bias"] = torch.zeros(config["hidden_size"])
    return out


def build(folder: Path, config: dict, *, heads: bool = True, rows=None,
          hidden_act: str | None = None, prefix: str = ""):  # fmt: skip
    """AlbertForPreTraining (or AlbertModel without `heads`) loaded strictly by the table."""
    import transformers

    rows = rows or table(config, prefix, heads)
    cls = transformers.AlbertForPreTraining if heads else transformers.AlbertModel
    model = cls(hf_config(config, hidden_act))
    sd = state_dict(folder, rows, config, "albert." if heads else "")
    if heads:
        sd["predictions.decoder.weight"] = sd["albert.embeddings.word_embeddings.weight"]
        sd["predictions.decoder.bias"] = sd["predictions.bias"]
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


def reference(folder: Path, config: dict, scope: str = ""):
    ids, types, mask = sample_inputs(config)
    return forward(checkpoint_prefix(folder), config, ids, types, mask, scope=scope)


def max_diff(a, b) -> float:
    a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)))


# --- the written checkpoint ------------------------------------------------------------------


def test_release_folder_is_an_unpacked_albert_tarball(albert_release, tmp_path):
    folder = albert_release("tiny")
    assert sorted(p.name for p in folder.iterdir()) == [
        "albert_config.json", f"{CHECKPOINT}.data-00000-of-00001", f"{CHECKPOINT}.index",
        f"{CHECKPOINT}.meta",
    ]  # fmt: skip
    assert json.loads((folder / "albert_config.json").read_text()) == TINY_ALBERT
    spm = tmp_path / "any.model"
    spm.write_bytes(b"\x0a\x01x")  # copied as is: any bytes do
    other = write_release(tmp_path / "with-spm", spm_model=spm, training_state=False)
    assert (other / SPM_MODEL).read_bytes() == spm.read_bytes()


def test_checkpoint_holds_alberts_names_and_shapes(albert_release):
    import tensorflow as tf

    listed = dict(tf.train.list_variables(str(checkpoint_prefix(albert_release("tiny")))))
    model = {n: tuple(s) for n, s in listed.items() if not n.endswith(("/adam_m", "/adam_v"))}
    expected = layout(TINY_ALBERT)
    assert model == {**expected, "global_step": ()}
    slots = set(listed) - set(model)
    assert slots == {f"{n}/{s}" for n in expected for s in ("adam_m", "adam_v")}
    assert _reader(albert_release("tiny")).get_tensor("global_step").dtype == np.int64
    # Spot checks against ALBERT's graph, written out rather than derived.
    g1 = "bert/encoder/transformer/group_1/inner_group_0"
    assert listed["bert/embeddings/word_embeddings"] == [100, 16]
    assert listed["bert/embeddings/LayerNorm/gamma"] == [16]
    assert listed["bert/encoder/embedding_hidden_mapping_in/kernel"] == [16, 64]
    assert listed[f"{g1}/attention_1/self/query/kernel"] == [64, 64]
    assert listed[f"{g1}/attention_1/output/dense/kernel"] == [64, 64]
    assert listed[f"{g1}/LayerNorm/gamma"] == [64]
    assert listed[f"{g1}/ffn_1/intermediate/dense/kernel"] == [64, 128]
    assert listed[f"{g1}/ffn_1/intermediate/output/dense/kernel"] == [128, 64]
    assert listed[f"{g1}/LayerNorm_1/beta"] == [64]
    assert listed["bert/pooler/dense/kernel"] == [64, 64]
    assert listed["cls/predictions/transform/dense/kernel"] == [64, 16]
    assert listed["cls/predictions/transform/LayerNorm/gamma"] == [16]
    assert listed["cls/predictions/output_bias"] == [100]
    assert listed["cls/seq_relationship/output_weights"] == [2, 64]
    assert not any("group_2" in n or "/layer_" in n for n in listed)  # 4 layers, 2 groups


def test_layers_share_groups_by_albert_rule():
    assert [group_of(i, TINY_ALBERT) for i in range(4)] == [0, 0, 1, 1]
    assert [group_of(i, {"num_hidden_layers": 12, "num_hidden_groups": 1}) for i in range(12)] == [
        0
    ] * 12
    # ALBERT's int(i / L * G) and transformers' int(i / (L / G)) part ways in floats: with
    # 22 layers in 22 groups ALBERT runs group 14 twice and never creates group_15.
    config = {"num_hidden_layers": 22, "num_hidden_groups": 22}
    assert group_of(15, config) == 14
    assert int(15 / (22 / 22)) == 15
    assert not any("group_15/" in n for n in layout({**TINY_ALBERT, **config}))


def test_slot_and_prefix_variants(albert_release):
    import tensorflow as tf

    def listed(variant: str) -> dict:
        return dict(tf.train.list_variables(str(checkpoint_prefix(albert_release(variant)))))

    model = layout(TINY_ALBERT)
    lamb = listed("lamb-slots")
    assert {n for n in lamb if n.endswith(("/lamb_m", "/lamb_v"))} == {
        f"{n}/{s}" for n in model for s in ("lamb_m", "lamb_v")
    }
    assert not any(n.endswith(("/adam_m", "/adam_v")) for n in lamb)

    copy = listed("module-copy")
    assert {n for n in copy if n.startswith("module/")} == {f"module/{n}" for n in model}
    reader = _reader(albert_release("module-copy"))
    for name in ("bert/embeddings/word_embeddings", "cls/predictions/output_bias"):
        np.testing.assert_array_equal(reader.get_tensor(name), reader.get_tensor(f"module/{name}"))

    only = listed("module-only")
    assert {n for n in only if not n.endswith(("/adam_m", "/adam_v"))} == {
        *layout(TINY_ALBERT, "module/"),
        "global_step",
    }

    equal = listed("equal-width")
    assert not any("embedding_hidden_mapping_in" in n for n in equal)
    assert equal["bert/embeddings/word_embeddings"] == [100, 64]


# --- transformers with this table equals the TF reference -------------------------------------


@pytest.mark.parametrize("variant", PARITY)
def test_transformers_equals_tf_reference(albert_release, variant):
    folder, config, prefix = albert_release(variant), _config(variant), _prefix(variant)
    out = run(build(folder, config, prefix=prefix), config)
    ref = reference(folder, config, scope=prefix)
    blocks = config["num_hidden_layers"] * config["inner_group_num"]
    assert len(out.hidden_states) == len(ref.hidden_states) == blocks + 1
    for got, want in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert max_diff(got, want) <= TOL
    assert max_diff(out.prediction_logits, ref.mlm_logits) <= TOL
    assert max_diff(out.sop_logits, ref.sop_logits) <= TOL
    assert float(np.abs(ref.mlm_logits).max()) > 0.1  # not a comparison of near-zeros
    assert float(np.abs(ref.sop_logits).max()) > 0.01


def test_albert_model_without_heads_equals_reference(albert_release):
    folder = albert_release("tiny")
    out = run(build(folder, TINY_ALBERT, heads=False), TINY_ALBERT)
    ref = reference(folder, TINY_ALBERT)
    assert max_diff(out.last_hidden_state, ref.hidden_states[-1]) <= TOL
    assert max_diff(out.pooler_output, ref.pooled) <= TOL


def test_saved_model_reloads_with_the_decoder_tied(albert_release, tmp_path):
    from transformers import AlbertForPreTraining

    folder = albert_release("tiny")
    build(folder, TINY_ALBERT).save_pretrained(tmp_path)
    model, info = AlbertForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert model.predictions.decoder.weight is model.albert.embeddings.word_embeddings.weight
    ref = reference(folder, TINY_ALBERT)
    assert max_diff(run(model.eval(), TINY_ALBERT).prediction_logits, ref.mlm_logits) <= TOL


# --- the comparison can fail -----------------------------------------------------------------


def test_wrong_group_assignment_fails(albert_release):
    """Groups swapped (HF group 0 <- TF group_1): every shape fits, the outputs do not."""
    folder = albert_release("tiny")
    rows = table(TINY_ALBERT)
    swapped = {k.replace("groups.0.", "groups.X.").replace("groups.1.", "groups.0.")
               .replace("groups.X.", "groups.1."): v for k, v in rows.items()}  # fmt: skip
    ref = reference(folder, TINY_ALBERT)
    got = run(build(folder, TINY_ALBERT, rows=swapped), TINY_ALBERT)
    assert max_diff(got.hidden_states[1], ref.hidden_states[1]) > 1e-2
    assert max_diff(got.prediction_logits, ref.mlm_logits) > 1e-2


def test_untransposed_square_kernel_fails(albert_release):
    folder = albert_release("tiny")
    rows = table(TINY_ALBERT)
    name = "albert.encoder.albert_layer_groups.1.albert_layers.0.attention.query.weight"
    rows[name] = (rows[name][0], False)  # square, so it loads without complaint
    ref = reference(folder, TINY_ALBERT)
    got = run(build(folder, TINY_ALBERT, rows=rows), TINY_ALBERT)
    assert max_diff(got.hidden_states[2], ref.hidden_states[2]) <= TOL  # group 0 still right
    assert max_diff(got.prediction_logits, ref.mlm_logits) > 1e-2


def test_erf_gelu_fails(albert_release):
    """transformers' "gelu" is the erf form: not ALBERT's tanh "gelu"."""
    folder = albert_release("tiny")
    ref = reference(folder, TINY_ALBERT)
    got = run(build(folder, TINY_ALBERT, hidden_act="gelu"), TINY_ALBERT)
    assert max_diff(got.prediction_logits, ref.mlm_logits) > 10 * TOL

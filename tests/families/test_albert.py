"""ALBERT conversion (issue 15): checkpoints written by TensorFlow in ALBERT's layout (shared
groups, factorised embeddings, slots, global_step, TF-Hub copies) with a SentencePiece model
trained in the run, converted, loaded by transformers and compared with the independent
TensorFlow forward of tests/albert_reference.py; verify passes; the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from albert_reference import forward
from conftest import sample_inputs
from spm import train_spm
from tfckpt_albert import VARIANTS, checkpoint_prefix, write_release

from danbert_convert.errors import InputError
from danbert_convert.stages.convert import convert
from danbert_convert.stages.verify import verify

RTOL = 1e-9  # the model in float64 (stored float32 widens exactly) against TF in float64
SPM_VOCAB = 400


@pytest.fixture(scope="module")
def albert(tmp_path_factory: pytest.TempPathFactory):
    """Factory: albert(variant) -> an ALBERT release folder with a SentencePiece model of
    SPM_VOCAB pieces, each written once per module."""
    root = tmp_path_factory.mktemp("albert-convert")
    model = train_spm(root / "spm", vocab_size=SPM_VOCAB)
    made: dict[str, Path] = {}

    def make(variant: str, **overrides) -> Path:
        if variant not in made:
            config, kwargs = VARIANTS[variant]
            config = {**config, "vocab_size": SPM_VOCAB, **overrides}
            made[variant] = write_release(root / variant, config, spm_model=model, **kwargs)
        return made[variant]

    return make


def _config(folder: Path) -> dict:
    return json.loads((folder / "albert_config.json").read_text())


def _close(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want))) / (RTOL * float(np.max(np.abs(want))) + 1e-12)


@pytest.mark.parametrize(
    "variant", ["tiny", "inner-groups", "one-group", "module-only", "module-copy", "lamb-slots"]
)
def test_converted_albert_computes_what_albert_computes(albert, tmp_path, variant):
    import torch
    import transformers

    folder = albert(variant)
    out = tmp_path / "out"
    result = convert(folder, out)
    assert result.architecture == "AlbertForPreTraining"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "albert" and config["hidden_act"] == "gelu_new"
    model, info = transformers.AlbertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    model = model.double().eval()
    ids, types, mask = sample_inputs({"vocab_size": SPM_VOCAB})
    with torch.no_grad():
        got = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types),
                    attention_mask=torch.from_numpy(mask), output_hidden_states=True)  # fmt: skip
    scope = VARIANTS[variant][1].get("prefix", "")
    want = forward(checkpoint_prefix(folder), _config(folder), ids, types, mask, scope=scope)
    assert len(got.hidden_states) == len(want.hidden_states)
    for g, w in zip(got.hidden_states, want.hidden_states, strict=True):
        assert _close(g.numpy(), w) <= 1
    assert _close(got.prediction_logits.numpy(), want.mlm_logits) <= 1
    assert _close(got.sop_logits.numpy(), want.sop_logits) <= 1
    skipped = set(result.skipped.values())
    copy = "the TF-Hub module's copy (not compared: the plain weights are converted)"
    assert skipped <= {"Adam optimizer slot", "LAMB optimizer slot", "training step counter", copy}
    if variant == "module-copy":
        assert result.skipped["module/bert/pooler/dense/kernel"].startswith("the TF-Hub")


def test_tokenizer_files_are_sentencepiece(albert, tmp_path):
    out = tmp_path / "out"
    result = convert(albert("tiny"), out)
    assert {"spiece.model", "tokenizer.json", "tokenizer_config.json"} <= set(result.files)
    assert "vocab.txt" not in result.files
    assert (out / "spiece.model").read_bytes() == (albert("tiny") / "30k-clean.model").read_bytes()
    manifest = json.loads((out / "danbert-manifest.json").read_text())
    assert manifest["settings"]["tokenizer"] == "sentencepiece"
    assert manifest["settings"]["family"] == "albert"


@pytest.mark.parametrize("heads", ["auto", "mlm", "none"])
def test_albert_verifies(albert, tmp_path, heads):
    out = tmp_path / "out"
    convert(albert("tiny"), out, heads=heads)
    report = verify(out)
    checks = {c.name: c for c in report.checks}
    assert report.ok, report.table()
    assert checks["tokenizer"].status == "pass", checks["tokenizer"].detail
    parity = checks["parity"]
    outputs = {"auto": {"sequence", "pooled", "mlm", "sop"}, "mlm": {"sequence", "mlm"},
               "none": {"sequence", "pooled"}}[heads]  # fmt: skip
    assert set(parity.data["outputs"]) == outputs
    assert len(parity.data["layers"]) == 5  # the embedding mapping's output, then 4 layers


def test_a_changed_shared_weight_fails_parity(albert, tmp_path):
    """Parity can fail: one weight of the shared group 1 nudged (manifest removed, so that the
    files check does not catch it first)."""
    from safetensors.numpy import load_file, save_file

    out, folder = tmp_path / "out", albert("tiny")
    convert(folder, out)
    (out / "danbert-manifest.json").unlink()
    weights = load_file(out / "model.safetensors")
    name = "albert.encoder.albert_layer_groups.1.albert_layers.0.ffn.weight"
    weights[name][0, 0] += 0.05
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    parity = {c.name: c for c in verify(out, against=folder).checks}["parity"]
    assert parity.status == "fail"
    assert "diverges from layer_2" in parity.detail  # layers 2-3 run group 1


def test_group_counts_alberts_rule_and_transformers_disagree_on_are_refused(albert, tmp_path):
    folder = albert("tiny")
    cfg = tmp_path / "albert_config.json"
    cfg.write_text(json.dumps({**_config(folder), "num_hidden_layers": 22,
                               "num_hidden_groups": 22}))  # fmt: skip
    with pytest.raises(InputError, match="ALBERT runs layer 15 with group 14, transformers with "):
        convert(folder, tmp_path / "out", config=cfg)


@pytest.mark.parametrize(
    ("key", "value"), [("net_structure_type", 1), ("down_scale_factor", 2), ("gap_size", 3)]
)
def test_unsupported_structures_are_refused_by_name(albert, tmp_path, key, value):
    folder = albert("tiny")
    cfg = tmp_path / "albert_config.json"
    cfg.write_text(json.dumps({**_config(folder), key: value}))
    with pytest.raises(InputError, match=f"{key} {value} is not supported"):
        convert(folder, tmp_path / "out", config=cfg)
    assert not (tmp_path / "out").exists()


def test_groups_missing_from_the_checkpoint_are_named(albert, tmp_path):
    folder = albert("tiny")
    cfg = tmp_path / "albert_config.json"
    cfg.write_text(json.dumps({**_config(folder), "num_hidden_groups": 4}))
    with pytest.raises(InputError, match=r"num_hidden_groups 4 in .* vs 2 groups \(group_0 to "):
        convert(folder, tmp_path / "out", config=cfg)


def test_equal_width_is_refused(tmp_path):
    config, kwargs = VARIANTS["equal-width"]
    model = train_spm(tmp_path / "spm", vocab_size=SPM_VOCAB)
    folder = write_release(tmp_path / "eq", {**config, "vocab_size": SPM_VOCAB},
                           spm_model=model, **kwargs)  # fmt: skip
    with pytest.raises(InputError, match="embedding_size equals hidden_size"):
        convert(folder, tmp_path / "out")


def test_a_layer_count_no_checkpoint_can_confirm_is_bounded(albert, tmp_path):
    # The layers share their groups' weights: nothing in the checkpoint counts them.
    folder = albert("tiny")
    cfg = tmp_path / "albert_config.json"
    cfg.write_text(json.dumps({**_config(folder), "num_hidden_layers": 10**9}))
    with pytest.raises(InputError, match="num_hidden_layers 1000000000 is more than the 10000"):
        convert(folder, tmp_path / "out", config=cfg)
    assert not (tmp_path / "out").exists()


def test_a_layer_norm_epsilon_albert_never_reads_is_refused(albert, tmp_path):
    # transformers would compute with it, and so would verify's reference: a false pass.
    folder = albert("tiny")
    cfg = tmp_path / "albert_config.json"
    cfg.write_text(json.dumps({**_config(folder), "layer_norm_eps": 1e-3}))
    with pytest.raises(InputError, match=r"layer_norm_eps 0\.001 is not supported"):
        convert(folder, tmp_path / "out", config=cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("key", "value"), [("tie_word_embeddings", False), ("position_embedding_type", "relative_key")]
)
def test_keys_albert_never_reads_but_transformers_would_are_refused(albert, tmp_path, key, value):
    """(review) transformers would act on them; ALBERT's modeling.py computes neither."""
    folder = albert("tiny")
    cfg = tmp_path / "albert_config.json"
    cfg.write_text(json.dumps({**_config(folder), key: value}))
    with pytest.raises(InputError, match=f"{key} {value!r} is not supported .ALBERT's modeling"):
        convert(folder, tmp_path / "out", config=cfg)

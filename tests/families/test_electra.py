"""ELECTRA conversion (issue 14): both networks of a pre-training checkpoint written by TensorFlow
in ELECTRA's layout, converted, loaded by transformers and compared with the independent
TensorFlow forward pass of tests/electra_reference.py; sizes, head counts and configs; the
one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import sample_inputs
from electra_reference import forward
from tfckpt_electra import TINY_HPARAMS, VARIANTS, electra_variables, sizes, write_release

from danbert_convert.cli import cli
from danbert_convert.errors import InputError
from danbert_convert.stages.convert import convert

RTOL = 1e-9  # the model run in float64 (stored float32 widens exactly) against TF in float64

LAYOUTS = ["tiny", "base-like", "untied-embeddings", "tied-generator"]
CLASSES = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}


def _prefix(folder: Path) -> Path:
    return next(folder.glob("*.index")).with_suffix("")


def _heads(hparams: dict, part: str) -> int:
    disc, gen = sizes(hparams)
    tied = hparams.get("untied_generator") is False
    return (disc if part == "discriminator" or tied else gen).num_attention_heads


def _load(out: Path):
    import transformers

    arch = json.loads((out / "config.json").read_text())["architectures"][0]
    model, info = getattr(transformers, arch).from_pretrained(out, output_loading_info=True)
    return model.double().eval(), info


def _run(model, ids, types, mask):
    import torch

    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types),
                     attention_mask=torch.from_numpy(mask), output_hidden_states=True)  # fmt: skip


def _close(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| over the allowance (<= 1 passes)."""
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want))) / (RTOL * float(np.max(np.abs(want))) + 1e-12)


@pytest.mark.parametrize("part", ["discriminator", "generator"])
@pytest.mark.parametrize("variant", LAYOUTS)
def test_converted_part_computes_what_electra_computes(electra_release, tmp_path, variant, part):
    folder = electra_release(variant)
    out = tmp_path / "out"
    result = convert(folder, out, part=part)
    assert result.architecture == CLASSES[part]
    model, info = _load(out)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weight
    config = json.loads((out / "config.json").read_text())
    hparams = VARIANTS[variant]
    assert config["model_type"] == "electra"
    assert config["num_attention_heads"] == _heads(hparams, part)
    assert config["hidden_act"] == "gelu" and config["layer_norm_eps"] == 1e-12

    ids, types, mask = sample_inputs({"vocab_size": 30})
    got = _run(model, ids, types, mask)
    want = forward(_prefix(folder), part, ids, types, mask,
                   num_attention_heads=_heads(hparams, part))  # fmt: skip
    assert len(got.hidden_states) == len(want.hidden_states)
    for g, w in zip(got.hidden_states, want.hidden_states, strict=True):
        assert _close(g.numpy(), w) <= 1
    assert _close(got.logits.numpy(), want.logits) <= 1
    if part == "generator":  # the decoder is the word-embedding table, as in ELECTRA
        assert model.generator_lm_head.weight is model.electra.embeddings.word_embeddings.weight


def test_the_wrong_head_count_would_be_caught(electra_release, tmp_path):
    """The comparison above can fail: the generator's outputs with the discriminator's head
    count (2, not its own 1) are far from ELECTRA's."""
    folder = electra_release("tiny")
    convert(folder, tmp_path / "out", part="generator")
    model, _ = _load(tmp_path / "out")
    ids, types, mask = sample_inputs({"vocab_size": 30})
    got = _run(model, ids, types, mask)
    wrong = forward(_prefix(folder), "generator", ids, types, mask, num_attention_heads=2)
    assert _close(got.logits.numpy(), wrong.logits) > 1e3


def test_other_parts_variables_are_left_out_with_the_reason(electra_release, tmp_path):
    result = convert(electra_release("tiny"), tmp_path / "d")
    assert result.skipped["generator/encoder/layer_0/output/dense/kernel"] == (
        "the generator's; --part generator converts it"
    )
    assert result.skipped["generator_predictions/output_bias"].startswith("the generator's")
    assert result.skipped["electra/encoder/layer_0/output/dense/kernel/adam_m"] == (
        "Adam optimizer slot"
    )
    assert result.skipped["global_step"] == "training step counter"
    result = convert(electra_release("tiny"), tmp_path / "g", part="generator")
    assert result.skipped["discriminator_predictions/dense_1/kernel"].startswith(
        "the discriminator's"
    )
    assert result.skipped["electra/embeddings_project/kernel"].startswith("the discriminator's")
    assert "electra/embeddings/word_embeddings" not in result.skipped  # shared: converted
    manifest = json.loads((tmp_path / "g" / "danbert-manifest.json").read_text())
    settings = manifest["settings"]
    assert (settings["family"], settings["part"]) == ("electra", "generator")
    assert settings["config_origin"]["num_attention_heads"].startswith("ELECTRA's rule")
    assert manifest["source"]["config"] is None


def test_heads_none_writes_an_electra_model(electra_release, tmp_path):
    import transformers

    result = convert(electra_release("tiny"), tmp_path / "out", heads="none")
    assert result.architecture == "ElectraModel"
    model = transformers.AutoModel.from_pretrained(tmp_path / "out")
    assert type(model).__name__ == "ElectraModel"
    assert "discriminator_predictions/dense/kernel" in result.skipped


def test_hparams_config_gives_the_head_count(electra_release, tmp_path):
    """A run that overrode the head count: only its --hparams can say so; then the converted
    model equals ELECTRA's forward with that count, and differs from the rule's."""
    hparams = {**TINY_HPARAMS, "model_hparam_overrides": {
        **TINY_HPARAMS["model_hparam_overrides"], "num_attention_heads": 4}}  # fmt: skip
    folder = electra_release("heads4", hparams, hparams_file="hparams.json")
    convert(folder, tmp_path / "out", config=folder / "hparams.json")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_attention_heads"] == 4
    model, _ = _load(tmp_path / "out")
    ids, types, mask = sample_inputs({"vocab_size": 30})
    got = _run(model, ids, types, mask).logits.numpy()
    prefix = _prefix(folder)
    assert _close(got, forward(prefix, "discriminator", ids, types, mask,
                               num_attention_heads=4).logits) <= 1  # fmt: skip
    assert _close(got, forward(prefix, "discriminator", ids, types, mask,
                               num_attention_heads=2).logits) > 1e3  # fmt: skip
    # The generator's heads are re-derived from its own width, whatever the overrides said.
    convert(folder, tmp_path / "gen", part="generator", config=folder / "hparams.json")
    assert json.loads((tmp_path / "gen" / "config.json").read_text())["num_attention_heads"] == 1


def test_config_contradicting_the_shapes_is_refused(electra_release, tmp_path):
    folder = electra_release("tiny")
    bad = tmp_path / "hparams.json"
    bad.write_text(json.dumps({**TINY_HPARAMS, "embedding_size": 64}))
    with pytest.raises(InputError) as e:
        convert(folder, tmp_path / "out", config=bad)
    assert str(e.value) == (
        f"{bad}: embedding_size 64 (run_pretraining.py --hparams) vs 32 from the shape of "
        "electra/embeddings/word_embeddings"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("size", [["small"], {"small": 1}, 256])
def test_hparams_model_size_not_a_name_is_one_line(electra_release, tmp_path, size):
    bad = tmp_path / "hparams.json"
    bad.write_text(json.dumps({**TINY_HPARAMS, "model_size": size}))
    with pytest.raises(InputError, match=r"hparams.json: model_size .*; ELECTRA knows small, "):
        convert(electra_release("tiny"), tmp_path / "out", config=bad)
    assert not (tmp_path / "out").exists()


def test_bert_config_of_the_discriminator_leaves_the_generator_to_the_rule(
    electra_release, tmp_path
):
    """A BertConfig-style file (Ælæctra's notebooks write one) describes the discriminator: its
    head count is not the generator's."""
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"vocab_size": 40, "hidden_size": 128, "num_hidden_layers": 2,
                               "num_attention_heads": 8, "intermediate_size": 512,
                               "max_position_embeddings": 32, "type_vocab_size": 2,
                               "generator_size": "0.25"}))  # fmt: skip
    convert(electra_release("tiny"), tmp_path / "d", config=cfg)
    convert(electra_release("tiny"), tmp_path / "g", config=cfg, part="generator")
    heads = [json.loads((tmp_path / p / "config.json").read_text())["num_attention_heads"]
             for p in ("d", "g")]  # fmt: skip
    assert heads == [8, 1]


def test_heads_that_do_not_divide_the_width_are_refused(electra_release, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "electra", "hidden_size": 128,
                               "num_attention_heads": 3}))  # fmt: skip
    with pytest.raises(InputError, match="hidden_size 128 is not a multiple of num_attention_he"):
        convert(electra_release("tiny"), tmp_path / "out", config=cfg)


def test_a_checkpoint_without_a_generator_has_no_generator_part(tmp_path):
    variables = {k: v for k, v in electra_variables(TINY_HPARAMS).items()
                 if not k.startswith(("generator/", "generator_predictions/"))}  # fmt: skip
    folder = write_release(tmp_path / "disc", variables=variables)
    with pytest.raises(InputError, match=r"no generator \(generator_predictions/\*\) in this"):
        convert(folder, tmp_path / "out", part="generator")
    assert convert(folder, tmp_path / "out").architecture == "ElectraForPreTraining"


def test_electric_is_refused_by_name(tmp_path):
    folder = write_release(tmp_path / "electric", hparams={**TINY_HPARAMS,
                                                          "electric_objective": True})  # fmt: skip
    with pytest.raises(InputError, match="an Electric checkpoint .*generator_ltr/"):
        convert(folder, tmp_path / "out", part="generator")
    with pytest.raises(InputError, match="unrecognised variable cloze_predictions/"):
        convert(folder, tmp_path / "out")


def test_unknown_variables_are_named(tmp_path):
    folder = write_release(tmp_path / "ft", extra={"task_specific/classifier/kernel":
                                                   np.zeros((128, 3), np.float32)})  # fmt: skip
    with pytest.raises(InputError, match="unrecognised variable task_specific/classifier/kernel"):
        convert(folder, tmp_path / "out")


def test_missing_projection_is_named(tmp_path):
    variables = electra_variables(TINY_HPARAMS)
    del variables["electra/embeddings_project/kernel"]
    folder = write_release(tmp_path / "noproj", variables=variables)
    with pytest.raises(InputError, match="missing variable electra/embeddings_project/kernel"):
        convert(folder, tmp_path / "out")


def test_heads_mlm_is_refused_for_the_discriminator(electra_release, tmp_path):
    with pytest.raises(InputError, match="--heads mlm: the ELECTRA discriminator has no such"):
        convert(electra_release("tiny"), tmp_path / "out", heads="mlm")


def test_part_is_refused_for_a_bert(full_release, tmp_path):
    with pytest.raises(InputError, match="--part generator does not apply to a BERT checkpoint"):
        convert(full_release, tmp_path / "out", part="generator")


def test_cli_converts_the_generator(electra_release, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["convert", str(electra_release("tiny")), str(out), "--part", "generator", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["architecture"] == "ElectraForMaskedLM"
    bad = CliRunner().invoke(cli, ["convert", str(electra_release("tiny")), str(tmp_path / "x"),
                                   "--part", "generator", "--heads", "all", "--hidden-act",
                                   "relu"])  # fmt: skip
    assert bad.exit_code == 3
    assert "only a gelu generator converts faithfully" in bad.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("part", ["discriminator", "generator"])
def test_table_matches_transformers_classes(part):
    """Each class in ELECTRA's tables has head modules and parameter prefixes as it says."""
    import transformers

    from danbert_convert.families.electra import ARCHITECTURES, HEADS

    config = transformers.ElectraConfig(vocab_size=40, embedding_size=32, hidden_size=64,
                                        num_hidden_layers=1, num_attention_heads=1,
                                        intermediate_size=128)  # fmt: skip
    for arch in ARCHITECTURES[part]:
        model = getattr(transformers, arch.name)(config)
        assert getattr(model.base_model, "pooler", None) is None and not arch.pooler
        for module in HEADS[part].modules:
            try:
                model.get_submodule(module)
                has = True
            except AttributeError:
                has = False
            assert has == (HEADS[part].group in arch.heads), (arch.name, module)
        prefixed = any(k.startswith("electra.") for k in model.state_dict())
        assert prefixed == arch.prefixed, arch.name


def test_a_width_no_multiple_of_64_warns_that_the_head_count_is_a_guess(
    electra_release, tmp_path, caplog
):
    """run_pretraining.py's debug model is 144 wide with 4 heads; the rule says 2. No shape
    tells, so convert says so (and takes the count from --config when given)."""
    hparams = {**TINY_HPARAMS, "model_hparam_overrides": {
        **TINY_HPARAMS["model_hparam_overrides"], "hidden_size": 144}}  # fmt: skip
    folder = electra_release("w144", hparams)
    convert(folder, tmp_path / "out")
    assert "discriminator hidden_size 144 is no multiple of 64: 2 attention heads" in caplog.text

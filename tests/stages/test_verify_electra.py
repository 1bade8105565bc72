"""verify on ELECTRA conversions (issue 14): parity of either part against the numpy ELECTRA
reference over the TF checkpoint, fill-mask on the generator, and a part checked as the other
one fails."""

from __future__ import annotations

import json

import pytest

from danbert_convert.stages.convert import convert
from danbert_convert.stages.verify import verify


def _checks(report) -> dict:
    return {c.name: c for c in report.checks}


@pytest.mark.parametrize("part", ["discriminator", "generator"])
@pytest.mark.parametrize("variant", ["tiny", "base-like"])
def test_each_part_verifies(electra_release, tmp_path, variant, part):
    folder = electra_release(variant)
    out = tmp_path / "out"
    convert(folder, out, part=part)
    report = verify(out)
    checks = _checks(report)
    assert report.ok, report.table()
    parity = checks["parity"]
    assert parity.status == "pass", parity.detail
    head = "discriminator" if part == "discriminator" else "mlm"
    assert set(parity.data["outputs"]) == {"sequence", head}
    assert len(parity.data["layers"]) == 3  # the embeddings' output, then two layers
    assert max(c["diff"] / c["allowance"] for c in parity.data["outputs"].values()) < 1e-3
    fill = checks["fill-mask"]
    assert fill.status == ("skip" if part == "discriminator" else "info"), fill.detail
    # --against the release folder, no manifest needed for the part: the class says it.
    (out / "danbert-manifest.json").unlink()
    again = _checks(verify(out, against=folder))["parity"]
    assert again.status == "pass", again.detail


def test_a_generator_checked_as_the_discriminator_fails(electra_release, tmp_path):
    """The encoder alone (ElectraModel) of the generator, recorded as the discriminator's: the
    sizes disagree with the discriminator's variables, and parity says so."""
    out = tmp_path / "out"
    convert(electra_release("tiny"), out, part="generator", heads="none")
    manifest = json.loads((out / "danbert-manifest.json").read_text())
    manifest["settings"]["part"] = "discriminator"
    (out / "danbert-manifest.json").write_text(json.dumps(manifest))
    parity = _checks(verify(out))["parity"]
    assert parity.status == "fail"
    assert parity.figure == "source differs"
    assert parity.detail.startswith("electra/embeddings_project/kernel is [32, 128] in ")
    assert parity.detail.endswith("the model needs [32, 64]")


def test_an_unrecorded_electra_model_is_checked_as_the_part_its_sizes_are(
    electra_release, tmp_path
):
    out = tmp_path / "out"
    folder = electra_release("tiny")
    convert(folder, out, part="generator", heads="none")
    (out / "danbert-manifest.json").unlink()
    parity = _checks(verify(out, against=folder))["parity"]
    assert parity.status == "pass", parity.detail


def test_a_changed_weight_fails_parity(electra_release, tmp_path):
    """Parity can fail: one generator weight nudged after conversion (the manifest removed so
    that the files check does not catch it first)."""
    from safetensors.numpy import load_file, save_file

    out = tmp_path / "out"
    folder = electra_release("tiny")
    convert(folder, out, part="generator")
    (out / "danbert-manifest.json").unlink()
    weights = load_file(out / "model.safetensors")
    weights["generator_predictions.dense.weight"][0, 0] += 0.05
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    parity = _checks(verify(out, against=folder))["parity"]
    assert parity.status == "fail", parity.detail
    assert "over the allowance: mlm" in parity.detail
    assert "the encoder agrees (a head differs)" in parity.detail


def test_an_unrecorded_electra_model_of_a_same_size_generator_is_told_by_its_weights(
    electra_release, tmp_path
):
    """ELECTRA-Small's generator is as wide and deep as its discriminator: with no manifest,
    sizes cannot tell an ElectraModel's part; its first encoder kernel can (review)."""
    folder = electra_release("full-width-generator")
    for part in ("generator", "discriminator"):
        out = tmp_path / part
        convert(folder, out, part=part, heads="none")
        (out / "danbert-manifest.json").unlink()
        parity = _checks(verify(out, against=folder))["parity"]
        assert parity.status == "pass", (part, parity.detail)

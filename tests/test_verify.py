"""danbert verify: passes a good conversion, and each kind of broken one fails its check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from danbert_convert.cli import cli
from danbert_convert.convert import convert
from danbert_convert.errors import InputError
from danbert_convert.verify import PARITY_TOLERANCE, danish_sample, verify


@pytest.fixture(scope="module")
def good(full_release, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "model"
    convert(full_release, out)
    return out


@pytest.fixture
def copy(good, tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(good, dst)
    return dst


def _statuses(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def _check(report, name):
    return next(c for c in report.checks if c.name == name)


def _edit_weights(folder: Path, edit) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _drop_manifest(folder: Path) -> None:
    (folder / "danbert-manifest.json").unlink()


def test_good_conversion_passes(good):
    report = verify(good)
    assert _statuses(report) == {
        "files": "pass", "weights": "pass", "tokenizer": "pass", "parity": "pass",
        "fill-mask": "info",
    }  # fmt: skip
    parity = _check(report, "parity")
    worst = float(parity.figure.split()[2])
    assert worst <= PARITY_TOLERANCE
    assert "sequence" in parity.detail and "nsp" in parity.detail and "mlm" in parity.detail
    assert "æ ø å kept" in _check(report, "tokenizer").detail
    assert report.ok


def test_expect_token(good):
    top1 = _check(verify(good), "fill-mask").figure.split("'")[1]
    assert _check(verify(good, expect=top1), "fill-mask").status == "pass"
    report = verify(good, expect="zzz")
    assert _check(report, "fill-mask").status == "fail" and not report.ok


def test_sample_is_danish_and_sizeable():
    words = " ".join(danish_sample()).split()
    assert len(words) >= 300
    assert all(any(c in w for w in words) for c in "æøåÆØÅ")


def test_perturbed_weight_changes_hash(copy):
    def bump(t):
        t["bert.encoder.layer.0.output.dense.weight"] += 0.01

    _edit_weights(copy, bump)
    report = verify(copy)
    files = _check(report, "files")
    assert files.status == "fail"
    assert "model.safetensors changed since conversion" in files.detail


def test_perturbed_weight_fails_parity(copy, full_release):
    def bump(t):
        t["bert.encoder.layer.0.output.dense.weight"][0, 0] += 0.05

    _edit_weights(copy, bump)
    _drop_manifest(copy)
    report = verify(copy, against=full_release)
    assert _statuses(report)["weights"] == "pass"
    parity = _check(report, "parity")
    assert parity.status == "fail" and "over 0.0001" in parity.detail


def test_missing_tensor_fails_weights(copy):
    _edit_weights(copy, lambda t: t.pop("bert.encoder.layer.1.output.dense.bias"))
    _drop_manifest(copy)
    weights = _check(verify(copy), "weights")
    assert weights.status == "fail"
    assert "missing keys: bert.encoder.layer.1.output.dense.bias" in weights.detail


def test_transposed_kernel_fails_parity(copy, full_release):
    def transpose(t):
        k = "bert.encoder.layer.0.attention.self.key.weight"
        t[k] = np.ascontiguousarray(t[k].T)

    _edit_weights(copy, transpose)
    _drop_manifest(copy)
    parity = _check(verify(copy, against=full_release), "parity")
    assert parity.status == "fail" and "over" in parity.detail


def test_accent_stripping_fails_tokenizer(copy):
    tok = json.loads((copy / "tokenizer.json").read_text())
    tok["normalizer"]["strip_accents"] = True
    (copy / "tokenizer.json").write_text(json.dumps(tok))
    cfg = json.loads((copy / "tokenizer_config.json").read_text())
    cfg["strip_accents"] = True
    (copy / "tokenizer_config.json").write_text(json.dumps(cfg))
    check = _check(verify(copy), "tokenizer")
    assert check.status == "fail"
    assert "normalises to 'æ ø a'" in check.detail


def test_wrong_activation_fails_parity(copy):
    cfg = json.loads((copy / "config.json").read_text())
    cfg["hidden_act"] = "relu"
    (copy / "config.json").write_text(json.dumps(cfg))
    parity = _check(verify(copy), "parity")
    assert parity.status == "fail"
    assert "config.json has hidden_act 'relu', the source calls for 'gelu'" in parity.detail


def test_gelu_new_conversion_verifies(full_release, tmp_path):
    out = tmp_path / "m"
    convert(full_release, out, hidden_act="gelu_new")
    parity = _check(verify(out), "parity")
    assert parity.status == "pass" and "gelu_new" in parity.detail


def test_bin_only_conversion_verifies(full_release, tmp_path):
    out = tmp_path / "m"
    convert(full_release, out, format="bin")
    assert not (out / "model.safetensors").exists()
    assert verify(out).ok


def test_no_source_skips_parity(copy):
    _drop_manifest(copy)
    parity = _check(verify(copy), "parity")
    assert parity.status == "skip" and "--against" in parity.detail


def test_missing_files(copy):
    (copy / "tokenizer.json").unlink()
    files = _check(verify(copy), "files")
    assert files.status == "fail" and files.detail == "missing: tokenizer.json"


def test_not_a_folder(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        verify(tmp_path / "nope")


def test_cli_verify(good, copy):
    runner = CliRunner()
    r = runner.invoke(cli, ["verify", str(good), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["ok"] and [c["name"] for c in data["checks"]][:4] == [
        "files", "weights", "tokenizer", "parity",
    ]  # fmt: skip
    (copy / "config.json").write_text(
        (copy / "config.json").read_text().replace('"gelu"', '"relu"')
    )
    r = runner.invoke(cli, ["verify", str(copy)])
    assert r.exit_code == 6
    assert "parity     FAIL" in r.output
    assert r.output.strip().splitlines()[-1] == f"error: {copy}: failed checks: parity"


@pytest.mark.parametrize(
    ("heads", "arch", "outputs"),
    [
        (("mlm",), "BertForMaskedLM", {"sequence", "mlm"}),
        (("squad",), "BertForQuestionAnswering", {"sequence", "squad"}),
        (("classifier",), "BertForSequenceClassification", {"sequence", "pooled", "classifier"}),
        ((), "BertModel", {"sequence", "pooled"}),
    ],
)
def test_every_architecture_verifies(release, tmp_path, heads, arch, outputs):
    out = tmp_path / "m"
    convert(release("-".join(heads) or "bare", heads=heads), out)
    report = verify(out)
    assert report.ok, report.table()
    weights, parity = _check(report, "weights"), _check(report, "parity")
    assert weights.figure and arch in weights.detail
    if arch in ("BertForMaskedLM", "BertForQuestionAnswering"):
        # AutoModel gives these a pooler of its own; the report says so instead of failing.
        assert "AutoModel adds an untrained pooler" in weights.detail
    compared = {part.split()[0] for part in parity.detail.split(": ", 1)[1].split(", ")}
    assert compared == outputs
    assert _check(report, "fill-mask").status == ("info" if "mlm" in heads else "skip")


def test_missing_data_shard_fails_parity_not_verify(good, tmp_path, full_release):
    src = tmp_path / "src"
    shutil.copytree(full_release, src)
    (src / "bert_model.ckpt.data-00000-of-00001").unlink()
    report = verify(good, against=src)
    parity = _check(report, "parity")
    assert parity.status == "fail" and "bert_model.ckpt.data-00000-of-00001" in parity.detail
    assert _statuses(report)["fill-mask"] == "info"  # the other checks still ran


def test_sentence_without_mask_is_a_failed_check(good):
    report = verify(good, sentences=("Ingen maske her.",))
    smoke = _check(report, "fill-mask")
    assert smoke.status == "fail" and smoke.detail == "sentence 'Ingen maske her.' has no [MASK]"


def test_corrupt_weights_file_is_a_failed_check(copy):
    (copy / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    _drop_manifest(copy)
    report = verify(copy)
    weights = _check(report, "weights")
    assert weights.status == "fail" and weights.detail.startswith("model.safetensors: ")
    assert _statuses(report)["parity"] == "skip"


def test_missing_special_tokens_map(copy):
    (copy / "special_tokens_map.json").unlink()
    files = _check(verify(copy), "files")
    assert files.status == "fail" and files.detail == "missing: special_tokens_map.json"


def test_convert_and_reference_know_the_same_activations():
    from danbert_convert.convert import HIDDEN_ACTS
    from danbert_convert.reference import ACTIVATIONS

    assert set(HIDDEN_ACTS) == set(ACTIVATIONS)

"""danbert verify: passes a good conversion, and each kind of broken one fails its check."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tfckpt import TINY_CONFIG, VOCAB

from danbert_convert.cli import cli
from danbert_convert.errors import InputError
from danbert_convert.stages.convert import convert
from danbert_convert.stages.verify import PARITY_ATOL, PARITY_RTOL, danish_sample, verify

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Like Google's English uncased vocab: no accented letter (so convert strips accents), an ℝ
# (upper case without a lower case), and tokens no input can produce: split at punctuation
# ('...', 'e.g.'), at whitespace (a no-break space), or removed by clean_text (a zero-width
# space, a control character).
ENGLISH_VOCAB = [*SPECIALS, "[unused0]", "the", "cat", "sat", "on", "mat", "a", "dog", "is",
                 "good", "day", "cafe", "naive", ".", ",", "!", "##s", "##ed", "##ing", "e", "g",
                 "i", "o", "ℝ", "...", "e.g.", "new\u00a0york", "\u200b", "\x07"]  # fmt: skip
# A cased Danish vocab: both cases of æ ø å, words in both cases.
CASED_VOCAB = [*SPECIALS, "Jeg", "jeg", "bor", "på", "Østerbro", "København", "og", "i", "Æ",
               "æ", "Ø", "ø", "Å", "å", "Sål", "sål", "sal", ".", ",", "##e", "##r"]  # fmt: skip


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


BERT_NORMALIZER = {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                   "strip_accents": True, "lowercase": True}  # fmt: skip


def _bert_normalizer(tok: dict) -> dict:
    """tokenizer.json's BertNormalizer: the whole normaliser, or the step of its Sequence."""
    norm = tok["normalizer"]
    if norm["type"] == "Sequence":
        return next(n for n in norm["normalizers"] if n["type"] == "BertNormalizer")
    return norm


def _drop_manifest(folder: Path) -> None:
    (folder / "danbert-manifest.json").unlink()


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its SHA-256: verify must change none of them."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _cli_verify(folder: Path, *args: str):
    """Run `danbert -q verify` as a user would (quiet: stderr holds only an error); check it
    leaves the folder as it was."""
    before = _tree(folder)
    r = CliRunner().invoke(cli, ["-q", "verify", str(folder), *args])
    assert _tree(folder) == before
    return r


def _bump(key: str, by: float = 0.05):
    def edit(t):
        t[key].reshape(-1)[0] += by

    return edit


def test_good_conversion_passes(good):
    report = verify(good)
    assert _statuses(report) == {
        "files": "pass", "weights": "pass", "tokenizer": "pass", "parity": "pass",
        "fill-mask": "info",
    }  # fmt: skip
    parity = _check(report, "parity")
    data = parity.data
    assert set(data["outputs"]) == {"sequence", "pooled", "mlm", "nsp"}
    assert set(data["layers"]) == {"embeddings", "layer_0", "layer_1"}
    for row in (*data["outputs"].values(), *data["layers"].values()):
        assert row["allowance"] == PARITY_ATOL + PARITY_RTOL * row["max_ref"]
        assert row["diff"] <= row["allowance"]
    assert data["diverges_at"] is None and parity.figure.startswith(f"worst {data['worst']} ")
    assert (
        "å æ ø kept; rule: lowercase; strip accents except å;" in _check(report, "tokenizer").detail
    )
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


def test_missing_tensor_fails_weights(copy):
    _edit_weights(copy, lambda t: t.pop("bert.encoder.layer.1.output.dense.bias"))
    _drop_manifest(copy)
    weights = _check(verify(copy), "weights")
    assert weights.status == "fail"
    assert "missing keys: bert.encoder.layer.1.output.dense.bias" in weights.detail


def test_accent_stripping_fails_tokenizer(copy):
    """BERT's strip_accents on, as one hub copy of the Danish BERT ships it ("ogsa")."""
    _edit_json(copy / "tokenizer.json", lambda t: t.update(normalizer=BERT_NORMALIZER))
    _edit_json(copy / "tokenizer_config.json",
               lambda c: c.update(strip_accents=True, tokenizer_class="BertTokenizer"))  # fmt: skip
    check = _check(verify(copy), "tokenizer")
    assert check.status == "fail"
    assert "letters and marks normalise otherwise than the rule (lowercase; strip accents " \
           "except å;" in check.detail  # fmt: skip
    assert "'å' -> 'a', expected 'å'" in check.detail
    assert "'å' normalises to 'a'" in check.detail  # and the vocab's å is out of reach


def test_accents_kept_fails_tokenizer(copy):
    """BERT's strip_accents off, as another hub copy ships it: "idé" keeps an accent the model
    never saw."""
    keep = {**BERT_NORMALIZER, "strip_accents": False}
    _edit_json(copy / "tokenizer.json", lambda t: t.update(normalizer=keep))
    _edit_json(copy / "tokenizer_config.json", lambda c: c.update(tokenizer_class="BertTokenizer"))
    check = _check(verify(copy), "tokenizer")
    assert check.status == "fail"
    assert "'à' -> 'à', expected 'a'; 'á' -> 'á', expected 'a'" in check.detail
    assert check.data["failing"] == 0  # the vocab's own words are fine


def test_bert_tokenizer_class_drops_the_rule(copy):
    """transformers 5's BertTokenizer rebuilds BERT's normaliser from tokenizer_config.json and
    ignores tokenizer.json's: the rule is lost, and verify says why."""
    _edit_json(copy / "tokenizer_config.json", lambda c: c.update(tokenizer_class="BertTokenizer"))
    r = _cli_verify(copy)
    assert r.exit_code == 6 and r.stderr.strip() == f"error: {copy}: failed checks: tokenizer"
    check = _check(verify(copy), "tokenizer")
    assert "'à' -> 'à', expected 'a'" in check.detail
    assert (
        "transformers built a BertNormalizer instead of tokenizer.json's Sequence "
        "(tokenizer_config.json's tokenizer_class is 'BertTokenizer')"
    ) in check.detail


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
    data = json.loads(r.stdout)  # the progress lines are on stderr
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
    assert set(parity.data["outputs"]) == outputs
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
    # Unreadable weights leave config.json unchecked, so transformers is not given it.
    files = _check(report, "files")
    assert files.status == "fail" and files.detail.startswith("model.safetensors: cannot be read")
    assert _statuses(report) == {"files": "fail", "weights": "skip", "tokenizer": "skip",
                                 "parity": "skip", "fill-mask": "skip"}  # fmt: skip


def test_missing_special_tokens_map(copy):
    (copy / "special_tokens_map.json").unlink()
    files = _check(verify(copy), "files")
    assert files.status == "fail" and files.detail == "missing: special_tokens_map.json"


def test_convert_and_reference_know_the_same_activations():
    from danbert_convert.families.bert_reference import ACTIVATIONS
    from danbert_convert.stages.convert import HIDDEN_ACTS

    assert set(HIDDEN_ACTS) == set(ACTIVATIONS)


# --- parity: a scale-aware criterion in float64 (issue 10, items 2 and 19) -----------------

A0 = "bert.encoder.layer.0.attention"


def _transpose(key: str):
    def edit(t):
        t[key] = np.ascontiguousarray(t[key].T)

    return edit


def _swap(*pairs: tuple[str, str]):
    def edit(t):
        for a, b in pairs:
            t[a], t[b] = t[b], t[a]

    return edit


@pytest.mark.parametrize(
    "damage",
    [
        _bump("bert.encoder.layer.0.output.dense.weight"),
        _transpose(f"{A0}.self.query.weight"),
        _swap(
            (f"{A0}.self.query.weight", f"{A0}.self.key.weight"),
            (f"{A0}.self.query.bias", f"{A0}.self.key.bias"),
        ),
        _swap((f"{A0}.output.LayerNorm.weight", f"{A0}.output.LayerNorm.bias")),
    ],
    ids=["weight+0.05", "kernel-untransposed", "query-key-swapped", "gamma-beta-swapped"],
)
def test_conversion_fault_fails_parity(copy, full_release, damage):
    _edit_weights(copy, damage)
    _drop_manifest(copy)
    r = _cli_verify(copy, "--against", str(full_release), "--json")
    assert r.exit_code == 6
    assert r.stderr.strip() == f"error: {copy}: failed checks: parity"
    parity = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "parity")
    data = parity["data"]
    assert parity["status"] == "fail" and "over the allowance" in parity["detail"]
    assert data["diverges_at"] == "layer_0"  # every fault above is in layer 0
    assert data["layers"]["embeddings"]["diff"] <= data["layers"]["embeddings"]["allowance"]
    worst = data["outputs"][data["worst"]]
    assert worst["diff"] > worst["allowance"]
    assert "diverges from layer_0" in parity["detail"]


@pytest.mark.parametrize("std", [0.02, 0.3])
def test_correct_conversions_pass_small_and_large_weights(release, tmp_path, std):
    src = release(f"verify-std-{std}", std=std)
    convert(src, tmp_path / "m")
    report = verify(tmp_path / "m")
    assert report.ok, report.table()
    data = _check(report, "parity").data
    # Float64 rounding on both sides: orders of magnitude under the allowance.
    for row in data["outputs"].values():
        assert row["diff"] < 1e-3 * row["allowance"]


@pytest.mark.parametrize(
    ("name", "heads", "key", "output"),
    [
        ("full", ("mlm", "nsp"), "cls.predictions.transform.dense.weight", "mlm"),
        ("full", ("mlm", "nsp"), "cls.seq_relationship.weight", "nsp"),
        ("classifier", ("classifier",), "classifier.weight", "classifier"),
        ("squad", ("squad",), "qa_outputs.weight", "squad"),
    ],
    ids=["mlm", "nsp", "classifier", "squad"],
)
def test_head_only_damage_fails_parity_naming_the_head(release, tmp_path, name, heads, key,
                                                        output):  # fmt: skip
    src = release(name, heads=heads)
    out = tmp_path / "m"
    convert(src, out)
    _edit_weights(out, _bump(key))
    _drop_manifest(out)
    report = verify(out, against=src)
    parity = _check(report, "parity")
    assert parity.status == "fail", report.table()
    assert parity.data["worst"] == output and parity.figure.startswith(f"worst {output} ")
    assert parity.data["diverges_at"] is None  # the encoder is intact
    assert f"over the allowance: {output};" in parity.detail
    assert "the encoder agrees (a head differs)" in parity.detail


# --- non-finite and non-float weights (items 1 and 5) ---------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weight_fails_weights_and_parity(copy, full_release, value):
    key = "bert.encoder.layer.1.attention.output.dense.weight"

    def poison(t):
        t[key][3, 2] = value

    _edit_weights(copy, poison)
    _drop_manifest(copy)
    r = _cli_verify(copy, "--against", str(full_release))
    assert r.exit_code == 6
    assert r.stderr.strip() == f"error: {copy}: failed checks: weights, parity"
    report = verify(copy, against=full_release)
    weights, parity = _check(report, "weights"), _check(report, "parity")
    assert weights.detail == f"model.safetensors: {key} has 1 non-finite values (NaN or infinity)"
    assert parity.status == "fail" and parity.figure == "non-finite"
    # The poisoned layer is the first whose hidden states are not finite.
    assert parity.detail.startswith("layer_1: ") and "from the model" in parity.detail
    assert "nan" not in parity.figure.lower()


def test_non_finite_source_variable_fails_parity(good, release):
    from tfckpt import bert_variables

    variables = bert_variables(TINY_CONFIG)  # the same seed as the full release
    variables["bert/encoder/layer_0/output/dense/bias"][5] = np.nan
    src = release("verify-nan-source", variables=variables)
    r = _cli_verify(good, "--against", str(src))
    assert r.exit_code == 6
    parity = _check(verify(good, against=src), "parity")
    assert parity.status == "fail" and parity.figure == "source"
    assert parity.detail == (f"{src / 'bert_model.ckpt'}: variable "
                             "bert/encoder/layer_0/output/dense/bias has 1 non-finite values "
                             "(NaN or infinity)")  # fmt: skip


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("dtype", ["int32", "float64"])
def test_non_float32_16_weights_fail_weights(full_release, tmp_path, fmt, dtype):
    out = tmp_path / "m"
    convert(full_release, out, format=fmt)
    key = "bert.embeddings.word_embeddings.weight"
    if fmt == "safetensors":
        _edit_weights(out, lambda t: t.update({key: t[key].astype(dtype)}))
    else:
        import torch

        sd = torch.load(out / "pytorch_model.bin", weights_only=True)
        sd[key] = sd[key].to(getattr(torch, dtype))
        torch.save(sd, out / "pytorch_model.bin")
    _drop_manifest(out)
    r = _cli_verify(out)
    assert r.exit_code == 6
    assert "failed checks: weights" in r.stderr
    weights = _check(verify(out), "weights")
    name = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
    assert weights.status == "fail"
    assert weights.detail == (f"{name}: {key} is {dtype}; weights must be float32, float16 "
                              "or bfloat16")  # fmt: skip


# --- --against a checkpoint of another shape (item 4) --------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"hidden_size": 32},
            "bert/embeddings/word_embeddings is [40, 32] in {ckpt}, the model needs [40, 16]",
        ),
        (
            {"vocab_size": 48},
            "bert/embeddings/word_embeddings is [48, 16] in {ckpt}, the model needs [40, 16]",
        ),
        (
            {"intermediate_size": 64},
            "bert/encoder/layer_0/intermediate/dense/kernel is "
            "[16, 64] in {ckpt}, the model needs [16, 32]",
        ),
        (
            {"num_hidden_layers": 3},
            "bert_config.json has num_hidden_layers 3, the model's config.json 2",
        ),
        (
            {"num_attention_heads": 4},
            "bert_config.json has num_attention_heads 4, the model's config.json 2",
        ),
    ],
    ids=["hidden", "vocab", "intermediate", "layers", "heads"],
)
def test_against_another_checkpoint_names_the_tensor(good, release, overrides, message):
    cfg = {**TINY_CONFIG, **overrides}
    src = release("verify-other-" + "-".join(f"{k}{v}" for k, v in overrides.items()), cfg=cfg)
    r = _cli_verify(good, "--against", str(src))
    assert r.exit_code == 6 and "Traceback" not in r.output and "broadcast" not in r.output
    assert r.stderr.strip() == f"error: {good}: failed checks: parity"
    parity = _check(verify(good, against=src), "parity")
    assert parity.status == "fail" and parity.figure == "source differs"
    assert parity.detail == message.format(ckpt=src / "bert_model.ckpt")
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("parity"))
    assert line.endswith(parity.detail)  # one line in the table


def test_against_a_checkpoint_without_the_heads(good, release):
    src = release("bare", heads=())
    r = _cli_verify(good, "--against", str(src))
    assert r.exit_code == 6
    parity = _check(verify(good, against=src), "parity")
    assert parity.status == "fail" and parity.figure == "source differs"
    assert parity.detail == (
        f"the model has the mlm output, {src / 'bert_model.ckpt'} has no variables for it"
    )


# --- the tokenizer check follows the vocab (items 3 and 20) --------------------------------


def test_english_uncased_vocab_all_passes(release, tmp_path):
    from transformers import AutoTokenizer

    src = release("verify-english", vocab=ENGLISH_VOCAB, cfg={**TINY_CONFIG, "vocab_size": 40})
    out = tmp_path / "model"
    r = CliRunner().invoke(cli, ["all", "--from", str(src), "--dest", str(tmp_path / "w"),
                                 "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    tok = AutoTokenizer.from_pretrained(out)
    # Uncased (ℝ is no upper case letter with a lower one) and accents stripped, as Google's.
    assert tok.tokenize("The Café ℝ") == ["the", "cafe", "ℝ"]
    check = _check(verify(out), "tokenizer")
    assert check.status == "pass"
    assert check.data["unreachable"] == 5 and check.data["failing"] == 0
    assert "(5 more no text can produce, e.g. '...', 'e.g.', 'new\\xa0york')" in check.detail
    assert "æ" not in check.detail  # the letters are not in this vocab: not checked


def test_cased_vocab_passes(release, tmp_path):
    src = release("verify-cased", vocab=CASED_VOCAB)
    convert(src, tmp_path / "m")
    report = verify(tmp_path / "m")
    assert report.ok, report.table()
    check = _check(report, "tokenizer")
    assert "Å Æ Ø å æ ø kept; rule: strip accents except Å å;" in check.detail
    assert "in capitals" not in check.detail


def test_lowercasing_a_cased_vocab_fails_tokenizer(release, tmp_path):
    out = tmp_path / "m"
    convert(release("verify-cased", vocab=CASED_VOCAB), out)
    _edit_json(out / "tokenizer_config.json", lambda c: c.update(do_lower_case=True))
    _edit_json(out / "tokenizer.json", lambda t: _bert_normalizer(t).update(lowercase=True))
    r = _cli_verify(out)
    assert r.exit_code == 6 and r.stderr.strip() == f"error: {out}: failed checks: tokenizer"
    check = _check(verify(out), "tokenizer")
    assert check.status == "fail"
    assert "7 of 19 whole-word tokens of vocab.txt do not tokenize to themselves: " \
           "'Jeg' normalises to 'jeg'" in check.detail  # fmt: skip
    assert check.data["failing"] == 7
    assert "lowercase=True, the conversion recorded lowercase=False" in check.detail


def test_uncased_vocab_without_lowercasing_fails_tokenizer(copy):
    _edit_json(copy / "tokenizer_config.json", lambda c: c.update(do_lower_case=False))
    _edit_json(copy / "tokenizer.json", lambda t: _bert_normalizer(t).update(lowercase=False))
    _drop_manifest(copy)
    check = _check(verify(copy), "tokenizer")
    assert check.status == "fail"
    assert "the vocab is uncased, but" in check.detail and "'JEG' gives ['[UNK]']" in check.detail
    assert "'Ø' -> 'Ø', expected 'ø'" in check.detail


@pytest.mark.parametrize(("a", "b"), [("jeg", "bor"), ("##e", "##r")])
def test_swapped_ids_in_tokenizer_json_fail_tokenizer(copy, a, b):
    def swap(t):
        v = t["model"]["vocab"]
        v[a], v[b] = v[b], v[a]

    _edit_json(copy / "tokenizer.json", swap)
    r = _cli_verify(copy)
    assert r.exit_code == 6 and r.stderr.strip() == f"error: {copy}: failed checks: tokenizer"
    check = _check(verify(copy), "tokenizer")
    ids = {t: i for i, t in enumerate(VOCAB)}
    assert check.status == "fail"
    assert (f"2 tokens have another id in tokenizer.json than in vocab.txt, e.g. {a!r}: "
            f"{ids[b]}, line {ids[a] + 1} says {ids[a]}") in check.detail  # fmt: skip
    if not a.startswith("##"):  # and the whole-word check sees the same
        assert f"{a!r} gives ['{a}'] [{ids[b]}], not [{ids[a]}]" in check.detail


# --- a config.json edited after conversion -------------------------------------------------

_VERIFY_LIMITED = """
import json, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from click.testing import CliRunner
from danbert_convert.cli import cli
results = []
for folder in json.loads(sys.argv[1]):
    r = CliRunner().invoke(cli, ["-q", "verify", folder])
    results.append({"code": r.exit_code, "output": r.output,
                    "exception": None if isinstance(r.exception, SystemExit)
                    else repr(r.exception)})
print(json.dumps(results))
"""

EDITED_CONFIGS = [  # (release, key, value, what the files check says)
    ("full", "num_hidden_layers", 10**9,
     "config.json has num_hidden_layers 1000000000, model.safetensors has 2 (encoder.layer.N)"),
    ("full", "num_labels", 10**9, "config.json has num_labels 1000000000, more than any size in "
     "model.safetensors (40), which has no classifier"),
    ("classifier", "num_labels", 10**6, "config.json has num_labels 1000000, model.safetensors "
     "has 3 (classifier.weight)"),
    ("full", "vocab_size", 10**12, "config.json has vocab_size 1000000000000, model.safetensors "
     "has 40 (bert.embeddings.word_embeddings.weight)"),
    ("full", "max_position_embeddings", 10**12, "config.json has max_position_embeddings "
     "1000000000000, model.safetensors has 32 (bert.embeddings.position_embeddings.weight)"),
    ("full", "intermediate_size", 31, "config.json has intermediate_size 31, model.safetensors "
     "has 32 (bert.encoder.layer.0.intermediate.dense.weight)"),
    ("full", "hidden_size", "16", "config.json: key 'hidden_size' missing or not an integer"),
    ("full", "num_hidden_layers", -1, "config.json: num_hidden_layers is -1; it must be a "
     "positive integer"),
]  # fmt: skip


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS as Linux enforces it")
def test_edited_config_sizes_fail_files_in_bounded_memory(release, tmp_path):
    """transformers builds what config.json says: 10**9 layers hung verify, 10**9 labels took
    it to the OOM killer. Each is a failed files check, found before transformers loads."""
    sources = {"full": release("full"), "classifier": release("classifier", heads=("classifier",))}
    models = {}
    for name, src in sources.items():
        models[name] = tmp_path / f"model-{name}"
        convert(src, models[name])
    folders = []
    for i, (name, key, value, _) in enumerate(EDITED_CONFIGS):
        folder = tmp_path / f"edited-{i}"
        shutil.copytree(models[name], folder)
        _edit_json(folder / "config.json", lambda c, k=key, v=value: c.update({k: v}))
        folders.append(folder)
    before = {f: _tree(f) for f in folders}
    args = json.dumps([str(f) for f in folders])
    r = subprocess.run([sys.executable, "-c", _VERIFY_LIMITED, args], capture_output=True,
                       text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout.strip().splitlines()[-1])
    for folder, (*_, message), res in zip(folders, EDITED_CONFIGS, results, strict=True):
        assert res["code"] == 6 and res["exception"] is None, res
        assert "Traceback" not in res["output"], res
        files_line = next(line for line in res["output"].splitlines() if "files" in line)
        assert "FAIL" in files_line and message in files_line, (message, files_line)
        assert res["output"].strip().splitlines()[-1] == f"error: {folder}: failed checks: files"
        assert _tree(folder) == before[folder]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "danbert-manifest.json: expected a JSON object"),
        ('{"outputs": [1, 2]}', "danbert-manifest.json: 'outputs' is not an object"),
        ('{"source": 5}', "danbert-manifest.json: 'source' is not an object"),
        ('{"settings": "x"}', "danbert-manifest.json: 'settings' is not an object"),
        ('{"source": {"files": [1]}}', "danbert-manifest.json: source 'files' is not a list of "
         "objects with a 'path'"),
        ('{"source": {"root": 1}}', "danbert-manifest.json: source 'root' is not a string"),
        ('{"schema_version": "2"}', "danbert-manifest.json: 'schema_version' is not an integer"),
        ('{"source": {"checkpoint": 1}}', "danbert-manifest.json: source 'checkpoint' is not a "
         "string"),
        # parity said "--part 5 does not apply to a BERT checkpoint": no --part was given
        ('{"settings": {"part": 5}}', "danbert-manifest.json: settings 'part' is not a string"),
        ('{"settings": {"part": ["generator"]}}', "danbert-manifest.json: settings 'part' is not "
         "a string"),
    ],
)  # fmt: skip
def test_malformed_manifest_is_a_one_line_input_error(copy, text, message):
    """A manifest of the wrong shape failed three checks with AttributeErrors (or, as a list,
    was ignored: no hash check, no parity, exit 0)."""
    (copy / "danbert-manifest.json").write_text(text)
    r = _cli_verify(copy)
    assert r.exit_code == 3, r.output
    assert (
        r.stderr.strip() == f"error: {copy / 'danbert-manifest.json'}: {message.split(': ', 1)[1]}"
    )


def test_tokenizer_class_without_segments_fails_tokenizer(copy):
    """An edited tokenizer_class makes AutoTokenizer fall back to a generic tokenizer with no
    token_type_ids: the tokenizer check passed, and parity died on KeyError 'token_type_ids'."""

    def edit(c):
        c.update(tokenizer_class="os.system")
        del c["model_input_names"]  # which keeps the generic class giving them

    _edit_json(copy / "tokenizer_config.json", edit)
    r = _cli_verify(copy)
    assert r.exit_code == 6, r.output
    assert "Traceback" not in r.output
    report = verify(copy)
    tokenizer, parity = _check(report, "tokenizer"), _check(report, "parity")
    assert tokenizer.status == "fail"
    assert "a sentence pair gets no token_type_ids of 1 from " in tokenizer.detail
    assert "tokenizer_config.json's tokenizer_class is 'os.system'" in tokenizer.detail
    assert parity.status == "fail" and parity.detail.endswith("gives no token_type_ids")


@pytest.mark.parametrize(
    ("sentence", "figure", "detail"),
    [
        ("[MASK] og [MASK]", "several [MASK]", "sentence '[MASK] og [MASK]' has 2 [MASK]; "
         "fill-mask takes one"),
        ("jeg " * 40 + "[MASK]", "too long", "is 43 tokens, more than max_position_embeddings 32"),
    ],
)  # fmt: skip
def test_unusable_sentence_is_a_named_fill_mask_failure(good, sentence, figure, detail):
    """Two masks gave TypeError 'list indices must be integers', a long sentence a tensor size
    RuntimeError."""
    r = _cli_verify(good, "--sentence", sentence)
    assert r.exit_code == 6 and "Traceback" not in r.output
    smoke = _check(verify(good, sentences=(sentence,)), "fill-mask")
    assert (smoke.status, smoke.figure) == ("fail", figure)
    assert detail in smoke.detail


def test_source_found_through_the_relative_manifest_after_a_move(full_release, tmp_path):
    """The manifest records SRC relative to OUT: moving both together keeps it found."""
    before = tmp_path / "project"
    shutil.copytree(full_release, before / "checkpoints" / "danish")
    convert(before / "checkpoints" / "danish", before / "model")
    after = tmp_path / "moved"
    before.rename(after)
    assert _check(verify(after / "model"), "parity").status == "pass"
    # The checkpoint gone from there: parity is skipped, asking for --against.
    shutil.rmtree(after / "checkpoints")
    parity = _check(verify(after / "model"), "parity")
    assert parity.status == "skip" and "--against" in parity.detail


def test_schema_1_manifest_with_absolute_paths_still_finds_the_source(copy, full_release):
    """Manifests written before schema 2 (absolute paths, no schema_version) stay readable."""

    def to_schema_1(m):
        del m["schema_version"]
        s = m["source"]
        del s["root"]
        for key in ("checkpoint", "config", "vocab"):
            s[key] = str((full_release / s[key]).resolve())
        for f in s["files"]:
            f["path"] = str((full_release / f["path"]).resolve())

    _edit_json(copy / "danbert-manifest.json", to_schema_1)
    assert _check(verify(copy), "parity").status == "pass"
    r = _cli_verify(copy)
    assert r.exit_code == 0, r.output


def test_no_recorded_source_root_needs_against(copy, full_release):
    _edit_json(copy / "danbert-manifest.json", lambda m: m["source"].update(root=None))
    parity = _check(verify(copy), "parity")
    assert parity.status == "skip" and "--against" in parity.detail
    assert _check(verify(copy, against=full_release), "parity").status == "pass"


# --- the reference computed on a worker thread (issue 11) -----------------------------------


def _workers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("danbert-verify")]


def test_parity_uses_the_workers_reference_only_for_the_same_inputs(copy, full_release, caplog):
    """A worker thread computes the reference on inputs from tokenizer.json alone while
    transformers loads; parity uses it only if AutoTokenizer gives the model the same inputs,
    and otherwise computes its own, which catches a fault as well."""
    caplog.set_level(logging.DEBUG, logger="danbert_convert.stages.verify")
    assert _check(verify(copy), "parity").status == "pass"
    assert "the worker computed the reference on these inputs" in caplog.text
    assert not _workers()
    # AutoTokenizer follows tokenizer_config.json, tokenizer.json alone does not: transformers
    # 5's BertTokenizer rebuilds the normaliser from do_lower_case, which gives other ids.
    _edit_json(
        copy / "tokenizer_config.json",
        lambda c: c.update(tokenizer_class="BertTokenizer", do_lower_case=False),
    )
    _edit_weights(copy, _bump("bert.encoder.layer.0.output.dense.weight"))
    _drop_manifest(copy)
    caplog.clear()
    parity = _check(verify(copy, against=full_release), "parity")
    assert "computing the reference again" in caplog.text
    assert "the worker computed the reference" not in caplog.text
    assert parity.status == "fail" and parity.data["diverges_at"] == "layer_0"
    assert not _workers()


def test_tensorflow_reader_computes_the_reference_on_the_main_thread(good, caplog):
    """The TF reader stays off the worker thread (importing TensorFlow in one thread while torch
    imports in another is nothing either library promises to support); the check named it
    "tf", which no reader is called, so TensorFlow ran on the worker."""
    pytest.importorskip("tensorflow")
    caplog.set_level(logging.DEBUG, logger="danbert_convert.stages.verify")
    assert _check(verify(good, reader="tensorflow"), "parity").status == "pass"
    assert "the worker computed the reference" not in caplog.text
    caplog.clear()
    assert _check(verify(good, reader="native"), "parity").status == "pass"
    assert "the worker computed the reference on these inputs" in caplog.text


def test_worker_ends_with_verify_when_checks_fail_early(copy):
    (copy / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    report = verify(copy)
    assert _statuses(report)["parity"] == "skip"
    assert not _workers()


def test_process_leaves_after_verify_with_its_code_its_output_and_exit_handlers(
    good: Path, copy: Path, tmp_path: Path
) -> None:
    """__main__ skips the interpreter's teardown of torch once verify is done: the exit status,
    every line of stdout (a pipe to a file) and the exit handlers must all still be there."""
    marker = tmp_path / "atexit-ran"
    script = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
        "sys.argv = ['danbert', *sys.argv[1:]]\n"
        "from danbert_convert.__main__ import main\n"
        "main()\n"
    )
    (copy / "config.json").write_text(
        (copy / "config.json").read_text().replace('"gelu"', '"relu"')
    )
    for folder, code in ((good, 0), (copy, 6)):
        marker.unlink(missing_ok=True)
        with open(tmp_path / "stdout", "w") as stdout:
            args = [sys.executable, "-c", script, "-q", "verify", str(folder)]
            r = subprocess.run(args, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=600)
        lines = (tmp_path / "stdout").read_text().splitlines()
        assert r.returncode == code, r.stderr
        assert lines[0] == f"{folder}:" and len(lines) == 7, lines
        assert lines[-1] == ("all checks passed" if code == 0 else "verification FAILED"), lines
        assert marker.read_text() == "yes"

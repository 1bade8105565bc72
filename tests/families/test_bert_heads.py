"""--heads auto|all|mlm|none (issue 13 item 6): the class written, what is left out and why,
what transformers and verify make of each, and the one-line errors for what cannot be."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import sample_inputs, tf_reference
from tfckpt import TINY_CONFIG, bert_variables, with_training_state, write_release
from zips import zip_folder

from danbert_convert.cli import cli
from danbert_convert.families.bert import ARCHITECTURES, HEADS, architecture
from danbert_convert.readers.tensorflow import TensorFlowReader
from danbert_convert.stages.convert import convert
from danbert_convert.stages.verify import verify
from danbert_convert.stages.workflow import run_all

TOL = 1e-5
# The fixtures' checkpoints by the heads they hold (names shared with the other test files).
RELEASES = {"full": ("mlm", "nsp"), "mlm": ("mlm",), "nsp": ("nsp",), "noheads": ()}
HEAD_VARIABLES = {
    "mlm": [
        "cls/predictions/transform/dense/kernel", "cls/predictions/transform/dense/bias",
        "cls/predictions/transform/LayerNorm/gamma", "cls/predictions/transform/LayerNorm/beta",
        "cls/predictions/output_bias",
    ],
    "nsp": ["cls/seq_relationship/output_weights", "cls/seq_relationship/output_bias"],
}  # fmt: skip
POOLER = ["bert/pooler/dense/kernel", "bert/pooler/dense/bias"]


def _src(release, name: str) -> Path:
    return release(name, heads=RELEASES[name])


@contextmanager
def transformers_warnings() -> Iterator[list[str]]:
    """What transformers logs at warning level meanwhile: its load report among them."""
    from transformers.utils import logging as hf_logging

    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("transformers")
    handler = Collect(logging.WARNING)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        hf_logging.set_verbosity(verbosity)


def _load_cleanly(cls_name: str, out: Path):
    """Load with `cls_name`: no key missing (newly initialised), unexpected or mismatched,
    and no load report logged."""
    import transformers

    with transformers_warnings() as said:
        model, info = getattr(transformers, cls_name).from_pretrained(out, output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(kind), (cls_name, kind, info[kind])
    assert not [m for m in said if "LOAD REPORT" in m], said
    return model.eval()


def _close(got, want) -> None:
    diff = float(np.max(np.abs(got.detach().numpy() - want)))
    assert diff <= TOL, diff


def _outputs(model, arch_name: str) -> dict[str, object]:
    """What the class computes on the sample inputs, through transformers' own forward."""
    import torch

    ids, types, mask = sample_inputs(TINY_CONFIG)
    inputs = {"input_ids": torch.tensor(ids), "token_type_ids": torch.tensor(types),
              "attention_mask": torch.tensor(mask)}  # fmt: skip
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        got = {"sequence": out.hidden_states[-1]}
        if arch_name == "BertModel":
            got["pooled"] = out.pooler_output
        elif arch_name == "BertForPreTraining":
            got["pooled"] = model.bert(**inputs).pooler_output
            got["mlm"], got["nsp"] = out.prediction_logits, out.seq_relationship_logits
        elif arch_name == "BertForMaskedLM":
            got["mlm"] = out.logits
        elif arch_name == "BertForNextSentencePrediction":
            got["pooled"] = model.bert(**inputs).pooler_output
            got["nsp"] = out.logits
    return got


OK_CASES = [
    ("full", "auto", "BertForPreTraining"),
    ("full", "all", "BertForPreTraining"),
    ("full", "mlm", "BertForMaskedLM"),
    ("full", "none", "BertModel"),
    ("mlm", "auto", "BertForMaskedLM"),
    ("mlm", "mlm", "BertForMaskedLM"),
    ("mlm", "none", "BertModel"),
    ("nsp", "auto", "BertForNextSentencePrediction"),
    ("nsp", "none", "BertModel"),
    ("noheads", "auto", "BertModel"),
    ("noheads", "none", "BertModel"),
]


@pytest.mark.parametrize(
    ("name", "heads", "arch"), OK_CASES, ids=[f"{n}-{h}" for n, h, _ in OK_CASES]
)
def test_each_choice_converts_loads_computes_and_verifies(release, tmp_path, name, heads, arch):
    src = _src(release, name)
    out = tmp_path / "m"
    result = convert(src, out, heads=heads)
    assert result.architecture == arch
    assert json.loads((out / "config.json").read_text())["architectures"] == [arch]

    # transformers: the class named loads with nothing missing or left over, and computes
    # what the TF variables compute for every output it has.
    model = _load_cleanly(arch, out)
    ref = tf_reference(src, TINY_CONFIG)
    want = {"sequence": ref.sequence, "pooled": ref.pooled, "mlm": ref.mlm_logits,
            "nsp": ref.nsp_logits}  # fmt: skip
    got = _outputs(model, arch)
    assert set(got) == set(architecture(arch).outputs)
    for key, value in got.items():
        _close(value, want[key])
    if arch == "BertModel":
        _load_cleanly("AutoModel", out)  # no "unexpected cls.*" report

    # The manifest: the setting, and every variable either written or skipped with a reason.
    m = json.loads((out / "danbert-manifest.json").read_text())
    assert m["settings"]["heads"] == heads and m["architecture"] == arch
    names = set(TensorFlowReader(src / "bert_model.ckpt").variables())
    written = {t["source"] for t in m["tensors"]}
    skipped = {s["name"]: s["reason"] for s in m["skipped"]}
    assert written | set(skipped) == names and not written & set(skipped)
    left_out = {n for n in names if n not in written and "/adam_" not in n} - {"global_step"}
    kept_heads = {h for h in ("mlm", "nsp") if h in architecture(arch).outputs}
    expect_out = {v for h in RELEASES[name] if h not in kept_heads for v in HEAD_VARIABLES[h]}
    if not architecture(arch).pooler:
        expect_out |= set(POOLER)
    assert left_out == expect_out
    for variable in left_out:
        if heads == "auto":
            assert skipped[variable] == f"pooler, which {arch} does not have"
        else:
            assert skipped[variable].startswith(f"not written: --heads {heads}: {arch} has no ")

    # verify compares exactly the outputs the class has, and passes.
    report = verify(out)
    assert report.ok, report.table()
    parity = next(c for c in report.checks if c.name == "parity")
    assert set(parity.data["outputs"]) == set(architecture(arch).outputs)
    smoke = next(c for c in report.checks if c.name == "fill-mask")
    assert smoke.status == ("info" if "mlm" in architecture(arch).heads else "skip")


def test_reasons_name_the_choice_and_what_the_class_lacks(release, tmp_path):
    result = convert(_src(release, "full"), tmp_path / "m", heads="mlm")
    assert result.skipped["bert/pooler/dense/kernel"] == (
        "not written: --heads mlm: BertForMaskedLM has no pooler"
    )
    assert result.skipped["cls/seq_relationship/output_bias"] == (
        "not written: --heads mlm: BertForMaskedLM has no next-sentence head"
    )
    result = convert(_src(release, "full"), tmp_path / "n", heads="none")
    assert result.skipped["cls/predictions/output_bias"] == (
        "not written: --heads none: BertModel has no masked-LM head"
    )
    assert not any("no cls/* heads" in w for w in result.warnings)  # asked for, not a surprise


def test_capture_sees_the_load_report_of_a_model_with_heads(release, tmp_path):
    """The control for _load_cleanly: AutoModel on a pre-training folder reports cls.*."""
    import transformers

    convert(_src(release, "full"), tmp_path / "m")
    with transformers_warnings() as said:
        _, info = transformers.AutoModel.from_pretrained(tmp_path / "m", output_loading_info=True)
    assert {k for k in info["unexpected_keys"] if k.startswith("cls.")}
    assert any("LOAD REPORT" in m and "cls.predictions.bias" in m for m in said), said


ERROR_CASES = [
    ("noheads", "all", "BertForPreTraining", ("mlm", "nsp"), "masked-LM and next-sentence heads"),
    ("mlm", "all", "BertForPreTraining", ("nsp",), "next-sentence head"),
    ("nsp", "all", "BertForPreTraining", ("mlm",), "masked-LM head"),
    ("noheads", "mlm", "BertForMaskedLM", ("mlm",), "masked-LM head"),
    ("nsp", "mlm", "BertForMaskedLM", ("mlm",), "masked-LM head"),
]


@pytest.mark.parametrize(
    ("name", "heads", "arch", "missing", "what"), ERROR_CASES,
    ids=[f"{c[0]}-{c[1]}" for c in ERROR_CASES],
)  # fmt: skip
def test_missing_head_is_one_line_exit_3_naming_its_variables(
    release, tmp_path, name, heads, arch, missing, what
):
    src = _src(release, name)
    out = tmp_path / "m"
    r = CliRunner().invoke(cli, ["convert", str(src), str(out), "--heads", heads])
    assert r.exit_code == 3, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output
    names = ", ".join(v for h in missing for v in HEAD_VARIABLES[h])
    assert lines[0] == (
        f"error: {src / 'bert_model.ckpt'}.index: --heads {heads} writes {arch}, but the "
        f"checkpoint has no {what}: {names} missing"
    )
    assert not out.exists()
    assert not list(tmp_path.iterdir())  # no partial folder beside it either


def test_none_without_a_pooler_names_it(release, tmp_path):
    """A checkpoint of a BertForMaskedLM (no pooler) has no BertModel in it: one line."""
    variables = bert_variables(TINY_CONFIG, heads=("mlm",))
    for name in POOLER:
        del variables[name]
    src = write_release(tmp_path / "src", variables=with_training_state(variables))
    assert convert(src, tmp_path / "auto").architecture == "BertForMaskedLM"
    r = CliRunner().invoke(cli, ["convert", str(src), str(tmp_path / "m"), "--heads", "none"])
    assert r.exit_code == 3, r.output
    assert r.stderr.strip() == (
        f"error: {src / 'bert_model.ckpt'}.index: missing variable bert/pooler/dense/kernel "
        "(needed for pooler.dense.weight of BertModel)"
    )
    assert not (tmp_path / "m").exists()


def test_all_keeps_a_fine_tuned_checkpoint_s_own_head(release, tmp_path):
    """`all` is every head of the checkpoint's class: a classifier has its one."""
    result = convert(release("classifier", heads=("classifier",)), tmp_path / "m", heads="all")
    assert result.architecture == "BertForSequenceClassification"
    result = convert(release("classifier", heads=("classifier",)), tmp_path / "n", heads="none")
    assert result.architecture == "BertModel"
    assert result.skipped["output_weights"] == (
        "not written: --heads none: BertModel has no classifier head"
    )
    config = json.loads((tmp_path / "n" / "config.json").read_text())
    assert "id2label" not in config and "num_labels" not in config
    _load_cleanly("AutoModel", tmp_path / "n")
    # The left-out head is not compared, nor sized by config.json's default of 2 labels.
    report = verify(tmp_path / "n")
    assert report.ok, report.table()
    parity = next(c for c in report.checks if c.name == "parity")
    assert set(parity.data["outputs"]) == {"sequence", "pooled"}


def test_cli_heads_choice_and_summary(release, tmp_path):
    r = CliRunner().invoke(
        cli, ["convert", str(_src(release, "full")), str(tmp_path / "m"), "--heads", "none"]
    )
    assert r.exit_code == 0, r.output
    assert "BertModel, 39 tensors" in r.stdout
    assert "skipped 5 (not written: --heads none: BertModel has no masked-LM head)" in r.stdout
    assert "skipped 2 (not written: --heads none: BertModel has no next-sentence head)" in r.stdout
    bad = CliRunner().invoke(cli, ["convert", "SRC", str(tmp_path / "x"), "--heads", "nsp"])
    assert bad.exit_code == 2 and "Invalid value for '--heads'" in bad.output
    with pytest.raises(ValueError, match="heads must be one of"):
        convert(_src(release, "full"), tmp_path / "y", heads="nsp")


def test_table_matches_transformers_classes():
    """Each class in the table has a pooler and head modules exactly as the table says."""
    import transformers

    config = transformers.BertConfig(**{**TINY_CONFIG, "num_labels": 3})
    for arch in ARCHITECTURES:
        model = getattr(transformers, arch.name)(config)
        assert (model.base_model.pooler is not None) == arch.pooler, arch.name
        for head in HEADS:
            for module in head.modules:
                try:
                    model.get_submodule(module)
                    has = True
                except AttributeError:
                    has = False
                assert has == (head.group in arch.heads), (arch.name, module)
        prefixed = any(k.startswith("bert.") for k in model.state_dict())
        assert prefixed == arch.prefixed, arch.name


# --- danbert all ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def release_zip(full_release, tmp_path_factory) -> Path:
    z = tmp_path_factory.mktemp("zips") / "danish_bert_uncased_v2.zip"
    return zip_folder(full_release, z, top="danish_bert_uncased_v2")


def _all(zip_path: Path, work: Path, out: Path, *args: str):
    r = CliRunner().invoke(cli, ["all", "--from", str(zip_path), "--dest", str(work),
                                 "--out", str(out), *args])  # fmt: skip
    assert r.exit_code == 0, r.output
    return r


def test_all_reconverts_when_the_heads_differ(release_zip, tmp_path):
    work, out = tmp_path / "w", tmp_path / "model"
    _all(release_zip, work, out)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForPreTraining"]
    r = _all(release_zip, work, out, "--heads", "none")
    assert "convert  skipped" not in r.stdout and "verify   skipped" not in r.stdout
    assert "BertModel ready in" in r.stdout
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertModel"]
    assert json.loads((out / "danbert-manifest.json").read_text())["settings"]["heads"] == "none"
    assert json.loads((out / "danbert-verify.json").read_text())["ok"]
    _load_cleanly("AutoModel", out)
    again = _all(release_zip, work, out, "--heads", "none")
    assert "convert  skipped" in again.stdout and "verify   skipped" in again.stdout
    back = _all(release_zip, work, out)  # auto again: the heads come back
    assert "convert  skipped" not in back.stdout
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForPreTraining"]


def test_all_takes_a_manifest_without_heads_as_auto(release_zip, tmp_path):
    """Folders converted before --heads existed are not converted again for it."""
    work, out = tmp_path / "w", tmp_path / "model"
    run_all(from_path=release_zip, dest=work, out=out)
    path = out / "danbert-manifest.json"
    m = json.loads(path.read_text())
    del m["settings"]["heads"]
    path.write_text(json.dumps(m))
    result = run_all(from_path=release_zip, dest=work, out=out)
    assert {s.stage: s.skipped for s in result.stages}["convert"] is True
    result = run_all(from_path=release_zip, dest=work, out=out, heads="mlm")
    assert {s.stage: s.skipped for s in result.stages}["convert"] is False
    assert result.architecture == "BertForMaskedLM"


def test_all_fails_for_a_missing_head_leaving_no_out(release, tmp_path):
    src = release("noheads", heads=())
    z = zip_folder(src, tmp_path / "bare.zip", top="bare")
    out = tmp_path / "model"
    r = CliRunner().invoke(cli, ["-q", "all", "--from", str(z), "--dest", str(tmp_path / "w"),
                                 "--out", str(out), "--heads", "mlm"])  # fmt: skip
    assert r.exit_code == 3, r.output
    (line,) = r.stderr.strip().splitlines()
    assert (
        line.startswith("error: convert stage: ") and "--heads mlm writes BertForMaskedLM" in line
    )
    assert "cls/predictions/output_bias" in line
    assert not out.exists()


def test_unsupported_heads_name_the_choices_that_convert(tmp_path):
    """An MLM head beside a classifier makes no transformers class; --heads mlm and none do."""
    variables = with_training_state(bert_variables(TINY_CONFIG, heads=("mlm", "classifier")))
    src = write_release(tmp_path / "src", variables=variables)
    r = CliRunner().invoke(cli, ["convert", str(src), str(tmp_path / "m")])
    assert r.exit_code == 3, r.output
    assert r.stderr.strip() == (
        f"error: {src / 'bert_model.ckpt'}.index: unsupported combination of output heads "
        "(classifier, mlm); --heads mlm or none writes a part of it"
    )
    for heads in ("mlm", "none"):
        r = CliRunner().invoke(cli, ["convert", str(src), str(tmp_path / heads), "--heads", heads])
        assert r.exit_code == 0, r.output

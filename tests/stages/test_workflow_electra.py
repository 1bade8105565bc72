"""`danbert all` on an ELECTRA release (issue 14): Ælæctra's layout (two variants in one zip, the
vocab in the data folder above the checkpoints), each part converted and verified, reruns
skipped, a changed --part converted again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tfckpt import VOCAB
from tfckpt_electra import write_release
from zips import make_zip

from danbert_convert.cli import cli
from danbert_convert.stages.workflow import run_all


@pytest.fixture(scope="module")
def aelaectra_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both variants as ELECTRA's run_pretraining leaves a data folder: DATA/vocab.txt and the
    checkpoints (with Adam slots) in DATA/models/NAME/."""
    root = tmp_path_factory.mktemp("aelaectra-all")
    for seed, casing in enumerate(("cased", "uncased")):
        data = root / "tree" / "Ælæctra" / f"ælæctra_{casing}_32k"
        models = data / "models" / f"ælæctra_{casing}_32k"
        write_release(models, seed=seed)
        (models / "vocab.txt").unlink()
        vocab = VOCAB if casing == "uncased" else [t.capitalize() if t.isalpha() else t
                                                   for t in VOCAB]  # fmt: skip
        (data / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    files = sorted(p for p in (root / "tree").rglob("*") if p.is_file())
    entries = [(p.relative_to(root / "tree").as_posix(), p.read_bytes()) for p in files]
    return make_zip(root / "aelaectra.zip", entries)


def test_all_converts_and_verifies_each_part_then_skips(aelaectra_zip, tmp_path):
    out = tmp_path / "model"
    common = {"dest": tmp_path / "work", "out": out, "from_path": aelaectra_zip, "progress": False}
    first = run_all("aelaectra-danish-uncased", **common)
    assert first.architecture == "ElectraForPreTraining"
    assert first.report is not None and first.report.ok
    manifest = json.loads((out / "danbert-manifest.json").read_text())
    assert manifest["settings"]["part"] == "discriminator"
    assert manifest["source"]["vocab"] == "../../vocab.txt"  # the data folder's
    assert manifest["source"]["config"] is None
    # Ælæctra's tokenizer kept every accent: the registry says so, convert follows.
    assert manifest["settings"]["strip_accents"] is False
    card = (out / "README.md").read_text("utf-8")
    assert "license: mit" in card and "- electra" in card

    again = run_all("aelaectra-danish-uncased", **common)
    assert [s.skipped for s in again.stages] == [True, True, True]

    gen = run_all("aelaectra-danish-uncased", part="generator", **common)
    assert [s.skipped for s in gen.stages][:2] == [True, False]  # a new part: converted again
    assert gen.architecture == "ElectraForMaskedLM"
    fill = {c.name: c for c in gen.report.checks}["fill-mask"]
    assert fill.status == "info"


def test_cli_all_names_the_part(aelaectra_zip, tmp_path):
    r = CliRunner().invoke(cli, ["all", "aelaectra-danish-cased", "--from", str(aelaectra_zip),
                                 "--dest", str(tmp_path / "w"), "--out", str(tmp_path / "m"),
                                 "--part", "generator", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["architecture"] == "ElectraForMaskedLM"
    config = json.loads((tmp_path / "m" / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is False  # the cased variant's vocab: cased

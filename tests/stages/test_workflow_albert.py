"""`danbert all` on an ALBERT release (issue 15): a .tar.gz laid out as Google's (albert_base/
with model.ckpt-best.*, albert_config.json, 30k-clean.model), fetched from a local file,
converted with its SentencePiece tokenizer and verified; a rerun skips every stage."""

from __future__ import annotations

import json

from spm import train_spm
from tfckpt_albert import TINY_ALBERT, write_release
from zips import tar_folder

from danbert_convert.stages.workflow import run_all


def test_all_on_an_albert_tarball(tmp_path):
    model = train_spm(tmp_path / "spm", vocab_size=400)
    folder = write_release(tmp_path / "albert_base", {**TINY_ALBERT, "vocab_size": 400},
                           spm_model=model)  # fmt: skip
    tgz = tar_folder(folder, tmp_path / "albert_base_v2.tar.gz", "albert_base")
    common = {"dest": tmp_path / "work", "out": tmp_path / "model", "from_path": tgz,
              "progress": False}  # fmt: skip
    first = run_all("albert-base-v2", **common)
    assert first.architecture == "AlbertForPreTraining"
    assert first.report is not None and first.report.ok, first.report.table()
    card = (tmp_path / "model" / "README.md").read_text("utf-8")
    assert "license: apache-2.0" in card and "- albert" in card
    manifest = json.loads((tmp_path / "model" / "danbert-manifest.json").read_text())
    assert manifest["source"]["vocab"] == "30k-clean.model"
    again = run_all("albert-base-v2", **common)
    assert [s.skipped for s in again.stages] == [True, True, True]

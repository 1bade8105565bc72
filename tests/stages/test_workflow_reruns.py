"""`danbert all` over an existing model folder: what a rerun keeps, redoes and records (each
case found by review, 2026-12-01)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from click.testing import CliRunner

from danbert_convert.cli import cli

SAMPLE = "danish-bert-sample"


def _all(*args: str):
    r = CliRunner().invoke(cli, ["-q", "all", *args])
    assert r.exit_code == 0, r.output
    return r


def test_all_rerun_keeps_the_users_other_files_in_out(tmp_path: Path) -> None:
    """A model folder is published with git: a rerun of `all` (no --force) with other settings
    must not delete OUT/.git, .gitattributes or the user's notes."""
    work, out = tmp_path / "work", tmp_path / "model"
    _all(SAMPLE, "--dest", str(work), "--out", str(out))
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (out / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (out / "NOTES.md").write_text("mine\n")
    _all(SAMPLE, "--dest", str(work), "--out", str(out), "--heads", "none")
    assert (out / ".git" / "HEAD").is_file()
    assert (out / ".gitattributes").is_file()
    assert (out / "NOTES.md").read_text() == "mine\n"


def test_all_rerun_without_hidden_act_drops_the_earlier_override(tmp_path: Path) -> None:
    """Without --hidden-act the asked activation is bert_config.json's ("gelu"): a folder
    converted earlier with --hidden-act gelu_new is not the conversion asked for."""
    work, out = tmp_path / "work", tmp_path / "model"
    _all(SAMPLE, "--dest", str(work), "--out", str(out), "--hidden-act", "gelu_new")
    _all(SAMPLE, "--dest", str(work), "--out", str(out))
    assert json.loads((out / "config.json").read_text())["hidden_act"] == "gelu"


def test_naming_the_release_after_an_unnamed_from_credits_it(tmp_path: Path) -> None:
    """The card for an unnamed --from says: `danbert all NAME --from FILE.zip` writes a card
    that credits it. Over the existing folder, it does not (convert is skipped)."""
    work = tmp_path / "work"
    _all(SAMPLE, "--dest", str(work), "--out", str(tmp_path / "sample"))
    # The sample's checkpoint in the layout of a registry release without a known SHA-256.
    z = tmp_path / "danish_bert_uncased_v2.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted((work / "danish_bert_sample").iterdir()):
            zf.write(f, f"danish_bert_uncased_v2/{f.name}")
    out, work2 = tmp_path / "model", tmp_path / "work2"
    _all("--from", str(z), "--dest", str(work2), "--out", str(out))
    assert "license: unknown" in (out / "README.md").read_text()
    _all("danish-bert-uncased-v2", "--from", str(z), "--dest", str(work2), "--out", str(out))
    text = (out / "README.md").read_text()
    assert "license: unknown" not in text, text[:400]


def test_published_folder_holds_no_absolute_path(tmp_path: Path) -> None:
    """OUT is published as it is: no file in it may record where it lived on this machine."""
    out = tmp_path / "model"
    _all(SAMPLE, "--dest", str(tmp_path / "work"), "--out", str(out.resolve()))
    for f in out.iterdir():
        if f.suffix in (".json", ".md", ".txt"):
            assert str(tmp_path) not in f.read_text("utf-8"), f.name
    shutil.rmtree(out)


def test_printed_python_lines_are_python_for_any_path(tmp_path: Path) -> None:
    """`all` ends with two lines of Python to copy; a Windows path (C:\\Users\\...) or a path
    with a quote must still be a string literal of that path."""
    from danbert_convert.stages.workflow import AllResult

    for name in ("C:\\Users\\alice\\danish-bert", 'my "model"'):
        out = tmp_path / name
        namespace: dict[str, object] = {}
        code = AllResult(out, tmp_path, "BertModel").python_lines()
        code = code.replace("AutoTokenizer.from_pretrained", "str").replace(
            "AutoModel.from_pretrained", "str"
        )
        exec(compile(code, "<printed>", "exec"), namespace)
        assert namespace["model"] == str(out.resolve())


def test_release_named_with_an_unpacked_from_folder_is_credited(tmp_path: Path) -> None:
    """`danbert all NAME --from FOLDER/` names the release as clearly as with a zip: the card
    must carry its licence and credits, not "unknown"."""
    work = tmp_path / "work"
    _all(SAMPLE, "--dest", str(work), "--out", str(tmp_path / "sample"))
    folder = tmp_path / "danish_bert_uncased_v2"
    shutil.copytree(work / "danish_bert_sample", folder)
    out = tmp_path / "model"
    _all("danish-bert-uncased-v2", "--from", str(folder), "--dest", str(tmp_path / "w2"),
         "--out", str(out))  # fmt: skip
    text = (out / "README.md").read_text()
    assert "license: unknown" not in text, text[:400]

"""danbert all: fetch -> convert -> verify against a local server, idempotent, failure-safe."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from httpserver import Behaviour, Server
from zips import zip_folder

from danbert_convert.cli import cli
from danbert_convert.errors import InputError, OutputExistsError
from danbert_convert.stages.convert import convert
from danbert_convert.stages.workflow import public_url, run_all

pytestmark = pytest.mark.usefixtures("local_network")


@pytest.fixture(scope="module")
def release_zip(full_release, tmp_path_factory) -> Path:
    z = tmp_path_factory.mktemp("zips") / "danish_bert_uncased_v2.zip"
    return zip_folder(full_release, z, top="danish_bert_uncased_v2", junk=True)


def test_end_to_end_then_idempotent(release_zip, tmp_path):
    from transformers import AutoModel, AutoTokenizer, pipeline

    work, out = tmp_path / "work", tmp_path / "model"
    with Server() as server:
        url = server.route("/danish.zip", Behaviour(file=release_zip))
        args = ["all", "--url", url, "--dest", str(work), "--out", str(out)]
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, r.output
        assert f"BertForPreTraining ready in {out.resolve()}" in r.output
        assert f'model = AutoModel.from_pretrained("{out.resolve()}")' in r.output
        requests_made = len(server.records)
        weights_mtime = (out / "model.safetensors").stat().st_mtime_ns
        saved = json.loads((out / "danbert-verify.json").read_text())
        assert saved["ok"]

        again = CliRunner().invoke(cli, args)
        assert again.exit_code == 0, again.output
        for stage in ("fetch", "convert", "verify"):
            assert f"{stage:<8} skipped" in again.output
        assert len(server.records) == requests_made  # nothing downloaded again
    assert (out / "model.safetensors").stat().st_mtime_ns == weights_mtime

    model = AutoModel.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.tokenize("Østerbro på") == ["østerbro", "på"]
    assert model.config.model_type == "bert"
    preds = pipeline("fill-mask", model=str(out))("jeg bor på [MASK].")
    assert len(preds) == 5 and all(p["token_str"] for p in preds)


def test_force_redoes_conversion(release_zip, tmp_path):
    out = tmp_path / "model"
    run_all(from_path=release_zip, dest=tmp_path / "w", out=out)
    first = (out / "model.safetensors").stat().st_mtime_ns
    result = run_all(from_path=release_zip, dest=tmp_path / "w", out=out, force=True)
    assert not any(s.skipped for s in result.stages if s.stage != "fetch")
    assert (out / "model.safetensors").stat().st_mtime_ns != first


def test_changed_activation_reconverts(release_zip, tmp_path):
    out = tmp_path / "model"
    run_all(from_path=release_zip, dest=tmp_path / "w", out=out)
    result = run_all(from_path=release_zip, dest=tmp_path / "w", out=out, hidden_act="gelu_new")
    assert [s.skipped for s in result.stages if s.stage == "convert"] == [False]
    assert json.loads((out / "config.json").read_text())["hidden_act"] == "gelu_new"


def test_convert_failure_keeps_download(release, tmp_path):
    bad = release("bad-config", config_overrides={"vocab_size": 30522})
    z = zip_folder(bad, tmp_path / "bad.zip", top="danish_bert_uncased_v2")
    work, out = tmp_path / "work", tmp_path / "model"
    with Server() as server:
        url = server.route("/bad.zip", Behaviour(file=z))
        with pytest.raises(InputError, match=r"^convert stage: vocab_size 30522 in "):
            run_all(urls=[url], dest=work, out=out)
        r = CliRunner().invoke(cli, ["all", "--url", url, "--dest", str(work), "--out", str(out)])
        assert r.exit_code == 3
        assert "error: convert stage: vocab_size 30522" in r.output
        assert len([rec for rec in server.records if rec.status == 200]) == 1
    assert (work / "bad.zip").is_file()
    assert (work / "danish_bert_uncased_v2" / "bert_config.json").is_file()  # unpacked, kept
    assert not out.exists()


def test_verify_failure_names_stage(release_zip, tmp_path):
    out = tmp_path / "model"
    with pytest.raises(Exception, match=r"^verify stage: .*failed checks: fill-mask"):
        run_all(from_path=release_zip, dest=tmp_path / "w", out=out, expect="zzz")
    assert (out / "model.safetensors").is_file()  # the conversion stays for the next run
    shutil.rmtree(out)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.joinpath("model.safetensors").write_bytes(
            p.joinpath("model.safetensors").read_bytes()[:1000]  # same name, truncated
        ),
        lambda p: p.joinpath("config.json").unlink(),
        lambda p: p.joinpath("tokenizer.json").write_text("{"),
    ],
    ids=["truncated-weights", "no-config", "broken-tokenizer"],
)
def test_damaged_output_is_converted_again(release_zip, tmp_path, damage):
    out, work = tmp_path / "model", tmp_path / "w"
    run_all(from_path=release_zip, dest=work, out=out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "danbert-verify.json"}
    damage(out)
    result = run_all(from_path=release_zip, dest=work, out=out)
    assert {s.stage: s.skipped for s in result.stages} == {
        "fetch": True, "convert": False, "verify": False,
    }  # fmt: skip
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "danbert-verify.json"}
    assert after.keys() == before.keys()
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert after[name] == before[name]


def test_unrelated_output_folder_is_not_replaced(release_zip, tmp_path):
    out = tmp_path / "documents"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    with pytest.raises(OutputExistsError, match=r"^convert stage: .*documents exists and is not"):
        run_all(from_path=release_zip, dest=tmp_path / "w", out=out)
    assert [p.name for p in out.iterdir()] == ["thesis.txt"]
    run_all(from_path=release_zip, dest=tmp_path / "w", out=out, force=True)
    assert (out / "model.safetensors").is_file() and not (out / "thesis.txt").exists()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("danbert-verify.json", "[1]"),
        ("danbert-manifest.json", "[]"),
        ("danbert-manifest.json", '{"source": 5}'),
        ("danbert-manifest.json", '{"source": {"config": 5}, "outputs": {}}'),
        ("danbert-manifest.json", '{"outputs": [1, 2]}'),
        ("danbert-manifest.json", '{"schema_version": 2, "source": {"files": [1]}}'),
    ],
)
def test_malformed_record_in_out_is_redone_not_a_traceback(release_zip, tmp_path, name, text):
    """A hand-edited record in OUT (valid JSON of the wrong shape) was an AttributeError
    traceback, exit 1; now the stage it records is simply done again."""
    work, out = tmp_path / "w", tmp_path / "model"
    run_all(from_path=release_zip, dest=work, out=out)
    (out / name).write_text(text)
    r = CliRunner().invoke(cli, ["all", "--from", str(release_zip), "--dest", str(work),
                                 "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "verify   skipped" not in r.output
    assert json.loads((out / "danbert-verify.json").read_text())["ok"]
    assert isinstance(json.loads((out / "danbert-manifest.json").read_text())["outputs"], dict)


def test_moved_project_still_skips_convert_and_verify(release_zip, tmp_path):
    """The manifest holds no absolute path: `all` recognises its conversion by the recorded
    SHA-256 of the checkpoint's small files, wherever the folders now are."""
    before, after = tmp_path / "a", tmp_path / "b"
    run_all(from_path=release_zip, dest=before / "w", out=before / "model")
    weights = (before / "model" / "model.safetensors").stat().st_mtime_ns
    before.rename(after)
    result = run_all(from_path=release_zip, dest=after / "w", out=after / "model")
    skipped = {s.stage: s.skipped for s in result.stages}
    assert skipped["convert"] and skipped["verify"], skipped
    assert (after / "model" / "model.safetensors").stat().st_mtime_ns == weights


def test_changed_checkpoint_file_reconverts(release_zip, tmp_path):
    """A source file that no longer matches its recorded SHA-256 means converting again."""
    work, out = tmp_path / "w", tmp_path / "model"
    result = run_all(from_path=release_zip, dest=work, out=out)
    config = result.checkpoint_dir / "bert_config.json"
    config.write_text(config.read_text().replace("{", '{"note": "edited", ', 1))
    result = run_all(from_path=release_zip, dest=work, out=out)
    assert [s.skipped for s in result.stages if s.stage == "convert"] == [False]
    m = json.loads((out / "danbert-manifest.json").read_text())
    recorded = {f["path"]: f.get("sha256") for f in m["source"]["files"]}
    assert recorded["bert_config.json"] == hashlib.sha256(config.read_bytes()).hexdigest()


def test_manifest_records_where_the_checkpoint_came_from(release_zip, tmp_path):
    """Provenance: the URL fetch downloaded from, the zip's name and SHA-256."""
    digest = hashlib.sha256(release_zip.read_bytes()).hexdigest()
    work, out = tmp_path / "w", tmp_path / "model"
    with Server() as server:
        url = server.route("/danish.zip", Behaviour(file=release_zip))
        run_all(urls=[url], dest=work, out=out)
    m = json.loads((out / "danbert-manifest.json").read_text())
    assert m["provenance"] == {
        "release": None, "url": url, "zip": "danish.zip", "zip_sha256": digest,
    }  # fmt: skip
    # A local zip: no URL, and no path of this machine either.
    out2 = tmp_path / "model2"
    run_all(from_path=release_zip, dest=tmp_path / "w2", out=out2)
    text = (out2 / "danbert-manifest.json").read_text()
    assert json.loads(text)["provenance"] == {
        "release": None, "url": None, "zip": release_zip.name, "zip_sha256": digest,
    }  # fmt: skip
    assert str(tmp_path) not in text and str(release_zip.parent) not in text
    # `danbert convert` of a folder knows nothing of where it came from.
    convert(work / "danish_bert_uncased_v2", tmp_path / "model3")
    assert (
        json.loads((tmp_path / "model3" / "danbert-manifest.json").read_text())["provenance"]
        is None
    )


@pytest.mark.parametrize(
    ("url", "public"),
    [
        (
            "https://user:secret@example.org:8443/a/r.zip?token=abc#x",
            "https://example.org:8443/a/r.zip",
        ),
        ("http://[::1]:8080/r.zip", "http://[::1]:8080/r.zip"),
        ("/home/alice/r.zip", None),
    ],
)
def test_public_url_drops_credentials_and_queries(url, public):
    assert public_url(url) == public

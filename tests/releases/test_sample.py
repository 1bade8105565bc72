"""The bundled sample release: its layout, its reproducibility, and the whole pipeline offline."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import danbert_convert
from danbert_convert.cli import cli
from danbert_convert.releases import registry

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(danbert_convert.__file__).resolve().parent.parent
NAME = "danish-bert-sample"
TOP = "danish_bert_sample"
FILES = [
    "bert_config.json",
    "bert_model.ckpt.data-00000-of-00001",
    "bert_model.ckpt.index",
    "bert_model.ckpt.meta",
    "checkpoint",
    "vocab.txt",
]
# The Danish v2 release's bert_config.json keys (mBERT-style pooler keys, no model_type).
DANISH_CONFIG_KEYS = {
    "attention_probs_dropout_prob", "directionality", "hidden_act", "hidden_dropout_prob",
    "hidden_size", "initializer_range", "intermediate_size", "max_position_embeddings",
    "num_attention_heads", "num_hidden_layers", "pooler_fc_size", "pooler_num_attention_heads",
    "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type", "type_vocab_size",
    "vocab_size",
}  # fmt: skip


def packaged_zip() -> bytes:
    release = registry.get_release(NAME)
    assert release.package_data is not None
    return resources.files("danbert_convert").joinpath(release.package_data).read_bytes()


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged zip extracted by zipfile (not by the code under test)."""
    root = tmp_path_factory.mktemp("sample")
    (root / "s.zip").write_bytes(packaged_zip())
    with zipfile.ZipFile(root / "s.zip") as zf:
        zf.extractall(root)
    return root / TOP


def test_registry_entry_is_a_sample_of_the_danish_release() -> None:
    release = registry.get_release(NAME)
    data = packaged_zip()
    assert release.sample_of == registry.DEFAULT_MODEL and release.urls == ()
    assert hashlib.sha256(data).hexdigest() == release.sha256
    assert len(data) == release.size <= 3 * 1024 * 1024
    assert registry.get_release(release.sample_of).filename == "danish_bert_uncased_v2.zip"


def test_zip_is_laid_out_as_the_danish_release() -> None:
    with zipfile.ZipFile(io.BytesIO(packaged_zip())) as zf:
        names = [i.filename for i in zf.infolist()]
    assert names == [f"{TOP}/"] + [f"{TOP}/{f}" for f in FILES]


def test_config_and_vocab(unpacked: Path) -> None:
    config = json.loads((unpacked / "bert_config.json").read_text())
    assert set(config) == DANISH_CONFIG_KEYS
    lines = (unpacked / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    vocab = lines[:-1]
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(set(vocab)) == len(vocab) < config["vocab_size"]  # head-room rows, as in v2
    words = [t for t in vocab[5:] if not t.startswith("##") and len(t) > 1]
    pieces = [t[2:] for t in vocab if t.startswith("##")]
    # Lowercased, and only ASCII letters plus æ ø å, as the release's training text was.
    assert all(re.fullmatch(r"[a-zæøå]+", t) for t in words)
    assert all(re.fullmatch(r"[a-zæøå]+|[0-9]", t) for t in pieces)
    assert len(words) > 3000 and len(pieces) > 500
    for letter in "æøå":
        assert sum(letter in w for w in words) > 20
    # Accented loanwords are there as the training text had them: accents gone.
    assert {"cafe", "ide", "muller", "komite", "goteborg"} <= set(words)
    assert not {"café", "idé", "müller"} & set(vocab)


def test_ordinary_danish_text_tokenizes_into_known_pieces(unpacked: Path) -> None:
    """WordPiece over the vocab, by the tokenizers library directly: no [UNK] in the built-in
    Danish sample text, and frequent words whole."""
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(str(unpacked / "vocab.txt"), lowercase=True, strip_accents=False)
    text = resources.files("danbert_convert").joinpath("data/danish_sample.txt").read_text("utf-8")
    tokens = [t for line in text.splitlines() for t in tok.encode(line).tokens]
    assert "[UNK]" not in tokens
    assert tok.encode("Jeg bor på Østerbro.", add_special_tokens=False).tokens == [
        "jeg", "bor", "på", "østerbro", ".",
    ]  # fmt: skip


def test_checkpoint_has_adam_slots_and_global_step(unpacked: Path) -> None:
    """Read by TensorFlow itself: every weight has its two Adam slots, and global_step."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(unpacked / "bert_model.ckpt"))
    shapes = reader.get_variable_to_shape_map()
    weights = [n for n in shapes if "/adam_" not in n and n != "global_step"]
    assert "bert/embeddings/word_embeddings" in weights and "cls/predictions/output_bias" in weights
    assert "cls/seq_relationship/output_weights" in weights
    for n in weights:
        assert shapes[f"{n}/adam_m"] == shapes[f"{n}/adam_v"] == shapes[n]
    assert len(shapes) == 3 * len(weights) + 1
    assert reader.get_variable_to_dtype_map()["global_step"] == tf.int64
    assert (unpacked / "checkpoint").read_text().splitlines()[0] == (
        'model_checkpoint_path: "bert_model.ckpt"'
    )
    meta = tf.compat.v1.MetaGraphDef.FromString((unpacked / "bert_model.ckpt.meta").read_bytes())
    nodes = {n.name for n in meta.graph_def.node}
    assert set(shapes) <= nodes


def test_regenerating_gives_the_same_release(tmp_path: Path) -> None:
    """scripts/make_sample_release.py again: every member byte-identical (the .meta graph only
    with the TensorFlow that wrote it, as it records its version), the zip too then."""
    import tensorflow as tf

    out = tmp_path / "again.zip"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_sample_release.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert run.returncode == 0, run.stderr
    committed = zipfile.ZipFile(io.BytesIO(packaged_zip()))
    again = zipfile.ZipFile(out)
    assert again.namelist() == committed.namelist()
    meta = f"{TOP}/bert_model.ckpt.meta"
    for name in committed.namelist():
        if name != meta:
            assert again.read(name) == committed.read(name), name
    built_with = tf.compat.v1.MetaGraphDef.FromString(committed.read(meta))
    if built_with.meta_info_def.tensorflow_version == tf.__version__:
        assert again.read(meta) == committed.read(meta)
        assert out.read_bytes() == packaged_zip()


def run_cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_fetch_copies_checks_and_unpacks_from_package_data(tmp_path: Path) -> None:
    dest = tmp_path / "work"
    code, out, _ = run_cli("fetch", NAME, "--dest", str(dest), "--json")
    d = json.loads(out)
    assert code == 0 and d["downloaded"] is True and d["unpacked"] is True
    assert d["sha256"] == registry.get_release(NAME).sha256
    assert d["checkpoint_dir"] == str(dest / TOP)
    assert sorted(p.name for p in (dest / TOP).iterdir()) == FILES
    assert (dest / "danish_bert_sample.zip").read_bytes() == packaged_zip()
    assert (dest / "danish_bert_sample.zip.sha256").read_text().split()[0] == d["sha256"]
    assert not list(dest.glob("*.part*"))
    # A second fetch checks what is there and copies nothing.
    code, out, _ = run_cli("fetch", NAME, "--dest", str(dest), "--json")
    assert code == 0 and json.loads(out)["downloaded"] is False


def test_damaged_package_data_is_refused(tmp_path: Path, monkeypatch) -> None:
    """The SHA-256 check is the one a download gets: here against a registry digest that the
    shipped bytes do not have."""
    release = registry.get_release(NAME)
    monkeypatch.setitem(registry.RELEASES, NAME, dataclasses.replace(release, sha256="ab" * 32))
    dest = tmp_path / "work"
    code, out, err = run_cli("fetch", NAME, "--dest", str(dest))
    actual = release.sha256
    assert (code, out) == (5, "")
    assert err.startswith("error: could not copy danish_bert_sample.zip: ")
    assert err.endswith(
        f"-> SHA-256 mismatch: expected {'ab' * 32}, got {actual}; the installed "
        "danbert-convert is damaged: reinstall it\n"
    )
    assert not dest.exists() or sorted(p.name for p in dest.iterdir()) == []


def test_models_marks_the_sample() -> None:
    code, out, _ = run_cli("models")
    line = next(line for line in out.splitlines() if NAME in line)
    assert code == 0 and "SAMPLE: " in line and not line.startswith("*")
    code, out, _ = run_cli("models", "--json")
    row = next(r for r in json.loads(out)["models"] if r["name"] == NAME)
    assert row["sample_of"] == "danish-bert-uncased-v2" and row["urls"] == []
    assert row["package_data"] == "data/danish_bert_sample.zip" and row["default"] is False


NO_NETWORK = textwrap.dedent(
    """
    import sys
    def refuse(event, args):
        if event in ("socket.connect", "socket.getaddrinfo", "socket.sendto"):
            if event == "socket.connect" and isinstance(args[1], str):
                return  # a Unix socket (local IPC) is no network
            with open({log!r}, "a") as f:
                f.write(f"{{event}} {{args[1:]}}\\n")
            raise OSError(f"network access refused in this test: {{event}}")
    sys.addaudithook(refuse)
    sys.argv = ["danbert", *{args!r}]
    from danbert_convert.__main__ import main
    main()
    """
)


def test_all_on_the_sample_runs_offline(tmp_path: Path) -> None:
    """`make run`'s command, in a fresh interpreter that refuses every network access (no
    HF_HUB_OFFLINE either): fetch, convert and verify succeed and the output ends with where
    the model is and the command for the real release."""
    attempts = tmp_path / "network.log"
    code = NO_NETWORK.format(log=str(attempts), args=["all", NAME])
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(PYTHONPATH=str(SRC), HF_HOME=str(tmp_path / "hf"))
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr
    assert not attempts.exists(), attempts.read_text()
    out = tmp_path / NAME
    lines = run.stdout.rstrip("\n").splitlines()
    assert f"BertForPreTraining ready in {out}" in lines
    assert lines[-2:] == [
        f"{NAME} is a bundled sample with random weights. The real release:",
        "  danbert all danish-bert-uncased-v2",
    ]
    assert "all checks passed" in run.stderr
    assert (tmp_path / "danbert-work" / TOP / "bert_config.json").is_file()
    # The model card, with its licence and verify's result, also made offline.
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "\nlicense: cc-by-sa-4.0\n" in card and "## Verification" in card
    # The weights are the checkpoint's, read back by TensorFlow and safetensors alone.
    import tensorflow as tf
    from safetensors.numpy import load_file

    tf_reader = tf.train.load_checkpoint(str(tmp_path / "danbert-work" / TOP / "bert_model.ckpt"))
    weights = load_file(out / "model.safetensors")
    np.testing.assert_array_equal(
        weights["bert.embeddings.word_embeddings.weight"],
        tf_reader.get_tensor("bert/embeddings/word_embeddings"),
    )


def test_wheel_holds_the_sample(tmp_path: Path) -> None:
    """The package data is in the wheel that `pip install` would build, byte for byte."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("danbert_convert-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert zf.read("danbert_convert/data/danish_bert_sample.zip") == packaged_zip()
    assert "danbert_convert/data/danish_sample.txt" in names
    assert "danbert_convert/py.typed" in names  # type checkers read the API's annotations
    assert not [n for n in names if n.startswith(("scripts/", "tests/"))]

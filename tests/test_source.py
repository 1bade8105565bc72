"""The source folder's own files: the `checkpoint` state file, bert_config.json, vocab.txt.

Each bad input goes through the CLI: one line naming the file at fault, exit 3, no OUT.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tfckpt import VOCAB

from danbert_convert._fs import sha256_file
from danbert_convert.cli import cli


def copy_src(full_release: Path, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(full_release, src)
    return src


def run_convert(src: Path, out: Path, *extra: str) -> Result:
    return CliRunner().invoke(cli, ["-q", "convert", str(src), str(out), *extra])


def assert_refused(r: Result, out: Path, *parts: str) -> str:
    """Exit 3, one `error:` line holding every part, and nothing written next to OUT."""
    assert r.exit_code == 3, r.output
    assert "Traceback" not in r.output
    lines = r.output.strip().splitlines()
    last = lines[-1]
    assert last.startswith("error: "), r.output
    for part in parts:
        assert part in last, (part, last)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    return last


# --- item 14: state-file escapes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "why"),
    [
        ("C:\\\\run\\\\model.ckpt\\", "Trailing \\ in string"),  # a trailing backslash
        ("/run/m\\xZZ.ckpt", "invalid \\x escape"),
        ("/run/m\\x4", "invalid \\x escape"),  # \x needs two hex digits
    ],
)
def test_bad_escape_in_state_file_is_one_line(full_release, tmp_path, written, why):
    src = copy_src(full_release, tmp_path)
    (src / "checkpoint").write_text(f'model_checkpoint_path: "{written}"\n', encoding="utf-8")
    out = tmp_path / "outs" / "out"
    last = assert_refused(run_convert(src, out), out, str(src / "checkpoint"), why)
    assert written in last


# --- item 15: a state file naming a checkpoint outside SRC ---------------------------------


@pytest.fixture(scope="module")
def elsewhere(release) -> Path:
    """Another checkpoint (same config, other values and heads), in a folder of its own."""
    return release("classifier", heads=("classifier",))


@pytest.mark.parametrize("how", ["absolute", "dotdot"])
def test_state_file_pointing_outside_src_is_refused(full_release, elsewhere, tmp_path, how):
    src = copy_src(full_release, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    for f in elsewhere.glob("bert_model.ckpt.*"):
        shutil.copy(f, other / f.name.replace("bert_model", "model"))
    written = str(other / "model.ckpt") if how == "absolute" else "../other/model.ckpt"
    (src / "checkpoint").write_text(f'model_checkpoint_path: "{written}"\n')
    out = tmp_path / "outs" / "out"
    assert_refused(
        run_convert(src, out),
        out,
        f"{src / 'checkpoint'} names the checkpoint {written}, outside {src}",
        "--checkpoint",
    )
    # Saying so explicitly converts the other checkpoint with SRC's config and vocab.
    r = run_convert(src, out, "--checkpoint", str(other / "model.ckpt"))
    assert r.exit_code == 0, r.output
    m = json.loads((out / "danbert-manifest.json").read_text())
    # No absolute path: outside SRC, a bare name, and SRC is not recorded for `verify`
    # (it would find another checkpoint there).
    assert m["source"]["checkpoint"] == "model.ckpt" and m["source"]["root"] is None
    assert m["source"]["config"] == "bert_config.json"
    assert str(tmp_path) not in (out / "danbert-manifest.json").read_text()


def test_state_file_outside_src_with_its_base_name_here_reads_the_local_copy(
    full_release, elsewhere, tmp_path
):
    """The training machine's path exists here too (another run): SRC's copy is read."""
    src = copy_src(full_release, tmp_path)
    for f in list(src.glob("bert_model.ckpt.*")):
        f.rename(src / f.name.replace("bert_model", "model"))
    other = tmp_path / "run"
    other.mkdir()
    for f in elsewhere.glob("bert_model.ckpt.*"):
        shutil.copy(f, other / f.name.replace("bert_model", "model"))
    (src / "checkpoint").write_text(f'model_checkpoint_path: "{other / "model.ckpt"}"\n')
    out = tmp_path / "out"
    r = run_convert(src, out, "--hash-sources")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "danbert-manifest.json").read_text())
    assert m["source"]["checkpoint"] == "model.ckpt"
    hashes = {Path(f["path"]).name: f["sha256"] for f in m["source"]["files"]}
    data = "model.ckpt.data-00000-of-00001"
    assert hashes[data] == sha256_file(src / data) != sha256_file(other / data)


def test_state_file_naming_a_subfolder_of_src_is_fine(full_release, tmp_path):
    src = copy_src(full_release, tmp_path)
    (src / "run" / "x").mkdir(parents=True)
    for f in list(src.glob("bert_model.ckpt.*")):
        f.rename(src / "run" / f.name)
    (src / "checkpoint").write_text('model_checkpoint_path: "run/x/../bert_model.ckpt"\n')
    r = run_convert(src, tmp_path / "out")
    assert r.exit_code == 0, r.output


# --- item 16: a token twice in vocab.txt ----------------------------------------------------


def test_repeated_vocab_token_names_it_and_both_lines(full_release, tmp_path):
    src = copy_src(full_release, tmp_path)
    (src / "vocab.txt").write_text("\n".join([*VOCAB[:30], "[PAD]", *VOCAB[30:]]) + "\n")
    out = tmp_path / "outs" / "out"
    assert_refused(
        run_convert(src, out),
        out,
        f"{src / 'vocab.txt'}: token '[PAD]' appears twice, on lines 1 and 31",
    )


def test_repeated_ordinary_token(full_release, tmp_path):
    src = copy_src(full_release, tmp_path)
    vocab = [*VOCAB, "hus"]  # "hus" is line 15 too
    (src / "vocab.txt").write_text("\r\n".join(vocab) + "\r\n", encoding="utf-8")
    out = tmp_path / "outs" / "out"
    assert_refused(run_convert(src, out), out, "token 'hus' appears twice, on lines 15 and 37")


# --- item 17: non-finite numbers in bert_config.json -------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "shown"),
    [
        ('"initializer_range": NaN', "initializer_range", "nan"),
        ('"hidden_dropout_prob": Infinity', "hidden_dropout_prob", "inf"),
        ('"layer_norm_eps": -Infinity', "layer_norm_eps", "-inf"),
        ('"layer_norm_eps": 1e400', "layer_norm_eps", "inf"),  # json reads it as inf
        ('"extra": {"scales": [1.0, NaN]}', "extra.scales[1]", "nan"),
    ],
)
def test_non_finite_config_number_names_the_key(full_release, tmp_path, text, key, shown):
    src = copy_src(full_release, tmp_path)
    cfg = (src / "bert_config.json").read_text().rstrip().rstrip("}")
    (src / "bert_config.json").write_text(cfg + f", {text}}}\n")
    out = tmp_path / "outs" / "out"
    assert_refused(
        run_convert(src, out),
        out,
        f"{src / 'bert_config.json'}: {key} is {shown}; numbers must be finite",
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('"vocab_size": ' + "4" * 5000, "not valid JSON (Exceeds the limit (4300 digits)"),
        ('"deep": ' + "[" * 100_000 + "]" * 100_000, "not valid JSON (nested too deeply)"),
    ],
)
def test_config_json_beyond_the_parser_is_one_line(full_release, tmp_path, text, why):
    src = copy_src(full_release, tmp_path)
    (src / "bert_config.json").write_text("{" + text + "}")
    out = tmp_path / "outs" / "out"
    assert_refused(run_convert(src, out), out, f"{src / 'bert_config.json'}: {why}")


def test_vocab_with_a_byte_order_mark_is_named(full_release, tmp_path):
    """A BOM made the first token '\\ufeff[PAD]': the error said [PAD] was missing."""
    src = copy_src(full_release, tmp_path)
    (src / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8-sig")
    out = tmp_path / "outs" / "out"
    assert_refused(
        run_convert(src, out),
        out,
        f"{src / 'vocab.txt'}: starts with a byte-order mark (U+FEFF); save it as UTF-8 "
        "without one",
    )


def test_bert_vocab_is_not_taken_from_a_folder_above(full_release, tmp_path):
    """A BERT release keeps vocab.txt beside its checkpoint: one in the folder above (here
    another model's, its tokens in another order) must not silently become this model's
    tokenizer. ELECTRA's layout (data/vocab.txt, data/models/NAME/) is the exception."""
    models = tmp_path / "models"
    src = copy_src(full_release, models)
    (src / "vocab.txt").unlink()
    other = VOCAB[:5] + VOCAB[:4:-1]
    (models / "vocab.txt").write_text("\n".join(other) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "model"
    r = run_convert(src, out)
    assert_refused(r, out, f"{src / 'vocab.txt'}: vocab.txt not found", "--vocab")
    r = run_convert(src, out, "--vocab", str(models / "vocab.txt"))  # said: taken
    assert r.exit_code == 0, r.output
    assert (out / "vocab.txt").read_text(encoding="utf-8").split() == other


def test_electra_vocab_two_folders_up_is_used_and_said(tmp_path):
    from tfckpt_electra import write_release

    data = tmp_path / "data"
    src = write_release(data / "models" / "run")
    (src / "vocab.txt").rename(data / "vocab.txt")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["convert", str(src), str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "vocab.txt").read_bytes() == (data / "vocab.txt").read_bytes()
    assert f"no vocab.txt beside the checkpoint; using {data / 'vocab.txt'}" in r.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task:\n  model:\n    dropout: .nan\n",
         r"params.yaml: task.model.dropout is nan; numbers must be finite"),
        ("- 1\n- 2\n", r"params.yaml: expected a YAML mapping"),
        ("a: &x [1]\nb: *x\n", r"params.yaml: not valid YAML \(aliases are not supported"),
        ("a: [1\n", r"params.yaml: not valid YAML \("),
    ],
)  # fmt: skip
def test_yaml_configs_are_checked_as_json_ones(tmp_path, text, message):
    from danbert_convert.errors import InputError
    from danbert_convert.source import read_config_file

    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_config_file(path)

"""danbert convert: equivalence with the TF variables, strictness, atomic output."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import sample_inputs, tf_reference
from tfckpt import TINY_CONFIG, VOCAB, bert_variables, save_tf1_checkpoint, with_training_state

from danbert_convert._fs import sha256_file
from danbert_convert.cli import cli
from danbert_convert.errors import InputError, OutputExistsError
from danbert_convert.stages.convert import convert

TOL = 1e-5


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _torch_inputs(config: dict):
    import torch

    ids, types, mask = sample_inputs(config)
    return dict(
        input_ids=torch.tensor(ids),
        token_type_ids=torch.tensor(types),
        attention_mask=torch.tensor(mask),
    )


def _load(cls_name: str, out: Path):
    import transformers

    model, info = getattr(transformers, cls_name).from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    assert not info.get("mismatched_keys"), info
    return model.eval()


def _close(a, b) -> None:
    a = a.detach().numpy() if hasattr(a, "detach") else a
    diff = float(np.max(np.abs(a - b)))
    assert diff <= TOL, diff


@pytest.fixture(scope="module")
def converted(full_release, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("conv") / "model"
    convert(full_release, out, reader="tensorflow", format="both")
    return out


def test_pretraining_outputs_match_tf_variables(converted, full_release):
    import torch

    model = _load("BertForPreTraining", converted)
    ref = tf_reference(full_release, TINY_CONFIG)
    with torch.no_grad():
        out = model(**_torch_inputs(TINY_CONFIG), output_hidden_states=True)
        pooled = model.bert(**_torch_inputs(TINY_CONFIG)).pooler_output
    _close(out.hidden_states[-1], ref.sequence)
    _close(pooled, ref.pooled)
    _close(out.prediction_logits, ref.mlm_logits)
    _close(out.seq_relationship_logits, ref.nsp_logits)


def test_config_loads_as_bert_and_keeps_extra_keys(converted):
    from transformers import AutoConfig, BertConfig

    cfg = AutoConfig.from_pretrained(converted)
    assert isinstance(cfg, BertConfig)
    assert cfg.architectures == ["BertForPreTraining"]
    raw = json.loads((converted / "config.json").read_text())
    assert raw["model_type"] == "bert"
    for key in ("directionality", "pooler_fc_size", "pooler_type", "pooler_num_fc_layers"):
        assert raw[key] == TINY_CONFIG[key]
    assert cfg.vocab_size == 40 and cfg.hidden_act == "gelu"


def test_auto_model_loads_encoder(converted):
    from transformers import AutoModel, BertModel

    model = AutoModel.from_pretrained(converted)
    assert isinstance(model, BertModel)


def test_tokenizer_keeps_danish_letters(converted):
    from transformers import AutoTokenizer

    text = "Jeg bor på Østerbro og spiser æbler"
    expected = ["jeg", "bor", "på", "østerbro", "og", "spiser", "æbler"]
    fast = AutoTokenizer.from_pretrained(converted)
    assert fast.tokenize(text) == expected
    assert fast.tokenize("sål sal") == ["sål", "sal"]
    enc = fast("jeg bor", "på østerbro")
    assert enc["input_ids"][0] == VOCAB.index("[CLS]")
    assert enc["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    try:  # transformers 5 keeps the pure-Python tokenizer under this name
        from transformers.models.bert import BertTokenizerLegacy as Slow
    except ImportError:  # transformers 4
        from transformers import BertTokenizer as Slow
    slow = Slow.from_pretrained(converted)
    assert slow.tokenize(text) == expected
    assert slow.tokenize("Sål") == ["sål"]


def test_bin_equals_safetensors(converted):
    import torch
    from safetensors.torch import load_file

    st = load_file(str(converted / "model.safetensors"))
    bin_ = torch.load(converted / "pytorch_model.bin", weights_only=True)
    assert st.keys() == bin_.keys()
    for k in st:
        assert torch.equal(st[k], bin_[k]), k


def test_manifest_accounts_for_every_variable(converted, full_release):
    from danbert_convert.readers.tensorflow import TensorFlowReader

    m = json.loads((converted / "danbert-manifest.json").read_text())
    names = set(TensorFlowReader(full_release / "bert_model.ckpt").variables())
    mapped = {t["source"] for t in m["tensors"]}
    skipped = {s["name"]: s["reason"] for s in m["skipped"]}
    assert mapped | set(skipped) == names and not mapped & set(skipped)
    assert skipped["global_step"] == "training step counter"
    assert skipped["bert/pooler/dense/kernel/adam_m"] == "Adam optimizer slot"
    by_name = {t["name"]: t for t in m["tensors"]}
    q = by_name["bert.encoder.layer.1.attention.self.query.weight"]
    assert q["source"] == "bert/encoder/layer_1/attention/self/query/kernel"
    assert q["transform"] == "transpose" and q["dtype"] == "float32"
    files = {Path(f["path"]).name: f for f in m["source"]["files"]}
    # The small files hashed whole; the data shard by size and mtime only (pinned by the
    # index's CRC-32Cs, which every converted tensor was checked against).
    for name in ("bert_model.ckpt.index", "bert_config.json", "vocab.txt"):
        assert files[name]["sha256"] == _sha256(full_release / name), name
        assert files[name]["bytes"] == (full_release / name).stat().st_size
    data = full_release / "bert_model.ckpt.data-00000-of-00001"
    assert "sha256" not in files[data.name]
    assert files[data.name]["bytes"] == data.stat().st_size
    mtime = datetime.fromisoformat(files[data.name]["mtime"]).timestamp()
    assert abs(mtime - data.stat().st_mtime) < 1e-5  # ISO 8601 keeps microseconds
    assert "CRC-32C" in m["source"]["data_check"]
    assert m["outputs"]["model.safetensors"] == sha256_file(converted / "model.safetensors")
    assert m["versions"]["danbert-convert"]
    assert m["settings"]["strip_accents"] == "vocab" and m["settings"]["lowercase"] is True
    # The vocab as item 2 of issue 12 lists it, counted here from VOCAB itself.
    v = m["settings"]["vocab"]
    pieces = [t for t in VOCAB if t.startswith("##")]
    assert (v["tokens"], v["vocab_size"], v["rows_without_token"]) == (len(VOCAB), 40, 40 - 36)
    assert (v["special"], v["markers"], v["pieces"]) == (5, 0, len(pieces))
    assert v["whole_words"] == len(VOCAB) - 5 - len(pieces)
    assert v["letters_beyond_ascii"] == "åæø" and v["casing"] == "uncased"
    assert v["rule"]["keep_letters"] == "å" and v["rule"]["lowercase"] is True
    assert v["rule"]["text"].startswith("lowercase; strip accents except å;")
    assert v["rule"]["slow_tokenizer"] == {"do_lower_case": True, "strip_accents": False,
                                           "exact": False}  # fmt: skip
    assert {r: n["count"] for r, n in v["never_produced"].items()} == dict.fromkeys(
        ("sentencepiece", "split", "uppercase", "accents", "form"), 0
    )


def test_no_heads_gives_bert_model(release, tmp_path):
    import torch

    src = release("noheads", heads=())
    result = convert(src, tmp_path / "out", reader="tensorflow")
    assert result.architecture == "BertModel"
    assert any("no cls/* heads" in w for w in result.warnings)
    model = _load("BertModel", tmp_path / "out")
    ref = tf_reference(src, TINY_CONFIG)
    with torch.no_grad():
        out = model(**_torch_inputs(TINY_CONFIG))
    _close(out.last_hidden_state, ref.sequence)
    _close(out.pooler_output, ref.pooled)


def test_classifier_head(release, tmp_path):
    import torch

    src = release("classifier", heads=("classifier",))
    result = convert(src, tmp_path / "out", reader="tensorflow")
    assert result.architecture == "BertForSequenceClassification"
    model = _load("BertForSequenceClassification", tmp_path / "out")
    assert model.config.num_labels == 3
    ref = tf_reference(src, TINY_CONFIG)
    from danbert_convert.readers.tensorflow import TensorFlowReader

    r = TensorFlowReader(src / "bert_model.ckpt")
    logits = ref.pooled @ r.read("output_weights").T + r.read("output_bias")
    with torch.no_grad():
        _close(model(**_torch_inputs(TINY_CONFIG)).logits, logits)


def test_squad_head_skips_pooler(release, tmp_path):
    src = release("squad", heads=("squad",))
    result = convert(src, tmp_path / "out", reader="tensorflow")
    assert result.architecture == "BertForQuestionAnswering"
    assert "BertForQuestionAnswering does not have" in result.skipped["bert/pooler/dense/kernel"]
    _load("BertForQuestionAnswering", tmp_path / "out")


def test_hidden_act_override(full_release, tmp_path):
    import torch

    convert(full_release, tmp_path / "out", reader="tensorflow", hidden_act="gelu_new")
    model = _load("BertForPreTraining", tmp_path / "out")
    assert model.config.hidden_act == "gelu_new"
    tanh_ref = tf_reference(full_release, TINY_CONFIG, hidden_act="gelu_new")
    erf_ref = tf_reference(full_release, TINY_CONFIG, hidden_act="gelu")
    with torch.no_grad():
        seq = model(**_torch_inputs(TINY_CONFIG), output_hidden_states=True).hidden_states[-1]
    _close(seq, tanh_ref.sequence)
    assert np.max(np.abs(seq.numpy() - erf_ref.sequence)) > TOL  # the choice matters


def test_amp_variables_skipped(release, tmp_path):
    amp = {
        "current_loss_scale": np.array(1024.0, np.float32),
        "good_steps": np.array(7, np.int64),
        "bad_steps": np.array(0, np.int64),
    }
    src = release("amp", extra=amp)
    result = convert(src, tmp_path / "out", reader="tensorflow")
    for name in amp:
        assert result.skipped[name] == "mixed-precision loss-scaling state"


def test_unknown_variable_is_an_error_unless_ignored(release, tmp_path):
    src = release("unknown", extra={"bert/encoder/layer_0/mystery": np.zeros(3, np.float32)})
    with pytest.raises(InputError, match=r"unrecognised variable bert/encoder/layer_0/mystery;"):
        convert(src, tmp_path / "out", reader="tensorflow")
    assert not (tmp_path / "out").exists()
    result = convert(src, tmp_path / "out", reader="tensorflow", ignore_unknown=True)
    assert "bert/encoder/layer_0/mystery" in result.skipped
    m = json.loads((tmp_path / "out" / "danbert-manifest.json").read_text())
    assert {
        "name": "bert/encoder/layer_0/mystery",
        "reason": "unrecognised (--ignore-unknown)",
    } in m["skipped"]


def test_config_mismatch_names_key_and_numbers(release, tmp_path):
    src = release("mismatch", config_overrides={"vocab_size": 30522})
    with pytest.raises(InputError) as e:
        convert(src, tmp_path / "out", reader="tensorflow")
    assert (
        f"vocab_size 30522 in {src / 'bert_config.json'} vs 40 rows in "
        "bert/embeddings/word_embeddings" in str(e.value)
    )


def test_intermediate_size_mismatch(release, tmp_path):
    src = release("inter", config_overrides={"intermediate_size": 64})
    with pytest.raises(InputError, match=r"intermediate_size 64 in .* vs 32 (columns|entries)"):
        convert(src, tmp_path / "out", reader="tensorflow")


def test_missing_weight_is_an_error(tmp_path):
    v = with_training_state(bert_variables(TINY_CONFIG))
    del v["bert/encoder/layer_1/output/dense/bias"]
    from tfckpt import write_release

    src = write_release(tmp_path / "src", variables=v)
    with pytest.raises(
        InputError, match=r"missing variable bert/encoder/layer_1/output/dense/bias"
    ):
        convert(src, tmp_path / "out", reader="tensorflow")


def test_more_layers_than_config(release, tmp_path):
    src = release("layers", config_overrides={"num_hidden_layers": 1})
    with pytest.raises(InputError, match=r"layer 1, but num_hidden_layers is 1"):
        convert(src, tmp_path / "out", reader="tensorflow")


def test_three_layers(release, tmp_path):
    import torch

    cfg = {**TINY_CONFIG, "num_hidden_layers": 3}
    src = release("three", cfg=cfg)
    convert(src, tmp_path / "out", reader="tensorflow")
    model = _load("BertForPreTraining", tmp_path / "out")
    ref = tf_reference(src, cfg)
    with torch.no_grad():
        _close(model(**_torch_inputs(cfg)).prediction_logits, ref.mlm_logits)


def test_tf2_object_checkpoint_refused(tmp_path):
    import tensorflow as tf

    src = tmp_path / "tf2"
    src.mkdir()

    class Dense(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(np.zeros((2, 2), np.float32))

    tf.train.Checkpoint(layer_with_weights=Dense()).write(str(src / "bert_model.ckpt"))
    (src / "bert_config.json").write_text(json.dumps(TINY_CONFIG))
    (src / "vocab.txt").write_text("\n".join(VOCAB))
    with pytest.raises(InputError, match="TF2 object-based checkpoint"):
        convert(src, tmp_path / "out", reader="tensorflow")


def test_vocab_longer_than_config_is_an_error(tmp_path, full_release):
    src = tmp_path / "src"
    shutil.copytree(full_release, src)
    (src / "vocab.txt").write_text("\n".join(VOCAB + [f"w{i}" for i in range(10)]) + "\n")
    with pytest.raises(InputError, match=r"vocab.txt: 46 tokens, more than vocab_size 40"):
        convert(src, tmp_path / "out", reader="tensorflow")


def test_shorter_vocab_is_a_warning(converted, full_release, tmp_path):
    result = convert(full_release, tmp_path / "out", reader="tensorflow")
    assert any("36 tokens for vocab_size 40" in w for w in result.warnings)


def test_out_not_empty_refused_then_forced(full_release, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="exists and is not empty"):
        convert(full_release, out, reader="tensorflow")
    assert (out / "keep.txt").read_text() == "mine"
    convert(full_release, out, reader="tensorflow", force=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder left


def test_interrupt_mid_write_leaves_nothing(full_release, tmp_path, monkeypatch):
    import danbert_convert.output.writer as writer

    calls = []
    real = writer.transform

    def interrupting(t, value):
        calls.append(t.hf)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(t, value)

    monkeypatch.setattr("danbert_convert.stages.convert.transform", interrupting)
    with pytest.raises(KeyboardInterrupt):
        convert(full_release, tmp_path / "out", reader="tensorflow")
    assert len(calls) == 5
    assert list(tmp_path.iterdir()) == []
    # With --force, the folder being replaced survives an interrupted replacement intact.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        convert(full_release, tmp_path / "out", reader="tensorflow", force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_several_checkpoints_listed(full_release, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(full_release, src)
    for suffix in ("index", "data-00000-of-00001"):
        shutil.copy(src / f"bert_model.ckpt.{suffix}", src / f"model.ckpt-100.{suffix}")
        shutil.move(src / f"bert_model.ckpt.{suffix}", src / f"model.ckpt-200.{suffix}")
    with pytest.raises(InputError, match=r"several checkpoints \(model.ckpt-100, model.ckpt-200\)"):
        convert(src, tmp_path / "out", reader="tensorflow")
    # The state file, as TF writes it, names the training machine's path: found locally.
    (src / "checkpoint").write_text('model_checkpoint_path: "/data/run/model.ckpt-200"\n')
    convert(src, tmp_path / "out", reader="tensorflow")
    m = json.loads((tmp_path / "out" / "danbert-manifest.json").read_text())
    assert m["source"]["checkpoint"].endswith("model.ckpt-200")


def test_overrides(full_release, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    convert(
        src,
        tmp_path / "out",
        reader="tensorflow",
        checkpoint=full_release / "bert_model.ckpt.index",
        config=full_release / "bert_config.json",
        vocab=full_release / "vocab.txt",
        lowercase=False,
    )
    tok = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert tok["do_lower_case"] is False


def test_cased_vocab_inferred(release, tmp_path):
    src = release("cased", vocab=[*VOCAB, "København"])
    convert(src, tmp_path / "out", reader="tensorflow")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tok.tokenize("København Jeg") == ["København", "[UNK]"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing-dir", "OUT"], 3, "missing-dir: not a folder"),
        (["SRC", "OUT", "--hidden-act", "swish"], 2, "Invalid value for '--hidden-act'"),
    ],
)
def test_cli_errors(args, code, message, tmp_path):
    args = [str(tmp_path / a) if a in ("OUT",) else a for a in args]
    result = CliRunner().invoke(cli, ["convert", *args])
    assert result.exit_code == code, result.output
    assert message in result.output


def test_cli_convert_and_exit_codes(full_release, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    ok = runner.invoke(
        cli, ["-q", "convert", str(full_release), str(out), "--reader", "tensorflow"]
    )
    assert ok.exit_code == 0, ok.output
    assert "BertForPreTraining, 46 tensors" in ok.output
    again = runner.invoke(cli, ["convert", str(full_release), str(out)])
    assert again.exit_code == 4
    assert again.output.strip().splitlines()[-1] == (
        f"error: {out} exists and is not empty (use --force to replace it)"
    )
    bad = tmp_path / "bad"
    shutil.copytree(full_release, bad)
    (bad / "bert_config.json").write_text("{not json")
    r = runner.invoke(cli, ["convert", str(bad), str(tmp_path / "o2")])
    assert r.exit_code == 3 and f"error: {bad / 'bert_config.json'}: not valid JSON" in r.output


def test_python_dash_m_version():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "danbert_convert", "--version"], capture_output=True,
                       text=True, check=True)  # fmt: skip
    assert r.stdout.startswith("danbert, version ")


def test_save_helper_roundtrip(tmp_path):
    # The fixture writer itself: names exactly as given, Adam slots included.
    from danbert_convert.readers.tensorflow import TensorFlowReader

    v = with_training_state({"bert/x": np.ones((2, 3), np.float32)})
    save_tf1_checkpoint(tmp_path / "c", v)
    names = set(TensorFlowReader(tmp_path / "c").variables())
    assert names == {"bert/x", "bert/x/adam_m", "bert/x/adam_v", "global_step"}


def test_cli_interrupt_exits_130(full_release, tmp_path, monkeypatch):
    def interrupting(t, value):
        raise KeyboardInterrupt

    monkeypatch.setattr("danbert_convert.stages.convert.transform", interrupting)
    r = CliRunner().invoke(cli, ["convert", str(full_release), str(tmp_path / "out")])
    assert r.exit_code == 130 and "interrupted" in r.output
    assert list(tmp_path.iterdir()) == []


def test_native_and_tensorflow_readers_write_identical_weights(converted, full_release, tmp_path):
    convert(full_release, tmp_path / "out")  # reader "auto": the native one
    m = json.loads((tmp_path / "out" / "danbert-manifest.json").read_text())
    assert m["source"]["reader"] == "BundleReader" and "tensorflow" not in m["versions"]
    tf_manifest = json.loads((converted / "danbert-manifest.json").read_text())
    assert "tensorflow" in tf_manifest["versions"]
    assert sha256_file(tmp_path / "out" / "model.safetensors") == sha256_file(
        converted / "model.safetensors"
    )


@pytest.mark.parametrize("where", ["src", "parent", "checkpoint-override", "symlink", "dotdot"])
def test_output_holding_the_source_is_refused_even_with_force(full_release, tmp_path, where):
    src = tmp_path / "work" / "src"
    shutil.copytree(full_release, src)
    before = sorted(p.name for p in src.iterdir())
    if where == "src":
        args: tuple = (src, src)
        kwargs: dict = {}
    elif where == "parent":
        args, kwargs = (src, tmp_path / "work"), {}
    elif where == "symlink":  # OUT spelled differently: a link to the work folder
        (tmp_path / "link").symlink_to(tmp_path / "work")
        args, kwargs = (src, tmp_path / "link"), {}
    elif where == "dotdot":
        args, kwargs = (src, src / "sub" / ".." / ".."), {}
    else:  # the checkpoint, given by --checkpoint, sits inside OUT
        args, kwargs = (full_release, tmp_path / "work"), {"checkpoint": src / "bert_model.ckpt"}
    with pytest.raises(OutputExistsError, match=r"replacing it would delete .*src.*, which the "
                       "conversion reads; choose another"):  # fmt: skip
        convert(*args, force=True, **kwargs)
    assert sorted(p.name for p in src.iterdir()) == before
    r = CliRunner().invoke(cli, ["convert", str(src), str(src), "--force"])
    assert r.exit_code == 4 and "which the conversion reads" in r.output
    assert sorted(p.name for p in src.iterdir()) == before


def test_output_inside_the_source_is_fine(full_release, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(full_release, src)
    convert(src, src / "hf")
    assert (src / "hf" / "model.safetensors").is_file()


def test_two_variables_for_one_output_refused(tmp_path):
    from tfckpt import write_release

    v = bert_variables(TINY_CONFIG)
    v["bert/encoder/layer_01/output/dense/bias"] = v["bert/encoder/layer_1/output/dense/bias"]
    src = write_release(tmp_path / "src", variables=v)
    with pytest.raises(
        InputError,
        match=r"bert/encoder/layer_01/output/dense/bias and bert/encoder/layer_1/output/dense/bias "
        r"both map to bert.encoder.layer.1.output.dense.bias",
    ):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("key", "value"), [("num_attention_heads", 0), ("hidden_size", -16), ("vocab_size", 0)]
)
def test_config_sizes_must_be_positive(full_release, tmp_path, key, value):
    cfg = json.loads((full_release / "bert_config.json").read_text())
    (tmp_path / "bert_config.json").write_text(json.dumps({**cfg, key: value}))
    with pytest.raises(InputError, match=rf"bert_config.json: {key} is {value}; it must be a pos"):
        convert(full_release, tmp_path / "out", config=tmp_path / "bert_config.json")


def test_stale_state_file_falls_back(full_release, tmp_path, caplog):
    src = tmp_path / "src"
    shutil.copytree(full_release, src)
    (src / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-999"\n')
    with caplog.at_level("WARNING"):
        convert(src, tmp_path / "out")
    assert "names model.ckpt-999, which is not here" in caplog.text
    m = json.loads((tmp_path / "out" / "danbert-manifest.json").read_text())
    assert m["source"]["checkpoint"].endswith("bert_model.ckpt")
    # Nothing to fall back to: the error says what the state file named.
    for suffix in ("index", "data-00000-of-00001"):
        shutil.move(src / f"bert_model.ckpt.{suffix}", src / f"a.ckpt.{suffix}")
        shutil.copy(src / f"a.ckpt.{suffix}", src / f"b.ckpt.{suffix}")
    with pytest.raises(InputError, match=r"several checkpoints \(a.ckpt, b.ckpt\); .*names "
                       r"model.ckpt-999, which is not here"):  # fmt: skip
        convert(src, tmp_path / "out2")


@pytest.mark.parametrize(
    ("name", "written"),
    [
        # As TF writes it on Windows: a text-format string with its backslashes escaped.
        ("model.ckpt-200", "C:\\\\run\\\\model.ckpt-200"),
        # Older writers: non-ASCII names as octal escapes of their UTF-8 bytes.
        ("m\u00e5l.ckpt", "/old/m\\303\\245l.ckpt"),
    ],
)
def test_state_file_escapes(full_release, tmp_path, name, written):
    src = tmp_path / "src"
    shutil.copytree(full_release, src)
    for suffix in ("index", "data-00000-of-00001"):
        shutil.move(src / f"bert_model.ckpt.{suffix}", src / f"{name}.{suffix}")
    shutil.copy(src / f"{name}.index", src / "other.index")
    (src / "checkpoint").write_text(f'model_checkpoint_path: "{written}"\n', encoding="utf-8")
    convert(src, tmp_path / "out")
    m = json.loads((tmp_path / "out" / "danbert-manifest.json").read_text())
    assert m["source"]["checkpoint"].endswith(name)


def test_failed_swap_restores_the_replaced_folder(full_release, tmp_path, monkeypatch):
    import danbert_convert._fs as fs

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    real = fs.os.replace
    calls = []

    def failing_second(a, b):
        if Path(a).parent != tmp_path:  # not the swap: the model card inside the new folder
            return real(a, b)
        calls.append((a, b))
        if len(calls) == 2:  # the new folder into place, after the old one moved aside
            raise KeyboardInterrupt
        return real(a, b)

    monkeypatch.setattr(fs.os, "replace", failing_second)
    with pytest.raises(KeyboardInterrupt):
        convert(full_release, out, force=True)
    assert len(calls) == 3  # aside, (failed) into place, restored
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_head_shape_errors_name_their_source(tmp_path):
    from tfckpt import write_release

    v = bert_variables(TINY_CONFIG, heads=("classifier",), num_labels=3)
    v["output_weights"] = np.zeros((4, TINY_CONFIG["hidden_size"]), np.float32)
    src = write_release(tmp_path / "cls", variables=v)
    want = r"cls/bert_model.ckpt.index: num_labels 3 from output_bias vs 4 rows in output_weights "
    with pytest.raises(InputError, match=want + r"\(shape \[4, 16\]\)$"):
        convert(src, tmp_path / "out")
    v = bert_variables(TINY_CONFIG)
    v["cls/seq_relationship/output_bias"] = np.zeros(3, np.float32)
    src = write_release(tmp_path / "nsp", variables=v)
    want = (
        r"nsp/bert_model.ckpt.index: 3 entries in cls/seq_relationship/output_bias \(shape \[3\]\)"
    )
    with pytest.raises(InputError, match=want + "; a BERT has 2 there$"):
        convert(src, tmp_path / "out")


def test_cli_output_errors_are_one_line(full_release, tmp_path):
    (tmp_path / "afile").write_text("")
    r = CliRunner().invoke(cli, ["convert", str(full_release), str(tmp_path / "afile" / "out")])
    assert r.exit_code == 4
    assert r.output.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'afile' / 'out'}: {tmp_path / 'afile'} is a file, not a folder"
    )


@pytest.mark.skipif(sys.platform != "linux", reason="sysfs: read-only even for root")
def test_cli_unwritable_output_is_one_line(full_release):
    r = CliRunner().invoke(cli, ["convert", str(full_release), "/sys/danbert-test-out"])
    assert r.exit_code == 1, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("error: [Errno") and "/sys/.danbert-test-out.partial-" in last
    assert "Traceback" not in r.output


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_failed_write_names_the_file(full_release, tmp_path):
    # A real write error, as a full disk gives: the kernel refuses bytes past the file-size limit.
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (8000, resource.RLIM_INFINITY))\n"
        "from danbert_convert.cli import main\n"
        "sys.argv = ['danbert', '-q', 'convert', sys.argv[1], sys.argv[2]]\n"
        "main()\n"
    )
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", script, str(full_release), str(out)],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: [Errno 27] File too large: ") and "model.safetensors" in last
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
@pytest.mark.parametrize("fmt", ["bin", "both"])
def test_failed_bin_write_names_the_file(full_release, tmp_path, fmt):
    # model.safetensors (30 kB) fits under the limit, pytorch_model.bin (40 kB) does not:
    # torch.save alone reports that as a RuntimeError naming neither file nor cause.
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (35000, resource.RLIM_INFINITY))\n"
        "from danbert_convert.cli import main\n"
        "sys.argv = ['danbert', '-q', 'convert', *sys.argv[1:3], '--format', sys.argv[3]]\n"
        "main()\n"
    )
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", script, str(full_release), str(out), fmt],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: [Errno 27] File too large: ") and last.endswith(
        "pytorch_model.bin'"
    ), last
    assert not out.exists() and list(tmp_path.iterdir()) == []


NAN_VARIABLE = "bert/encoder/layer_1/attention/self/value/kernel"


@pytest.mark.parametrize(("bad", "count"), [("nan", 1), ("inf", 2)])
@pytest.mark.parametrize("reader", ["native", "tensorflow"])
def test_non_finite_weight_is_refused(release, tmp_path, bad, count, reader):
    v = bert_variables(TINY_CONFIG)
    value = v[NAN_VARIABLE].copy()
    if bad == "nan":
        value[3, 5] = np.nan
    else:
        value[0, 0], value[15, 15] = np.inf, -np.inf
    src = release(f"nonfinite-{bad}", variables=with_training_state({**v, NAN_VARIABLE: value}))
    out = tmp_path / "outs" / "out"
    r = CliRunner().invoke(cli, ["-q", "convert", str(src), str(out), "--reader", reader])
    assert r.exit_code == 3, r.output
    assert "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1] == (
        f"error: {src / 'bert_model.ckpt.data-00000-of-00001'}: variable {NAN_VARIABLE} holds "
        f"NaN/Inf ({count} of 256 values); a model with non-finite weights computes nothing useful"
    )
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_non_finite_optimizer_slot_does_not_matter(release, tmp_path):
    """Only what is converted is checked: a NaN in an Adam slot is left behind with the slot."""
    v = with_training_state(bert_variables(TINY_CONFIG))
    v[f"{NAN_VARIABLE}/adam_v"] = np.full((16, 16), np.nan, np.float32)
    src = release("nan-slot", variables=v)
    convert(src, tmp_path / "out")
    from safetensors.numpy import load_file

    w = load_file(tmp_path / "out" / "model.safetensors")
    assert all(np.isfinite(a).all() for a in w.values())


def test_hash_sources_hashes_the_data_shards_and_the_state_file(full_release, tmp_path):
    """--hash-sources adds the data shards' SHA-256; the state file read is hashed always."""
    src = tmp_path / "src"
    shutil.copytree(full_release, src)
    (src / "checkpoint").write_text('model_checkpoint_path: "bert_model.ckpt"\n')
    r = CliRunner().invoke(
        cli, ["-q", "convert", str(src), str(tmp_path / "out"), "--hash-sources"]
    )
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "out" / "danbert-manifest.json").read_text())
    files = {Path(f["path"]).name: f for f in m["source"]["files"]}
    assert set(files) == {
        "checkpoint", "bert_config.json", "vocab.txt", "bert_model.ckpt.index",
        "bert_model.ckpt.data-00000-of-00001",
    }  # fmt: skip
    for name, f in files.items():
        assert f["sha256"] == _sha256(src / name), name
    # The Python API: off by default.
    convert(src, tmp_path / "out2")
    m = json.loads((tmp_path / "out2" / "danbert-manifest.json").read_text())
    files = {Path(f["path"]).name: f for f in m["source"]["files"]}
    assert "sha256" not in files["bert_model.ckpt.data-00000-of-00001"]
    assert files["checkpoint"]["sha256"] == _sha256(src / "checkpoint")
    convert(src, tmp_path / "out3", hash_sources=True)
    m = json.loads((tmp_path / "out3" / "danbert-manifest.json").read_text())
    files = {Path(f["path"]).name: f for f in m["source"]["files"]}
    data = "bert_model.ckpt.data-00000-of-00001"
    assert files[data]["sha256"] == _sha256(src / data)


def test_output_hashes_are_the_written_files(full_release, tmp_path):
    """Every output but the manifest and the model card (documentation users edit, rewritten
    after verify) is listed with the SHA-256 of its bytes on disk."""
    out = tmp_path / "out"
    convert(full_release, out, format="both")
    m = json.loads((out / "danbert-manifest.json").read_text())
    written = {p.name for p in out.iterdir()} - {"danbert-manifest.json", "README.md"}
    assert set(m["outputs"]) == written
    assert {"pytorch_model.bin", "model.safetensors", "tokenizer.json", "vocab.txt"} <= written
    for name, digest in m["outputs"].items():
        assert digest == _sha256(out / name), name
    assert (out / "vocab.txt").read_bytes() == (full_release / "vocab.txt").read_bytes()


def _strings(value):
    """Every string in a parsed JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_manifest_holds_no_absolute_path(full_release, tmp_path):
    """A published model folder must not carry /home/<user>/... paths: SRC-relative names,
    SRC relative to OUT, and a schema version."""
    src = tmp_path / "src"
    shutil.copytree(full_release, src)
    out = tmp_path / "models" / "out"
    convert(src, out)
    text = (out / "danbert-manifest.json").read_text()
    m = json.loads(text)
    assert str(tmp_path) not in text and str(full_release) not in text
    rooted = [s for s in _strings(m) if s.startswith((os.sep, "/")) or Path(s).is_absolute()]
    assert rooted == []
    assert m["schema_version"] == 2
    s = m["source"]
    assert (s["root"], s["checkpoint"], s["config"], s["vocab"]) == (
        "../../src", "bert_model.ckpt", "bert_config.json", "vocab.txt",
    )  # fmt: skip
    read = sorted(p.name for p in src.iterdir() if p.suffix != ".meta")  # the graph: unread
    assert sorted(f["path"] for f in s["files"]) == read
    assert (out / s["root"] / s["config"]).resolve() == (src / "bert_config.json").resolve()


def test_manifest_records_no_root_above_the_home_folder(full_release, tmp_path, monkeypatch):
    """SRC and OUT whose only common folder is above the user's home: a relative path would
    spell the user name, so SRC is not recorded (verify then needs --against)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home" / "alice"))
    src = tmp_path / "home" / "alice" / "src"
    shutil.copytree(full_release, src)
    out = tmp_path / "elsewhere" / "out"
    convert(src, out)
    m = json.loads((out / "danbert-manifest.json").read_text())
    assert m["source"]["root"] is None
    assert "alice" not in (out / "danbert-manifest.json").read_text()


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_reuse_freed_memory_spares_the_page_faults_of_fresh_buffers():
    # The allocation pattern of convert on BERT-base: per layer four 768x768 and two
    # 768x3072 kernels read, transposed into new buffers that the writer's threads hold for
    # a while, then freed. In children: the setting is process-wide.
    script = (
        "import collections, resource, sys\n"
        "import numpy as np\n"
        "from danbert_convert.stages.convert import reuse_freed_memory\n"
        "if sys.argv[1] == 'tuned':\n"
        "    reuse_freed_memory()\n"
        "held = collections.deque(maxlen=3)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for layer in range(12):\n"
        "    for rows in (768, 768, 768, 768, 3072, 3072):\n"
        "        read = np.ones(rows * 768, np.float32)\n"
        "        held.append(np.ones(rows * 768, np.float32))\n"
        "        del read\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    faults = {}
    for mode in ("default", "tuned"):
        r = subprocess.run([sys.executable, "-c", script, mode],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        faults[mode] = int(r.stdout)
    assert faults["tuned"] * 3 < faults["default"], faults

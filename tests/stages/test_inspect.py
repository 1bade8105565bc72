"""`danbert inspect`: variables, what each becomes, totals; from the .index alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tfckpt import VOCAB

from danbert_convert.cli import cli
from danbert_convert.readers.tensorflow import TensorFlowReader


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["inspect", *args])
    return result.exit_code, result.output


def index_only(release: Path, dst: Path, config: bool = True) -> Path:
    """A folder with the checkpoint's .index (and bert_config.json): no data file."""
    dst.mkdir()
    shutil.copy(release / "bert_model.ckpt.index", dst)
    if config:
        shutil.copy(release / "bert_config.json", dst)
    return dst


def test_json_lists_every_variable_with_its_fate(full_release: Path, tmp_path: Path) -> None:
    code, out = run(str(index_only(full_release, tmp_path / "r")), "--json")
    assert code == 0, out
    doc = json.loads(out)
    tf_vars = TensorFlowReader(full_release / "bert_model.ckpt").variables()
    by_name = {v["name"]: v for v in doc["variables"]}
    assert list(by_name) == list(tf_vars)
    for name, v in by_name.items():
        info = tf_vars[name]
        assert v["shape"] == list(info.shape) and v["dtype"] == info.dtype.name
        assert v["bytes"] == info.nbytes
        assert (v["maps_to"] is None) != (v["skip_reason"] is None), name
    assert by_name["bert/embeddings/word_embeddings"]["maps_to"] == (
        "bert.embeddings.word_embeddings.weight"
    )
    assert by_name["bert/encoder/layer_1/output/dense/kernel"]["maps_to"] == (
        "bert.encoder.layer.1.output.dense.weight"
    )
    assert by_name["bert/encoder/layer_1/output/dense/kernel/adam_m"]["skip_reason"] == (
        "Adam optimizer slot"
    )
    assert by_name["global_step"] == {
        "name": "global_step",
        "shape": [],
        "dtype": "int64",
        "bytes": 8,
        "maps_to": None,
        "skip_reason": "training step counter",
    }
    totals = doc["totals"]
    # TensorFlow writes tensors back to back: together they are the whole data file.
    data_size = (full_release / "bert_model.ckpt.data-00000-of-00001").stat().st_size
    assert totals["all"] == {"count": len(tf_vars), "bytes": data_size}
    weights = [v for v in doc["variables"] if v["maps_to"]]
    assert totals["weights"] == {"count": len(weights), "bytes": sum(v["bytes"] for v in weights)}
    assert totals["optimizer_state"]["count"] == 2 * len(weights) + 1
    assert totals["other_skipped"]["count"] == 0
    assert doc["architecture"] == "BertForPreTraining" and doc["problem"] is None


def test_text_table_and_totals(full_release: Path) -> None:
    code, out = run(str(full_release / "bert_model.ckpt.index"))
    assert code == 0, out
    lines = out.splitlines()
    row = next(line for line in lines if line.startswith("bert/pooler/dense/kernel "))
    assert row.split() == [
        "bert/pooler/dense/kernel",
        "[16,",
        "16]",
        "float32",
        "1.0",
        "kB",
        "->",
        "bert.pooler.dense.weight",
    ]
    assert "  weights for BertForPreTraining: 46 variables, 25.3 kB" in lines
    assert any(line.startswith("  optimizer state: 93 variables,") for line in lines)


def test_without_config_maps_by_the_name_table(full_release: Path, tmp_path: Path) -> None:
    code, out = run(str(index_only(full_release, tmp_path / "r", config=False)), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["config"] is None and doc["architecture"] is None
    by_name = {v["name"]: v for v in doc["variables"]}
    assert by_name["bert/pooler/dense/bias"]["maps_to"] == "bert.pooler.dense.bias"
    assert by_name["global_step"]["skip_reason"] == "training step counter"


def test_reports_why_convert_would_refuse(release, tmp_path: Path) -> None:
    folder = release("with_unknown", extra={"mystery/thing": np.ones(3, np.float32)})
    code, out = run(str(index_only(folder, tmp_path / "r")), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert "mystery/thing" in doc["problem"] and "--ignore-unknown" in doc["problem"]
    mystery = next(v for v in doc["variables"] if v["name"] == "mystery/thing")
    assert mystery["maps_to"] is None and "unrecognised" in mystery["skip_reason"]
    assert doc["totals"]["other_skipped"] == {"count": 1, "bytes": 12}

    config = json.loads((folder / "bert_config.json").read_text())
    (tmp_path / "bad.json").write_text(json.dumps({**config, "hidden_size": 32}))
    code, out = run(str(folder), "--config", str(tmp_path / "bad.json"))
    assert code == 0, out
    assert "convert would refuse this: hidden_size 32 in" in out
    assert "-> bert.pooler.dense.weight" in out  # still mapped, by the name table


@pytest.mark.parametrize("what", ["missing", "not_a_checkpoint"])
def test_errors_are_one_line(tmp_path: Path, what: str) -> None:
    target = tmp_path / "nothing"
    if what == "not_a_checkpoint":
        target.mkdir()
        (target / "model.ckpt.index").write_bytes(b"this is not a table" * 10)
    code, out = run(str(target))
    assert code == 3
    assert out.startswith("error: ") and out.count("\n") == 1
    assert "bad magic" in out if what == "not_a_checkpoint" else "not found" in out


# --- the vocab (issue 12, item 2) ------------------------------------------------------------


def test_reports_the_vocab(full_release: Path) -> None:
    code, out = run(str(full_release))
    assert code == 0, out
    tail = out.splitlines()[-7:]
    pieces = sum(t.startswith("##") for t in VOCAB)
    assert tail == [
        "",
        f"{full_release / 'vocab.txt'}: {len(VOCAB)} tokens for vocab_size 40; "
        f"{40 - len(VOCAB)} embedding rows with no token",
        f"  {len(VOCAB) - 5 - pieces} whole words, {pieces} ##-pieces, 5 special, "
        "0 other [..] markers",
        "  letters beyond ASCII: å æ ø",
        "  casing: uncased (inferred)",
        "  normalisation: lowercase; strip accents except å; compose (NFC); … -> ...",
        "  never produced: none",
    ]
    code, out = run(str(full_release), "--json")
    vocab = json.loads(out)["vocab"]
    assert vocab["path"] == str(full_release / "vocab.txt")
    assert (vocab["tokens"], vocab["vocab_size"], vocab["rows_without_token"]) == (36, 40, 4)
    assert vocab["rule"]["keep_letters"] == "å" and vocab["casing"] == "uncased"


def test_vocab_tokens_never_produced(full_release: Path, tmp_path: Path) -> None:
    """A SentencePiece marker leaked into the vocab (the Norwegian release), and capitals."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join([*VOCAB[:-2], "##_og", "▁ikke"]) + "\n", encoding="utf-8")
    code, out = run(str(index_only(full_release, tmp_path / "r")), "--vocab", str(vocab))
    assert code == 0, out
    assert out.splitlines()[-1] == "  never produced: 2 sentencepiece (e.g. '##_og', '▁ikke')"
    doc = json.loads(run(str(tmp_path / "r"), "--vocab", str(vocab), "--json")[1])
    never = doc["vocab"]["never_produced"]
    assert never["sentencepiece"] == {"count": 2, "examples": ["##_og", "▁ikke"]}


def test_without_vocab_and_with_a_bad_one(full_release: Path, tmp_path: Path) -> None:
    folder = index_only(full_release, tmp_path / "r")
    code, out = run(str(folder))
    assert code == 0 and out.splitlines()[-1] == "(no vocab.txt beside the checkpoint)"
    assert json.loads(run(str(folder), "--json")[1])["vocab"] is None
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nog\nog\n")
    doc = json.loads(run(str(folder), "--json")[1])
    assert doc["vocab"] is None
    assert doc["problem"] == f"{folder / 'vocab.txt'}: token 'og' appears twice, on lines 6 and 7"


def test_electra_lists_family_and_part_of_each_variable(tmp_path: Path) -> None:
    """Issue 14: the family from the names; each weight with the network(s) it goes into."""
    from tfckpt_electra import write_release

    folder = write_release(tmp_path / "electra")
    code, out = run(str(folder), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["family"] == "electra" and doc["problem"] is None
    assert doc["architectures"] == {
        "discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM",
    }  # fmt: skip
    by_name = {v["name"]: v for v in doc["variables"]}
    # Shared: the generator reads the discriminator's table.
    shared = by_name["electra/embeddings/word_embeddings"]["parts"]
    assert shared == ["discriminator", "generator"]
    assert by_name["generator/encoder/layer_1/output/dense/kernel"]["parts"] == ["generator"]
    assert by_name["discriminator_predictions/dense_1/bias"] == {
        "name": "discriminator_predictions/dense_1/bias", "shape": [1], "dtype": "float32",
        "bytes": 4, "maps_to": "discriminator_predictions.dense_prediction.bias",
        "skip_reason": None, "parts": ["discriminator"],
    }  # fmt: skip
    assert by_name["generator_predictions/output_bias/adam_v"]["skip_reason"] == (
        "Adam optimizer slot"
    )
    code, text = run(str(folder))
    assert "-> electra.embeddings.word_embeddings.weight (discriminator, generator)" in text
    assert "family: electra" in text and "no bert_config.json" not in text


def test_a_checkpoint_of_no_known_family_is_a_problem_not_an_error(tmp_path: Path) -> None:
    from tfckpt import save_tf1_checkpoint

    save_tf1_checkpoint(tmp_path / "model.ckpt", {"roberta/x": np.zeros(2, np.float32)})
    code, out = run(str(tmp_path / "model.ckpt"), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["family"] is None
    assert doc["problem"].endswith(
        "model.ckpt.index: not a checkpoint of a family danbert knows (ALBERT, BERT, ELECTRA, "
        "Model Garden BERT) (variables like roberta/x)"
    )


def test_albert_lists_its_groups_and_names_its_sentencepiece_model(tmp_path: Path) -> None:
    """Issue 15: ALBERT's family, its shared groups mapped, the .model named as the vocab."""
    from tfckpt_albert import write_release

    folder = write_release(tmp_path / "albert_base", spm_model=None)
    (folder / "30k-clean.model").write_bytes(b"not read by inspect")
    code, out = run(str(folder), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["family"] == "albert" and doc["problem"] is None
    assert doc["architecture"] == "AlbertForPreTraining"
    by_name = {v["name"]: v for v in doc["variables"]}
    assert (
        by_name["bert/encoder/transformer/group_1/inner_group_0/LayerNorm_1/gamma"]["maps_to"]
        == "albert.encoder.albert_layer_groups.1.albert_layers.0.full_layer_layer_norm.weight"
    )
    code, text = run(str(folder))
    assert "30k-clean.model: a SentencePiece model" in text

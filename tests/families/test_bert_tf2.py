"""Model Garden (TF2) BERT checkpoints: converted, then compared with what Model Garden itself
computed on the same inputs (tests/tfckpt_tf2.py writes both, in a subprocess)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from danbert_convert.errors import InputError
from danbert_convert.stages.convert import convert
from danbert_convert.stages.inspect import OPTIMIZER, OTHER, inspect_checkpoint
from danbert_convert.stages.verify import verify

# transformers in float32 against Model Garden in float32: rounding of two float32 forward
# passes, relative to each output's largest value.
RTOL = 2e-5

PRETRAINERS = ("trainer", "trainer_params", "model")
ENCODERS = ("encoder", "encoder_release")


def _config(src: Path) -> Path | None:
    """The config a layout without its own gets: the same model's, from the sibling layouts
    the fixture wrote (the trainer's params.yaml; the published encoder's bert_config.json)."""
    if (src / "params.yaml").is_file() or (src / "bert_config.json").is_file():
        return None
    if src.name in ENCODERS:
        return src.parent / "encoder_release" / "bert_config.json"
    return src.parent / "trainer_params" / "params.yaml"


def _outputs(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "outputs.npz") as npz:
        return {k: npz[k] for k in npz.files}


def _run(out: Path, io: dict[str, np.ndarray]):
    import torch
    import transformers

    config = json.loads((out / "config.json").read_text())
    cls = getattr(transformers, config["architectures"][0])
    model = cls.from_pretrained(out).eval()
    with torch.no_grad():
        return model(
            input_ids=torch.from_numpy(io["input_word_ids"].astype(np.int64)),
            attention_mask=torch.from_numpy(io["input_mask"].astype(np.int64)),
            token_type_ids=torch.from_numpy(io["input_type_ids"].astype(np.int64)),
            output_hidden_states=True,
        )


def _close(name: str, got, want: np.ndarray) -> float:
    got = got.detach().numpy() if hasattr(got, "detach") else np.asarray(got)
    assert got.shape == want.shape, name
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < RTOL, f"{name}: {err:.2e} relative"
    return err


@pytest.mark.parametrize("kind", ["bert", "bert_v2"])
@pytest.mark.parametrize("layout", [*ENCODERS, *PRETRAINERS])
def test_converted_model_computes_what_model_garden_computed(
    modelgarden_release, tmp_path, kind, layout
):
    src = modelgarden_release(kind, layout)
    out = tmp_path / "out"
    convert(src, out, config=_config(src))
    io = _outputs(src)
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_act"] == "gelu_new"  # Model Garden's gelu is the tanh form
    assert config["num_attention_heads"] == 3  # read from the einsum kernels
    result = _run(out, io)
    _close("sequence_output", result.hidden_states[-1], io["sequence_output"])
    if layout in ENCODERS:
        assert config["architectures"] == ["BertModel"]
        _close("pooled_output", result.pooler_output, io["pooled_output"])
    else:
        assert config["architectures"] == ["BertForPreTraining"]
        _close("mlm_logits", result.prediction_logits, io["mlm_logits"])
        # transformers' pooler is the next-sentence head's own dense: the logits agree
        _close("next_sentence", result.seq_relationship_logits, io["next_sentence"])


def test_exact_gelu_would_not_match(modelgarden_release, tmp_path):
    """The comparison above can fail: exact gelu instead of Model Garden's tanh form."""
    src = modelgarden_release("bert", "trainer_params")
    convert(src, tmp_path / "out", hidden_act="gelu")
    io = _outputs(src)
    result = _run(tmp_path / "out", io)
    with pytest.raises(AssertionError, match="relative"):
        _close("mlm_logits", result.prediction_logits, io["mlm_logits"])


def test_pretrainer_skips_optimizer_state_and_the_untrained_encoder_pooler(
    modelgarden_release, tmp_path
):
    src = modelgarden_release("bert", "trainer_params")
    convert(src, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "danbert-manifest.json").read_text())
    sources = {t["name"]: t["source"] for t in manifest["tensors"]}
    assert sources["bert.pooler.dense.weight"].endswith("classification_heads/0/dense/kernel")
    assert sources["bert.embeddings.word_embeddings.weight"].endswith(
        ("masked_lm/embedding_table", "_embedding_layer/embeddings")
    )
    assert (
        "cls.predictions.decoder.weight" not in sources
        or sources["cls.predictions.decoder.weight"]
        == sources["bert.embeddings.word_embeddings.weight"]
    )
    skipped = {s["name"]: s["reason"] for s in manifest["skipped"]}
    reasons = set(skipped.values())
    assert any("never trains" in r for n, r in skipped.items() if "_pooler_layer/" in n)
    assert "optimizer slot" in reasons
    assert {"global_step", "save_counter"} <= skipped.keys()
    slots = {n for n in skipped if "/.OPTIMIZER_SLOT/" in n}
    # an m and a v for every weight written (the encoder's pooler gets no gradient, no slots)
    assert {f"{sources[t['name']]}/.OPTIMIZER_SLOT/optimizer/{s}" for t in manifest["tensors"]
            for s in ("m", "v")} == slots  # fmt: skip


def test_encoder_alone_of_a_pretrainer_takes_the_trained_pooler(modelgarden_release, tmp_path):
    src = modelgarden_release("bert", "trainer_params")
    convert(src, tmp_path / "out", heads="none")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]
    io = _outputs(src)
    result = _run(tmp_path / "out", io)
    _close("sequence_output", result.last_hidden_state, io["sequence_output"])
    # pooled = tanh(dense(CLS)) with the head's dense, which the NSP logits then read
    manifest = json.loads((tmp_path / "out" / "danbert-manifest.json").read_text())
    sources = {t["name"]: t["source"] for t in manifest["tensors"]}
    assert sources["pooler.dense.weight"].endswith("classification_heads/0/dense/kernel")


def _edit_params(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    edit(params["task"]["model"])
    (dst / "params.yaml").write_text(yaml.safe_dump(params))
    return dst


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["encoder"]["bert"].update(hidden_size=32),
         r"params.yaml: hidden_size 32 vs 24 from the shape of .*embedding"),
        (lambda m: m["encoder"]["bert"].update(num_layers=3),
         r"params.yaml: num_hidden_layers 3 vs 2 from the count of _transformer_layers"),
        (lambda m: m["encoder"]["bert"].update(num_attention_heads=2),
         r"params.yaml: num_attention_heads 2 vs 3 from the shape of .*_query_dense/kernel"),
        (lambda m: m["encoder"]["bert"].update(norm_first=True),
         r"params.yaml: the encoder's norm_first is True; transformers' BertModel has no "
         r"equivalent"),
        (lambda m: m["encoder"]["bert"].update(embedding_size=8),
         r"params.yaml: the encoder's embedding_size is 8"),
        (lambda m: m["encoder"]["bert"].update(output_range=1),
         r"params.yaml: the encoder's output_range is 1"),
        (lambda m: m["cls_heads"][0].update(name="sentiment"),
         r"params.yaml: cls_heads\[0\] name is 'sentiment'; transformers' BertForPreTraining"),
        (lambda m: m["cls_heads"][0].update(cls_token_idx=1),
         r"params.yaml: cls_heads\[0\] cls_token_idx is 1"),
        (lambda m: m["cls_heads"][0].update(activation="gelu"),
         r"params.yaml: cls_heads\[0\] activation is 'gelu'"),
        (lambda m: m["cls_heads"][0].pop("inner_dim"),
         r"params.yaml: cls_heads\[0\] inner_dim is 0"),
        (lambda m: m["cls_heads"].append(dict(m["cls_heads"][0])),
         r"params.yaml: 2 cls_heads"),
        (lambda m: m.pop("cls_heads"),
         r"params.yaml: no cls_heads, but the checkpoint has classification_heads/0"),
        (lambda m: m["encoder"].update(bert=[1]),
         r"params.yaml: bert is \[1\], not a mapping"),
        (lambda m: m["encoder"]["bert"].update(hidden_activation="swishy"),
         r"params.yaml: activation 'swishy' is not supported"),
        (lambda m: m.update(mlm_activation="relu"),
         r"params.yaml: mlm_activation 'relu' differs from hidden_activation 'gelu'"),
        (lambda m: m["encoder"].update(type="mobilebert"),
         r"params.yaml: encoder type 'mobilebert'"),
    ],
)  # fmt: skip
def test_params_yaml_is_checked_against_the_shapes(modelgarden_release, tmp_path, edit, message):
    src = _edit_params(modelgarden_release("bert", "trainer_params"), tmp_path / "src", edit)
    with pytest.raises(InputError, match=message):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_params_yaml_activation_is_used(modelgarden_release, tmp_path):
    src = _edit_params(
        modelgarden_release("bert", "trainer_params"), tmp_path / "src",
        lambda m: m["encoder"]["bert"].update(hidden_activation="relu", initializer_range=0.3),
    )  # fmt: skip
    src_params = yaml.safe_load((src / "params.yaml").read_text())
    src_params["task"]["model"]["mlm_activation"] = "relu"
    (src / "params.yaml").write_text(yaml.safe_dump(src_params))
    convert(src, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["hidden_act"] == "relu"
    assert config["initializer_range"] == 0.3


@pytest.mark.parametrize("layout", ["encoder", "trainer", "model"])
def test_a_checkpoint_alone_is_refused(modelgarden_release, tmp_path, layout):
    """Nothing in the variables says norm_first or the activation: a config is needed."""
    with pytest.raises(InputError, match=r"ckpt-1.index: a Model Garden checkpoint does not "
                                         r"record its encoder's settings .* --config"):  # fmt: skip
        convert(modelgarden_release("bert", layout), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_bert_config_cannot_describe_a_sentence_head(modelgarden_release, tmp_path):
    src = modelgarden_release("bert", "trainer")
    config = src.parent / "encoder_release" / "bert_config.json"
    with pytest.raises(InputError, match=r"bert_config.json: a BertConfig does not say how the "
                                         r"checkpoint's classification_heads/0 pools"):  # fmt: skip
        convert(src, tmp_path / "out", config=config)


def test_bert_config_beside_an_encoder_is_checked(modelgarden_release, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(modelgarden_release("bert", "encoder_release"), src)
    cfg = json.loads((src / "bert_config.json").read_text())
    cfg["intermediate_size"] = 64
    (src / "bert_config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"bert_config.json: intermediate_size 64 vs 48 from "
                                         r"the shape of .*_intermediate_dense/kernel"):  # fmt: skip
        convert(src, tmp_path / "out")


def test_yaml_aliases_are_refused(modelgarden_release, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(modelgarden_release("bert", "trainer_params"), src)
    (src / "params.yaml").write_text("a: &x [1, 2]\nb: *x\n")
    with pytest.raises(InputError, match=r"params.yaml: not valid YAML \(aliases are not"):
        convert(src, tmp_path / "out")


def test_verify_passes_and_names_a_tampered_weight(modelgarden_release, tmp_path):
    from safetensors.numpy import load_file, save_file

    src = modelgarden_release("bert_v2", "trainer_params")
    out = tmp_path / "out"
    convert(src, out)
    report = verify(out)
    assert report.ok, report.table()
    parity = next(c for c in report.checks if c.name == "parity")
    assert parity.status == "pass", parity
    # One head's columns of one query kernel swapped: a wrong head split would look like this.
    weights = load_file(out / "model.safetensors")
    name = "bert.encoder.layer.1.attention.self.query.weight"
    w = weights[name].copy()
    w[:8], w[8:16] = weights[name][8:16], weights[name][:8]
    weights[name] = w
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    report = verify(out)
    parity = next(c for c in report.checks if c.name == "parity")
    assert parity.status == "fail"


def test_inspect_lists_object_paths_and_targets(modelgarden_release):
    listing = inspect_checkpoint(modelgarden_release("bert", "trainer_params"))
    by_name = {v.name: v for v in listing.variables}
    query = next(n for n in by_name if n.endswith("_transformer_layers/1/_attention_layer/"
                                                  "_query_dense/kernel"))  # fmt: skip
    assert by_name[query].maps_to == "bert.encoder.layer.1.attention.self.query.weight"
    assert listing.problem is None
    assert all(not n.endswith("/.ATTRIBUTES/VARIABLE_VALUE") for n in by_name)
    assert by_name[f"{query}/.OPTIMIZER_SLOT/optimizer/m"].kind == OPTIMIZER
    assert by_name["save_counter"].kind == OPTIMIZER  # training state
    assert by_name["_CHECKPOINTABLE_OBJECT_GRAPH"].kind == OTHER

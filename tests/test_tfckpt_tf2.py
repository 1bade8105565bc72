"""The Model Garden fixtures (tfckpt_tf2) write what Model Garden writes: keys as its savers
choose them, optimizer slots, and its outputs on fixed inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

SLOT = "/.OPTIMIZER_SLOT/optimizer/"


def keys(prefix) -> dict[str, list[int]]:
    import tensorflow as tf

    return dict(tf.train.list_variables(str(prefix)))


@pytest.mark.parametrize("kind", ["bert", "bert_v2"])
def test_trainer_checkpoint_is_base_trainers(modelgarden_release, kind):
    folder = modelgarden_release(kind, "trainer")
    k = keys(folder / "ckpt-1")
    assert k["global_step/.ATTRIBUTES/VARIABLE_VALUE"] == []
    assert k["save_counter/.ATTRIBUTES/VARIABLE_VALUE"] == []
    # The shared word table is keyed where the saver meets it first: under masked_lm/.
    assert k["masked_lm/embedding_table/.ATTRIBUTES/VARIABLE_VALUE"] == [40, 24]
    assert k["masked_lm/output_bias.Sbias/.ATTRIBUTES/VARIABLE_VALUE"] == [40]
    assert k["model/classification_heads/0/out_proj/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == [24, 2]
    assert k["next_sentence..pooler_dense/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == [24, 24]
    # Legacy AdamW: m and v beside every trained variable, shaped like it.
    table = "masked_lm/embedding_table"
    assert k[f"{table}{SLOT}m/.ATTRIBUTES/VARIABLE_VALUE"] == [40, 24]
    assert k[f"{table}{SLOT}v/.ATTRIBUTES/VARIABLE_VALUE"] == [40, 24]
    assert not any(key.startswith("model/encoder_network/") for key in k)
    layer = "layer_with_weights-4" if kind == "bert" else "_transformer_layers/0"
    query = f"encoder/{layer}/_attention_layer/_query_dense/kernel"
    assert k[f"{query}/.ATTRIBUTES/VARIABLE_VALUE"] == [24, 3, 8]
    assert f"{query}{SLOT}m/.ATTRIBUTES/VARIABLE_VALUE" in k


@pytest.mark.parametrize("kind", ["bert", "bert_v2"])
def test_encoder_and_model_checkpoints(modelgarden_release, kind):
    enc = keys(modelgarden_release(kind, "encoder") / "ckpt-1")
    word = "layer_with_weights-0" if kind == "bert" else "_embedding_layer"
    assert enc[f"encoder/{word}/embeddings/.ATTRIBUTES/VARIABLE_VALUE"] == [40, 24]
    assert not any(SLOT in key for key in enc)
    assert {key.split("/")[0] for key in enc} == {"encoder", "save_counter",
                                                  "_CHECKPOINTABLE_OBJECT_GRAPH"}  # fmt: skip

    model = keys(modelgarden_release(kind, "model") / "ckpt-1")
    assert model["model/masked_lm/embedding_table/.ATTRIBUTES/VARIABLE_VALUE"] == [40, 24]
    assert "model/classification_heads/0/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE" in model
    assert any(key.startswith("model/encoder_network/") for key in model)


def test_encoder_release_is_a_published_encoder(modelgarden_release):
    folder = modelgarden_release("bert", "encoder_release")
    assert not (folder / "checkpoint").exists()  # Checkpoint.write: no state file
    k = keys(folder / "bert_model.ckpt")
    assert "save_counter/.ATTRIBUTES/VARIABLE_VALUE" not in k
    config = json.loads((folder / "bert_config.json").read_text())
    assert config["hidden_act"] == "gelu"
    assert (config["num_attention_heads"], config["num_hidden_layers"]) == (3, 2)
    assert (folder / "vocab.txt").read_text(encoding="utf-8").startswith("[PAD]\n")


@pytest.mark.parametrize("kind", ["bert", "bert_v2"])
def test_params_yaml_is_model_gardens(modelgarden_release, kind):
    folder = modelgarden_release(kind, "trainer_params")
    params = yaml.safe_load((folder / "params.yaml").read_text())
    encoder = params["task"]["model"]["encoder"]
    assert encoder["type"] == kind
    assert encoder[kind]["num_attention_heads"] == 3
    assert encoder[kind]["hidden_activation"] == "gelu"
    assert params["trainer"]["optimizer_config"]["optimizer"]["type"] == "adamw"


def test_outputs(modelgarden_release):
    out = np.load(modelgarden_release("bert", "trainer") / "outputs.npz")
    B, S = out["input_word_ids"].shape
    assert out["sequence_output"].shape == (B, S, 24)
    assert out["pooled_output"].shape == (B, 24)
    assert out["mlm_logits"].shape == (B, S, 40)
    assert out["next_sentence"].shape == (B, 2)
    assert out["input_mask"].min() == 0 and out["input_mask"][1].all()
    assert np.isfinite(out["mlm_logits"]).all()
    # Large enough that exact and tanh gelu differ measurably (initializer_range 0.3).
    assert np.abs(out["mlm_logits"]).max() > 1


def test_missing_modelgarden_is_named(monkeypatch, tmp_path):
    import tfckpt_tf2

    monkeypatch.setattr(tfckpt_tf2, "MODELGARDEN", tmp_path / "modelgarden")
    assert str(tmp_path / "modelgarden") in tfckpt_tf2.missing_reason()

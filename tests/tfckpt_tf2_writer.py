"""Run by tests/tfckpt_tf2.py in a subprocess, with Model Garden (tf-models-official) on
PYTHONPATH: builds a tiny BERT with Model Garden's own classes, takes one AdamW step and saves
it in each layout of tfckpt_tf2.LAYOUTS, with Model Garden's outputs on fixed inputs.

    python tfckpt_tf2_writer.py REQUEST.json

REQUEST.json: {"root", "kind" ("bert" | "bert_v2"), "layouts", "dims" (BertEncoderConfig
fields), "initializer_range", "seed", "vocab" (lines of vocab.txt), "inputs" (input_word_ids,
input_mask, input_type_ids as nested lists)}. Not a test module (pytest does not collect it).
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import official  # noqa: E402

# official/core/__init__.py imports the whole trainer stack (input_reader needs
# tensorflow_datasets, which the test install leaves out); only its config dataclasses are
# needed, so the package is entered without running its __init__.
_core = types.ModuleType("official.core")
_core.__path__ = [str(Path(official.__path__[0]) / "core")]
sys.modules["official.core"] = _core

import orbit  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from official.core import config_definitions as cfg  # noqa: E402
from official.modeling import optimization, tf_utils  # noqa: E402
from official.modeling.hyperparams import params_dict  # noqa: E402
from official.nlp.configs import bert, encoders  # noqa: E402
from official.nlp.modeling import layers, models  # noqa: E402


def experiment(kind: str, dims: dict, initializer_range: float) -> cfg.ExperimentConfig:
    """The bert/pretraining experiment (official/nlp/configs/pretraining_experiments.py) at
    test size: MaskedLMConfig's model (official/nlp/tasks/masked_lm.py, whose module needs
    the data pipeline) and _TRAINER's AdamW at a constant learning rate (its polynomial warm-up
    would make the one step a no-op)."""
    enc = encoders.BertEncoderConfig(**dims, initializer_range=initializer_range)
    model = bert.PretrainerConfig(
        encoder=encoders.EncoderConfig(type=kind, **{kind: enc}),
        cls_heads=[bert.ClsHeadConfig(inner_dim=dims["hidden_size"], num_classes=2,
                                      dropout_rate=0.1, name="next_sentence")],
        mlm_initializer_range=initializer_range,
    )  # fmt: skip
    adamw = {
        "weight_decay_rate": 0.01,
        "exclude_from_weight_decay": ["LayerNorm", "layer_norm", "bias"],
    }
    opt = optimization.OptimizationConfig({
        "optimizer": {"type": "adamw", "adamw": adamw},
        "learning_rate": {"type": "constant", "constant": {"learning_rate": 0.05}},
    })  # fmt: skip
    return cfg.ExperimentConfig(task=cfg.TaskConfig(model=model),
                                trainer=cfg.TrainerConfig(optimizer_config=opt))  # fmt: skip


def build_model(config: bert.PretrainerConfig) -> models.BertPretrainerV2:
    """The model as MaskedLMTask.build_model (official/nlp/tasks/masked_lm.py) builds it."""
    encoder_network = encoders.build_encoder(config.encoder)
    cls_heads = [layers.ClassificationHead(**c.as_dict()) for c in config.cls_heads]
    return models.BertPretrainerV2(
        mlm_activation=tf_utils.get_activation(config.mlm_activation),
        mlm_initializer=tf_keras.initializers.TruncatedNormal(stddev=config.mlm_initializer_range),
        encoder_network=encoder_network,
        classification_heads=cls_heads,
    )


def bert_config_json(dims: dict, initializer_range: float) -> dict:
    """bert_config.json as Model Garden's published encoders ship it (TF1 keys)."""
    return {
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": dims["hidden_size"],
        "initializer_range": initializer_range,
        "intermediate_size": dims["intermediate_size"],
        "max_position_embeddings": dims["max_position_embeddings"],
        "num_attention_heads": dims["num_attention_heads"],
        "num_hidden_layers": dims["num_layers"],
        "type_vocab_size": dims["type_vocab_size"],
        "vocab_size": dims["vocab_size"],
    }


def main(request_path: str) -> None:
    req = json.loads(Path(request_path).read_text())
    root, kind, dims = Path(req["root"]), req["kind"], req["dims"]
    tf_keras.utils.set_random_seed(req["seed"])
    exp = experiment(kind, dims, req["initializer_range"])
    model = build_model(exp.task.model)
    factory = optimization.OptimizerFactory(exp.trainer.optimizer_config)
    optimizer = factory.build_optimizer(factory.build_learning_rate())
    global_step = orbit.utils.create_global_step()

    inputs = {k: tf.constant(v, tf.int32) for k, v in req["inputs"].items()}
    batch, seq = inputs["input_word_ids"].shape
    # Every position, so that mlm_logits covers the whole sequence.
    inputs["masked_lm_positions"] = tf.tile(tf.range(seq)[None], [batch, 1])
    rng = np.random.default_rng(req["seed"])
    xent = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    mlm_labels = rng.integers(0, dims["vocab_size"], (batch, seq))
    nsp_labels = rng.integers(0, 2, (batch,))
    with tf.GradientTape() as tape:
        out = model(inputs, training=True)
        loss = xent(mlm_labels, out["mlm_logits"]) + xent(nsp_labels, out["next_sentence"])
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    # The encoder's own pooler gets no gradient in pre-training (NSP has its own head).
    trained = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
    optimizer.apply_gradients(trained)
    global_step.assign_add(1)

    out = model(inputs, training=False)
    outputs = {
        **{k: v.numpy() for k, v in inputs.items() if k != "masked_lm_positions"},
        "sequence_output": out["sequence_output"].numpy(),
        "pooled_output": out["pooled_output"].numpy(),
        "mlm_logits": out["mlm_logits"].numpy(),
        "next_sentence": out["next_sentence"].numpy(),
    }
    encoder = model.encoder_network
    trainer_ckpt = tf.train.Checkpoint(global_step=global_step, model=model,
                                       optimizer=optimizer, **model.checkpoint_items)  # fmt: skip
    for layout in req["layouts"]:
        folder = root / layout
        folder.mkdir(parents=True)
        if layout == "encoder":
            tf.train.Checkpoint(encoder=encoder).save(str(folder / "ckpt"))
        elif layout == "encoder_release":
            # tf2_bert_encoder_checkpoint_converter.py: Checkpoint(encoder=...).write(path).
            tf.train.Checkpoint(encoder=encoder).write(str(folder / "bert_model.ckpt"))
            config = bert_config_json(dims, req["initializer_range"])
            (folder / "bert_config.json").write_text(json.dumps(config, indent=2))
        elif layout in ("trainer", "trainer_params"):
            # train_lib's CheckpointManager over base_trainer's checkpoint: ckpt-<step>.
            manager = tf.train.CheckpointManager(trainer_ckpt, str(folder), max_to_keep=5,
                                                 step_counter=global_step)  # fmt: skip
            manager.save(checkpoint_number=global_step)
            if layout == "trainer_params":
                # train_utils.serialize_config: <model_dir>/params.yaml.
                params_dict.save_params_dict_to_yaml(exp, str(folder / "params.yaml"))
        elif layout == "model":
            tf.train.Checkpoint(model=model).save(str(folder / "ckpt"))
        else:
            raise SystemExit(f"unknown layout {layout!r}")
        (folder / "vocab.txt").write_text("\n".join(req["vocab"]) + "\n", encoding="utf-8")
        np.savez(folder / "outputs.npz", **outputs)


if __name__ == "__main__":
    main(sys.argv[1])

"""Tiny Google-BERT TF1 checkpoints written by TensorFlow, named as google-research/bert names them.

Each checkpoint folder looks like an unpacked Nordic BERT release: bert_config.json, vocab.txt
and bert_model.ckpt.{index,data-00000-of-00001,meta}, with Adam slots and global_step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "jeg", "bor", "på", "østerbro", "og", "spiser", "æbler", "sal", "sål", "hus",
    "hund", "en", "er", "det", "til", "i", "##e", "##r", "##s", "##en", "kat",
    "god", "dag", ".", ",", "å", "ø", "æ", "a", "b", "c",
]  # fmt: skip

TINY_CONFIG = {
    "attention_probs_dropout_prob": 0.1,
    "directionality": "bidi",
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 16,
    "initializer_range": 0.02,
    "intermediate_size": 32,
    "max_position_embeddings": 32,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pooler_fc_size": 16,
    "pooler_num_attention_heads": 2,
    "pooler_num_fc_layers": 3,
    "pooler_size_per_head": 8,
    "pooler_type": "first_token_transform",
    "type_vocab_size": 2,
    "vocab_size": 40,  # longer than VOCAB on purpose, as in the Danish release
}


def bert_variables(
    cfg: dict,
    seed: int = 0,
    heads: tuple[str, ...] = ("mlm", "nsp"),
    num_labels: int = 3,
    std: float = 0.3,
) -> dict[str, np.ndarray]:
    """Model variables of a Google-BERT checkpoint for `cfg`, normal with `std`.

    The default 0.3 gives large activations (logits in the tens); 0.02 is BERT's own
    initializer_range. LayerNorm gammas are 1 + that noise.
    """
    rng = np.random.default_rng(seed)
    H, inter, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0.0, std, shape).astype(np.float32)

    def ln(prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}/LayerNorm/gamma": 1 + w(H), f"{prefix}/LayerNorm/beta": w(H)}

    def dense(prefix: str, n_in: int, n_out: int) -> dict[str, np.ndarray]:
        return {f"{prefix}/kernel": w(n_in, n_out), f"{prefix}/bias": w(n_out)}

    v: dict[str, np.ndarray] = {
        "bert/embeddings/word_embeddings": w(V, H),
        "bert/embeddings/token_type_embeddings": w(cfg["type_vocab_size"], H),
        "bert/embeddings/position_embeddings": w(cfg["max_position_embeddings"], H),
        **ln("bert/embeddings"),
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"bert/encoder/layer_{i}"
        for part in ("query", "key", "value"):
            v.update(dense(f"{p}/attention/self/{part}", H, H))
        v.update(dense(f"{p}/attention/output/dense", H, H))
        v.update(ln(f"{p}/attention/output"))
        v.update(dense(f"{p}/intermediate/dense", H, inter))
        v.update(dense(f"{p}/output/dense", inter, H))
        v.update(ln(f"{p}/output"))
    v.update(dense("bert/pooler/dense", H, H))
    if "mlm" in heads:
        v.update(dense("cls/predictions/transform/dense", H, H))
        v.update(ln("cls/predictions/transform"))
        v["cls/predictions/output_bias"] = w(V)
    if "nsp" in heads:
        v["cls/seq_relationship/output_weights"] = w(2, H)
        v["cls/seq_relationship/output_bias"] = w(2)
    if "classifier" in heads:
        v["output_weights"] = w(num_labels, H)
        v["output_bias"] = w(num_labels)
    if "squad" in heads:
        v["cls/squad/output_weights"] = w(2, H)
        v["cls/squad/output_bias"] = w(2)
    return v


def with_training_state(
    model: dict[str, np.ndarray], step: int = 1000, slots: tuple[str, str] = ("adam_m", "adam_v")
) -> dict[str, np.ndarray]:
    """Add optimizer slots for every weight and global_step, as run_pretraining.py saves them.

    `slots` names the two slots: Adam's (and ALBERT's public LAMBOptimizer's) `adam_m`/`adam_v`
    by default; ALBERT's export_checkpoints.py also filters `lamb_m`/`lamb_v`.
    """
    out = dict(model)
    m, v = slots
    for name, value in model.items():
        out[f"{name}/{m}"] = np.full_like(value, 0.01)
        out[f"{name}/{v}"] = np.full_like(value, 0.02)
    out["global_step"] = np.array(step, dtype=np.int64)
    return out


def save_tf1_checkpoint(prefix: Path, variables: dict[str, np.ndarray]) -> None:
    """Save `variables` under their exact names with a tf.compat.v1 Saver."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        tf_vars = {
            name: tf.compat.v1.Variable(value, name=name) for name, value in variables.items()
        }
        saver = tf.compat.v1.train.Saver(var_list=tf_vars)
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(prefix), write_state=False)


def write_release(
    folder: Path,
    *,
    cfg: dict | None = None,
    config_overrides: dict | None = None,
    variables: dict[str, np.ndarray] | None = None,
    extra: dict[str, np.ndarray] | None = None,
    vocab: list[str] | None = None,
    seed: int = 0,
    heads: tuple[str, ...] = ("mlm", "nsp"),
    std: float = 0.3,
) -> Path:
    """Write an unpacked-release folder; returns it. Variables default to bert_variables(cfg)."""
    cfg = dict(cfg or TINY_CONFIG)
    folder.mkdir(parents=True, exist_ok=True)
    if variables is None:
        variables = with_training_state(bert_variables(cfg, seed=seed, heads=heads, std=std))
    variables = {**variables, **(extra or {})}
    save_tf1_checkpoint(folder / "bert_model.ckpt", variables)
    (folder / "bert_config.json").write_text(
        json.dumps({**cfg, **(config_overrides or {})}, indent=2)
    )
    (folder / "vocab.txt").write_text("\n".join(vocab or VOCAB) + "\n", encoding="utf-8")
    return folder

"""Run in a subprocess with Model Garden on PYTHONPATH (as tfckpt_tf2_writer.py): writes Model
Garden BERT checkpoints that the converter must not turn silently into a wrong model.

    python tfckpt_tf2_adversarial.py ROOT CASE...

Each case: ROOT/CASE with ckpt-1.*, vocab.txt and outputs.npz (inputs and what Model Garden
computed). Not a test module.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import official  # noqa: E402

_core = types.ModuleType("official.core")
_core.__path__ = [str(Path(official.__path__[0]) / "core")]
sys.modules["official.core"] = _core

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
import yaml  # noqa: E402
from official.modeling import tf_utils  # noqa: E402
from official.nlp.modeling import layers, models, networks  # noqa: E402
from tfckpt import VOCAB  # noqa: E402

H, A, L, INTER, V, P = 24, 3, 2, 48, 40, 32
ENCODER = {"vocab_size": V, "hidden_size": H, "num_layers": L, "num_attention_heads": A,
           "intermediate_size": INTER, "max_position_embeddings": P, "type_vocab_size": 2,
           "hidden_activation": "gelu", "norm_first": False}  # fmt: skip


def init() -> tf_keras.initializers.Initializer:
    return tf_keras.initializers.TruncatedNormal(stddev=0.3)


def encoder(**kw) -> networks.BertEncoder:
    return networks.BertEncoder(vocab_size=V, hidden_size=H, num_layers=L, num_attention_heads=A,
                                intermediate_size=INTER, max_sequence_length=P, type_vocab_size=2,
                                initializer=init(), activation=tf_utils.get_activation("gelu"),
                                dict_outputs=True, **kw)  # fmt: skip


def main(root: Path, cases: list[str]) -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 36, (2, 7)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, 5:] = 0
    type_ids = np.zeros_like(ids)
    type_ids[1, 4:] = 1
    inputs = {"input_word_ids": tf.constant(ids), "input_mask": tf.constant(mask),
              "input_type_ids": tf.constant(type_ids)}  # fmt: skip
    for case in cases:
        tf_keras.utils.set_random_seed(0)
        folder = root / case
        folder.mkdir(parents=True)
        out: dict[str, np.ndarray] = {}
        if case == "norm_first":  # a pre-LayerNorm encoder, published without a config
            enc = encoder(norm_first=True)
            o = enc(inputs)
            out = {"sequence_output": o["sequence_output"], "pooled_output": o["pooled_output"]}
            tf.train.Checkpoint(encoder=enc).save(str(folder / "ckpt"))
        elif case == "cls_head":  # a 2-class head that is no NSP head, and params.yaml says so
            head = dict(inner_dim=H, num_classes=2, activation="gelu", cls_token_idx=1,
                        name="sentiment")  # fmt: skip
            model = models.BertPretrainerV2(
                encoder_network=encoder(), classification_heads=[layers.ClassificationHead(**head)],
                mlm_activation=tf_utils.get_activation("gelu"), mlm_initializer=init())  # fmt: skip
            o = model({**inputs, "masked_lm_positions": tf.tile(tf.range(7)[None], [2, 1])})
            out = {"sequence_output": o["sequence_output"], "head_logits": o["sentiment"]}
            tf.train.Checkpoint(model=model, **model.checkpoint_items).save(str(folder / "ckpt"))
            params = {"task": {"model": {"cls_heads": [{**head, "dropout_rate": 0.1}],
                                         "encoder": {"type": "bert", "bert": ENCODER},
                                         "mlm_activation": "gelu"}}}  # fmt: skip
            (folder / "params.yaml").write_text(yaml.safe_dump(params))
        elif case == "optimizer_weight":  # a float weight reachable only through `optimizer`
            enc = encoder()
            enc(inputs)
            holder = tf.Module()
            holder.head = tf.Variable(tf.ones([H, 5]))
            tf.train.Checkpoint(encoder=enc, optimizer=holder).save(str(folder / "ckpt"))
            # a published encoder's config, so that only the variable is in question
            bert_config = {"vocab_size": V, "hidden_size": H, "num_hidden_layers": L,
                           "num_attention_heads": A, "intermediate_size": INTER,
                           "max_position_embeddings": P, "type_vocab_size": 2,
                           "hidden_act": "gelu"}  # fmt: skip
            (folder / "bert_config.json").write_text(json.dumps(bert_config))
        else:
            raise SystemExit(f"unknown case {case!r}")
        (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
        np.savez(folder / "outputs.npz", input_word_ids=ids, input_mask=mask,
                 input_type_ids=type_ids, **{k: np.asarray(v) for k, v in out.items()})  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])

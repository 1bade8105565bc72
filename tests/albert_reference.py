"""An independent ALBERT forward pass in TensorFlow ops, straight from a checkpoint.

It restates google-research/albert's modeling.py (AlbertModel: embedding lookup, token-type and
position embeddings and LayerNorm at embedding_size; `embedding_hidden_mapping_in` when that is
not the hidden size; transformer_model's shared blocks, layer i running group int(i / L * G)'s
inner groups in turn, each attention_ffn_block with the -10000 mask adder, `LayerNorm` after
attention and `LayerNorm_1` after the feed-forward; the tanh pooler; contrib layer_norm's epsilon
1e-12; its "gelu", the tanh form) and run_pretraining.py's heads (get_masked_lm_output: dense to
embedding_size + activation, LayerNorm, the word table as decoder, output_bias;
get_sentence_order_output on the pooled output), reading each variable by its TF name. It
shares no code with danbert_convert or transformers: it is the witness the ALBERT tests compare
against. Dropout is off (inference); MLM logits are computed at every position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LAYER_NORM_EPS = 1e-12  # tf.contrib.layers.layer_norm's fixed variance_epsilon


@dataclass
class Outputs:
    # The encoder's input (after embedding_hidden_mapping_in), then each block's output, as
    # transformer_model's all_encoder_layers: L * inner_group_num of them, [batch, seq, H].
    hidden_states: list[np.ndarray]
    pooled: np.ndarray  # [batch, H]
    mlm_logits: np.ndarray  # [batch, seq, vocab]
    sop_logits: np.ndarray  # [batch, 2]


def forward(
    prefix: Path | str,
    config: dict,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
    attention_mask: np.ndarray,
    *,
    scope: str = "",
    dtype: str = "float64",
) -> Outputs:
    """Run the checkpoint at `prefix` with `config` (an albert_config.json dict) on [batch, seq]
    int arrays, in `dtype`; `scope` is put before every name ("module/" for a TF-Hub copy)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))

    def v(name: str) -> tf.Tensor:
        return tf.constant(reader.get_tensor(scope + name), dtype=dtype)

    def dense(x: tf.Tensor, name: str, act=None) -> tf.Tensor:
        y = tf.matmul(x, v(f"{name}/kernel")) + v(f"{name}/bias")
        return act(y) if act else y

    def layer_norm(x: tf.Tensor, name: str) -> tf.Tensor:
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return tf.nn.batch_normalization(
            x, mean, var, offset=v(f"{name}/beta"), scale=v(f"{name}/gamma"),
            variance_epsilon=LAYER_NORM_EPS,
        )  # fmt: skip

    def gelu(x: tf.Tensor) -> tf.Tensor:  # modeling.gelu: the tanh approximation
        return x * 0.5 * (1.0 + tf.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * tf.pow(x, 3))))

    act = {"gelu": gelu, "relu": tf.nn.relu, "tanh": tf.tanh}[config["hidden_act"].lower()]
    batch, seq = input_ids.shape
    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    size = hidden // heads

    # embedding_lookup, embedding_postprocessor (one-hot token types, sliced positions).
    table = v("bert/embeddings/word_embeddings")
    type_table = v("bert/embeddings/token_type_embeddings")
    x = tf.reshape(tf.gather(table, tf.constant(input_ids, dtype=tf.int32)), [batch * seq, -1])
    one_hot = tf.one_hot(tf.reshape(tf.constant(token_type_ids, tf.int32), [-1]),
                         type_table.shape[0], dtype=dtype)  # fmt: skip
    x += tf.matmul(one_hot, type_table)
    x += tf.tile(v("bert/embeddings/position_embeddings")[:seq], [batch, 1])
    x = layer_norm(x, "bert/embeddings/LayerNorm")
    if x.shape[-1] != hidden:
        x = dense(x, "bert/encoder/embedding_hidden_mapping_in")

    # dot_product_attention: [B, 1, F, T] adder from the [B, T] mask.
    mask = tf.constant(attention_mask, dtype=dtype)
    adder = (1.0 - tf.reshape(mask, [batch, 1, 1, seq])) * -10000.0

    def split(t: tf.Tensor) -> tf.Tensor:
        return tf.transpose(tf.reshape(t, [batch, seq, heads, size]), [0, 2, 1, 3])

    def block(x: tf.Tensor, p: str) -> tf.Tensor:  # attention_ffn_block
        q, k, val = (
            split(dense(x, f"{p}/attention_1/self/{n}")) for n in ("query", "key", "value")
        )
        scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(size)) + adder
        ctx = tf.matmul(tf.nn.softmax(scores), val)
        ctx = tf.reshape(tf.transpose(ctx, [0, 2, 1, 3]), [batch * seq, hidden])
        attention = layer_norm(dense(ctx, f"{p}/attention_1/output/dense") + x, f"{p}/LayerNorm")
        inter = dense(attention, f"{p}/ffn_1/intermediate/dense", act)
        ffn = dense(inter, f"{p}/ffn_1/intermediate/output/dense")
        return layer_norm(ffn + attention, f"{p}/LayerNorm_1")

    states = [x]
    layers, groups = config["num_hidden_layers"], config["num_hidden_groups"]
    for i in range(layers):
        group = int(i / layers * groups)
        for j in range(config["inner_group_num"]):
            x = block(x, f"bert/encoder/transformer/group_{group}/inner_group_{j}")
            states.append(x)

    first = tf.reshape(x, [batch, seq, hidden])[:, 0]
    pooled = dense(first, "bert/pooler/dense", tf.tanh)
    t = layer_norm(dense(x, "cls/predictions/transform/dense", act),
                   "cls/predictions/transform/LayerNorm")  # fmt: skip
    mlm = tf.matmul(t, table, transpose_b=True) + v("cls/predictions/output_bias")
    sop = tf.matmul(pooled, v("cls/seq_relationship/output_weights"), transpose_b=True)
    sop += v("cls/seq_relationship/output_bias")
    return Outputs(
        hidden_states=[tf.reshape(s, [batch, seq, hidden]).numpy() for s in states],
        pooled=pooled.numpy(),
        mlm_logits=tf.reshape(mlm, [batch, seq, -1]).numpy(),
        sop_logits=sop.numpy(),
    )

"""An independent ELECTRA forward pass in TensorFlow ops, straight from a pre-training checkpoint.

It restates google-research/electra's model/modeling.py (BertModel: embedding lookup, token-type
and position embeddings, LayerNorm, `embeddings_project`, the transformer with its -10000
attention-mask adder; contrib layer_norm's epsilon 1e-12; the erf GELU) and run_pretraining.py's
two heads (`discriminator_predictions`: dense + GELU, dense_1, squeeze; `generator_predictions`,
get_token_logits: dense + GELU, LayerNorm, a product with the word-embedding table, output_bias),
reading each variable by its TF name. It shares no code with danbert_convert or transformers: it
is the witness the ELECTRA conversion tests compare against. Dropout is off (inference).

The generator's logits are computed at every position; ELECTRA gathers the masked positions
first, which does not change the per-position arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LAYER_NORM_EPS = 1e-12  # tf.contrib.layers.layer_norm's fixed variance_epsilon


@dataclass
class Outputs:
    # The embedding output (after embeddings_project, i.e. the encoder's input), then each
    # encoder layer's output: [batch, seq, hidden] each.
    hidden_states: list[np.ndarray]
    logits: np.ndarray  # discriminator [batch, seq]; generator [batch, seq, vocab]


def scopes(names: set[str], part: str) -> tuple[str, str, str]:
    """(embedding scope, transformer scope, head scope) of `part` in a checkpoint's names.

    The generator reads `electra/embeddings` unless it has its own (untied_generator_embeddings),
    and is `electra/` itself when the run had no separate generator (untied_generator false, or
    the BERT-like MLM objective).
    """
    if part == "discriminator":
        return "electra/embeddings", "electra", "discriminator_predictions"
    if part != "generator":
        raise ValueError(f"part must be discriminator or generator, not {part!r}")
    emb = "generator/embeddings" if "generator/embeddings/word_embeddings" in names else None
    model = "generator" if "generator/encoder/layer_0/output/dense/kernel" in names else "electra"
    return emb or "electra/embeddings", model, "generator_predictions"


def forward(
    prefix: Path | str,
    part: str,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
    attention_mask: np.ndarray,
    *,
    num_attention_heads: int,
    dtype: str = "float64",
) -> Outputs:
    """Run `part` ("discriminator" or "generator") of the checkpoint at `prefix` on [batch, seq]
    int arrays, in `dtype`. The head count is not stored in a checkpoint: the caller says it."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    names = set(reader.get_variable_to_shape_map())
    emb_scope, model, head = scopes(names, part)

    def v(name: str) -> tf.Tensor:
        return tf.constant(reader.get_tensor(name), dtype=dtype)

    def dense(x: tf.Tensor, prefix: str, act=None) -> tf.Tensor:
        y = tf.matmul(x, v(f"{prefix}/kernel")) + v(f"{prefix}/bias")
        return act(y) if act else y

    def layer_norm(x: tf.Tensor, prefix: str) -> tf.Tensor:
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return tf.nn.batch_normalization(
            x, mean, var, offset=v(f"{prefix}/LayerNorm/beta"),
            scale=v(f"{prefix}/LayerNorm/gamma"), variance_epsilon=LAYER_NORM_EPS,
        )  # fmt: skip

    def gelu(x: tf.Tensor) -> tf.Tensor:
        return x * 0.5 * (1.0 + tf.math.erf(x / math.sqrt(2.0)))

    batch, seq = input_ids.shape
    ids = tf.constant(input_ids, dtype=tf.int32)
    types = tf.constant(token_type_ids, dtype=tf.int32)

    # modeling.embedding_lookup and embedding_postprocessor, kept 2-D as transformer_model does.
    table = v(f"{emb_scope}/word_embeddings")
    type_table = v(f"{emb_scope}/token_type_embeddings")
    x = tf.reshape(tf.gather(table, ids), [batch * seq, -1])
    one_hot_types = tf.one_hot(tf.reshape(types, [-1]), type_table.shape[0], dtype=dtype)
    x += tf.matmul(one_hot_types, type_table)
    x += tf.tile(v(f"{emb_scope}/position_embeddings")[:seq], [batch, 1])
    x = layer_norm(x, emb_scope)
    if f"{model}/embeddings_project/kernel" in names:
        x = dense(x, f"{model}/embeddings_project")

    hidden = x.shape[-1]
    size_per_head = hidden // num_attention_heads
    mask = tf.constant(attention_mask, dtype=dtype)
    adder = (1.0 - tf.reshape(mask, [batch, 1, 1, seq])) * -10000.0

    def split_heads(t: tf.Tensor) -> tf.Tensor:
        t = tf.reshape(t, [batch, seq, num_attention_heads, size_per_head])
        return tf.transpose(t, [0, 2, 1, 3])

    hidden_states = [x]
    layers = sum(1 for n in names if n.startswith(f"{model}/encoder/layer_")
                 and n.endswith("/output/dense/kernel") and "attention" not in n)  # fmt: skip
    for i in range(layers):
        p = f"{model}/encoder/layer_{i}"
        q = split_heads(dense(x, f"{p}/attention/self/query"))
        k = split_heads(dense(x, f"{p}/attention/self/key"))
        val = split_heads(dense(x, f"{p}/attention/self/value"))
        scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(size_per_head)) + adder
        context = tf.matmul(tf.nn.softmax(scores), val)
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [batch * seq, hidden])
        attention = layer_norm(dense(context, f"{p}/attention/output/dense") + x,
                               f"{p}/attention/output")  # fmt: skip
        inter = dense(attention, f"{p}/intermediate/dense", gelu)
        x = layer_norm(dense(inter, f"{p}/output/dense") + attention, f"{p}/output")
        hidden_states.append(x)

    if part == "discriminator":
        h = dense(x, f"{head}/dense", gelu)
        logits = tf.reshape(dense(h, f"{head}/dense_1"), [batch, seq])
    else:
        h = layer_norm(dense(x, f"{head}/dense", gelu), head)
        logits = tf.matmul(h, table, transpose_b=True) + v(f"{head}/output_bias")
        logits = tf.reshape(logits, [batch, seq, -1])
    return Outputs(
        hidden_states=[tf.reshape(t, [batch, seq, -1]).numpy() for t in hidden_states],
        logits=logits.numpy(),
    )

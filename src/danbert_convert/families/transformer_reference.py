"""The transformer maths the numpy reference forward passes share (BERT, ELECTRA, ALBERT), in
float64.

Each function reads variables by TF name under a scope it is given, as google-research/bert's
modeling.py names them (`<scope>/encoder/layer_N/attention/self/query/kernel`, ...); ELECTRA's
modeling.py is the same code. One attention + feed-forward block (`block`) takes its variables'
scopes as `BlockNames`, so ALBERT's shared blocks, named otherwise, run the same maths. Like the
references, it shares no code with the families' tables: it is part of the independent witness
`verify` compares a conversion against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Weights = Callable[[str], np.ndarray]
Shapes = dict[str, tuple[int, ...]]


def erf(x: np.ndarray) -> np.ndarray:
    """erf in float64, correct to about one ulp.

    numpy has no erf, and a short polynomial (about 1e-7) would be float32-sized noise in a
    float64 comparison. torch's erf is a libm-grade special function, not conversion code:
    the reference stays independent of what it checks.
    """
    import torch

    return torch.special.erf(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


def gelu_erf(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gelu": gelu_erf,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}


def float64(get: Weights) -> Weights:
    """`get`, returning float64 (checkpoints store float32)."""
    return lambda name: np.asarray(get(name), dtype=np.float64)


def matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w for x of any rank, as one 2-D product.

    numpy multiplies a stack of matrices one at a time: 1.3x slower for BERT-base's
    [4, 64, 768] @ [768, 3072] than one [256, 768] @ [768, 3072].
    """
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


def dense(w: Weights, x: np.ndarray, prefix: str) -> np.ndarray:
    """tf.layers.dense: `<prefix>/kernel` is [in, out]."""
    return matmul(x, w(f"{prefix}/kernel")) + w(f"{prefix}/bias")


def layer_norm(w: Weights, x: np.ndarray, prefix: str, eps: float) -> np.ndarray:
    """tf.contrib.layers.layer_norm over the last axis, scope `<prefix>/LayerNorm`."""
    return layer_norm_at(w, x, f"{prefix}/LayerNorm", eps)


def layer_norm_at(w: Weights, x: np.ndarray, scope: str, eps: float) -> np.ndarray:
    """tf.contrib.layers.layer_norm over the last axis, its own scope given (`<scope>/gamma`)."""
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    gamma, beta = w(f"{scope}/gamma"), w(f"{scope}/beta")
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def embeddings(
    w: Weights, scope: str, input_ids: np.ndarray, token_type_ids: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """(word + token type + position embeddings, LayerNorm'd; the word table) under `scope`.

    The word table is returned because an MLM decoder multiplies by it again. modeling.py takes
    token types by a one-hot product and positions by slicing: the same values as these lookups.
    """
    words = w(f"{scope}/word_embeddings")
    x = (
        words[input_ids]
        + w(f"{scope}/token_type_embeddings")[token_type_ids]
        + w(f"{scope}/position_embeddings")[: input_ids.shape[1]][None]
    )
    return layer_norm(w, x, scope, eps), words


@dataclass(frozen=True)
class BlockNames:
    """The TF scopes of one attention + feed-forward block's dense layers and LayerNorms (the
    LayerNorm scopes are whole: `<scope>/gamma`)."""

    query: str
    key: str
    value: str
    attention_output: str
    attention_norm: str
    intermediate: str
    output: str
    output_norm: str

    @classmethod
    def bert(cls, prefix: str) -> BlockNames:
        """modeling.transformer_model's `<prefix>` = `<scope>/encoder/layer_N`."""
        return cls(
            query=f"{prefix}/attention/self/query",
            key=f"{prefix}/attention/self/key",
            value=f"{prefix}/attention/self/value",
            attention_output=f"{prefix}/attention/output/dense",
            attention_norm=f"{prefix}/attention/output/LayerNorm",
            intermediate=f"{prefix}/intermediate/dense",
            output=f"{prefix}/output/dense",
            output_norm=f"{prefix}/output/LayerNorm",
        )


def attention_bias(attention_mask: np.ndarray) -> np.ndarray:
    """modeling.py's additive mask, [batch, 1, 1, seq]: -10000 where attention_mask is 0."""
    return (1.0 - attention_mask[:, None, None, :].astype(np.float64)) * -10000.0


def block(
    w: Weights,
    x: np.ndarray,
    bias: np.ndarray,
    names: BlockNames,
    *,
    num_heads: int,
    act: Callable[[np.ndarray], np.ndarray],
    eps: float,
) -> np.ndarray:
    """One post-LayerNorm transformer block (self-attention, then the feed-forward), on
    [batch, seq, hidden] with `bias` from attention_bias."""
    batch, seq, hidden = x.shape
    size = hidden // num_heads

    def split(t: np.ndarray) -> np.ndarray:
        return t.reshape(batch, seq, num_heads, size).transpose(0, 2, 1, 3)

    q, k, v = (split(dense(w, x, n)) for n in (names.query, names.key, names.value))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + bias
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    probs = scores / scores.sum(-1, keepdims=True)
    ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
    x = layer_norm_at(w, dense(w, ctx, names.attention_output) + x, names.attention_norm, eps)
    inter = act(dense(w, x, names.intermediate))
    return layer_norm_at(w, dense(w, inter, names.output) + x, names.output_norm, eps)


def encoder(
    w: Weights,
    scope: str,
    x: np.ndarray,
    attention_mask: np.ndarray,
    *,
    num_layers: int,
    num_heads: int,
    act: Callable[[np.ndarray], np.ndarray],
    eps: float,
) -> list[np.ndarray]:
    """modeling.transformer_model over `<scope>/layer_0 .. layer_{num_layers-1}`: each layer's
    output [batch, seq, hidden]. A checkpoint does not store the head count: the caller says it."""
    bias = attention_bias(attention_mask)
    states = []
    for i in range(num_layers):
        x = block(w, x, bias, BlockNames.bert(f"{scope}/layer_{i}"), num_heads=num_heads,
                  act=act, eps=eps)  # fmt: skip
        states.append(x)
    return states


# --- the shapes those functions read ----------------------------------------------------------


def dense_shapes(shapes: Shapes, prefix: str, n_in: int, n_out: int) -> None:
    shapes[f"{prefix}/kernel"], shapes[f"{prefix}/bias"] = (n_in, n_out), (n_out,)


def layer_norm_shapes(shapes: Shapes, prefix: str, width: int) -> None:
    shapes[f"{prefix}/LayerNorm/gamma"] = shapes[f"{prefix}/LayerNorm/beta"] = (width,)


def embedding_shapes(
    shapes: Shapes, scope: str, *, vocab: int, width: int, type_vocab: int, positions: int
) -> None:
    shapes[f"{scope}/word_embeddings"] = (vocab, width)
    shapes[f"{scope}/token_type_embeddings"] = (type_vocab, width)
    shapes[f"{scope}/position_embeddings"] = (positions, width)
    layer_norm_shapes(shapes, scope, width)


def block_shapes(shapes: Shapes, names: BlockNames, *, hidden: int, intermediate: int) -> None:
    for scope in (names.query, names.key, names.value, names.attention_output):
        dense_shapes(shapes, scope, hidden, hidden)
    shapes[f"{names.attention_norm}/gamma"] = shapes[f"{names.attention_norm}/beta"] = (hidden,)
    dense_shapes(shapes, names.intermediate, hidden, intermediate)
    dense_shapes(shapes, names.output, intermediate, hidden)
    shapes[f"{names.output_norm}/gamma"] = shapes[f"{names.output_norm}/beta"] = (hidden,)


def encoder_shapes(
    shapes: Shapes, scope: str, *, num_layers: int, hidden: int, intermediate: int
) -> None:
    for i in range(num_layers):
        names = BlockNames.bert(f"{scope}/layer_{i}")
        block_shapes(shapes, names, hidden=hidden, intermediate=intermediate)

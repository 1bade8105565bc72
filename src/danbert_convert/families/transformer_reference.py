"""The transformer maths the numpy reference forward passes share (BERT, ELECTRA), in float64.

Each function reads variables by TF name under a scope it is given, as google-research/bert's
modeling.py names them (`<scope>/encoder/layer_N/attention/self/query/kernel`, ...); ELECTRA's
modeling.py is the same code. Like the references, it shares no code with the families' tables:
it is part of the independent witness `verify` compares a conversion against.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    gamma, beta = w(f"{prefix}/LayerNorm/gamma"), w(f"{prefix}/LayerNorm/beta")
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
    batch, seq, hidden = x.shape
    size = hidden // num_heads
    # modeling.py's additive mask: -10000 where attention_mask is 0.
    bias = (1.0 - attention_mask[:, None, None, :].astype(np.float64)) * -10000.0

    def split(t: np.ndarray) -> np.ndarray:
        return t.reshape(batch, seq, num_heads, size).transpose(0, 2, 1, 3)

    states = []
    for i in range(num_layers):
        p = f"{scope}/layer_{i}"
        q, k, v = (split(dense(w, x, f"{p}/attention/self/{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
        x = layer_norm(
            w, dense(w, ctx, f"{p}/attention/output/dense") + x, f"{p}/attention/output", eps
        )
        inter = act(dense(w, x, f"{p}/intermediate/dense"))
        x = layer_norm(w, dense(w, inter, f"{p}/output/dense") + x, f"{p}/output", eps)
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


def encoder_shapes(
    shapes: Shapes, scope: str, *, num_layers: int, hidden: int, intermediate: int
) -> None:
    for i in range(num_layers):
        p = f"{scope}/layer_{i}"
        for part in ("query", "key", "value"):
            dense_shapes(shapes, f"{p}/attention/self/{part}", hidden, hidden)
        dense_shapes(shapes, f"{p}/attention/output/dense", hidden, hidden)
        layer_norm_shapes(shapes, f"{p}/attention/output", hidden)
        dense_shapes(shapes, f"{p}/intermediate/dense", hidden, intermediate)
        dense_shapes(shapes, f"{p}/output/dense", intermediate, hidden)
        layer_norm_shapes(shapes, f"{p}/output", hidden)

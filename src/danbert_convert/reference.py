"""A reference BERT forward pass in numpy, straight from TF checkpoint variables by TF name.

It shares no code with the mapping table on purpose: it is the independent witness that
`verify` (and the tests) compare the converted transformers model against. It follows
google-research/bert's modeling.py and run_pretraining.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Weights = Callable[[str], np.ndarray]


def erf(x: np.ndarray) -> np.ndarray:
    """erf via the Numerical Recipes erfc (fractional error below 1.2e-7), vectorised."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    coeffs = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
              0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)  # fmt: skip
    poly = np.zeros_like(t)
    for c in reversed(coeffs):
        poly = c + t * poly
    erfc = t * np.exp(-z * z + poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


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


@dataclass
class Outputs:
    sequence: np.ndarray  # [batch, seq, hidden]
    pooled: np.ndarray | None  # [batch, hidden]
    mlm_logits: np.ndarray | None  # [batch, seq, vocab]
    nsp_logits: np.ndarray | None  # [batch, 2]
    classifier_logits: np.ndarray | None = None  # [batch, num_labels] (run_classifier.py)
    squad_logits: np.ndarray | None = None  # [batch, seq, 2] (run_squad.py: start, end)


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def forward(
    get: Weights,
    config: dict,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
    attention_mask: np.ndarray,
    *,
    hidden_act: str | None = None,
    has: Callable[[str], bool] = lambda name: True,
) -> Outputs:
    """Run BERT in float64 on [batch, seq] int arrays; `get(tf_name)` returns a variable."""

    def w(name: str) -> np.ndarray:
        return np.asarray(get(name), dtype=np.float64)

    eps = float(config.get("layer_norm_eps", 1e-12))
    act = ACTIVATIONS[hidden_act or config.get("hidden_act", "gelu")]
    heads = int(config["num_attention_heads"])
    batch, seq = input_ids.shape

    def dense(x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ w(f"{prefix}/kernel") + w(f"{prefix}/bias")

    def ln(x: np.ndarray, prefix: str) -> np.ndarray:
        return _layer_norm(x, w(f"{prefix}/LayerNorm/gamma"), w(f"{prefix}/LayerNorm/beta"), eps)

    e = "bert/embeddings"
    words = w(f"{e}/word_embeddings")  # read once: the MLM decoder uses it again
    x = (
        words[input_ids]
        + w(f"{e}/token_type_embeddings")[token_type_ids]
        + w(f"{e}/position_embeddings")[:seq][None]
    )
    x = ln(x, e)
    # modeling.py's additive mask: -10000 where attention_mask is 0.
    bias = (1.0 - attention_mask[:, None, None, :].astype(np.float64)) * -10000.0
    hidden = x.shape[-1]
    size = hidden // heads

    def split(t: np.ndarray) -> np.ndarray:
        return t.reshape(batch, seq, heads, size).transpose(0, 2, 1, 3)

    for i in range(int(config["num_hidden_layers"])):
        p = f"bert/encoder/layer_{i}"
        q, k, v = (split(dense(x, f"{p}/attention/self/{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
        x = ln(dense(ctx, f"{p}/attention/output/dense") + x, f"{p}/attention/output")
        inter = act(dense(x, f"{p}/intermediate/dense"))
        x = ln(dense(inter, f"{p}/output/dense") + x, f"{p}/output")

    pooled = (
        np.tanh(dense(x[:, 0], "bert/pooler/dense")) if has("bert/pooler/dense/kernel") else None
    )
    mlm = nsp = None
    if has("cls/predictions/output_bias"):
        t = ln(act(dense(x, "cls/predictions/transform/dense")), "cls/predictions/transform")
        mlm = t @ words.T + w("cls/predictions/output_bias")
    if has("cls/seq_relationship/output_weights") and pooled is not None:
        nsp = pooled @ w("cls/seq_relationship/output_weights").T + w(
            "cls/seq_relationship/output_bias"
        )
    classifier = squad = None
    if has("output_weights") and pooled is not None:
        classifier = pooled @ w("output_weights").T + w("output_bias")
    if has("cls/squad/output_weights"):
        squad = x @ w("cls/squad/output_weights").T + w("cls/squad/output_bias")
    return Outputs(x, pooled, mlm, nsp, classifier, squad)

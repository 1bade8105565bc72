"""A reference BERT forward pass in numpy, straight from TF checkpoint variables by TF name.

It shares no code with the mapping table on purpose: it is the independent witness that
`verify` (and the tests) compare the converted transformers model against. It follows
google-research/bert's modeling.py and run_pretraining.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Weights = Callable[[str], np.ndarray]


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


@dataclass
class Outputs:
    sequence: np.ndarray  # [batch, seq, hidden]
    pooled: np.ndarray | None  # [batch, hidden]
    mlm_logits: np.ndarray | None  # [batch, seq, vocab]
    nsp_logits: np.ndarray | None  # [batch, 2]
    classifier_logits: np.ndarray | None = None  # [batch, num_labels] (run_classifier.py)
    squad_logits: np.ndarray | None = None  # [batch, seq, 2] (run_squad.py: start, end)
    # The embeddings' output, then each encoder layer's: [batch, seq, hidden] each.
    hidden_states: list[np.ndarray] = field(default_factory=list)


def variable_shapes(config: dict, has: Callable[[str], bool]) -> dict[str, tuple[int, ...]]:
    """The variables `forward` reads for a model of `config`'s sizes, with the shapes it needs.

    Head variables are listed only where `has` says the checkpoint holds them, as `forward`
    reads them only then; the classifier's rows come from `config["num_labels"]`.
    """
    H, inter = int(config["hidden_size"]), int(config["intermediate_size"])
    shapes: dict[str, tuple[int, ...]] = {
        "bert/embeddings/word_embeddings": (int(config["vocab_size"]), H),
        "bert/embeddings/token_type_embeddings": (int(config["type_vocab_size"]), H),
        "bert/embeddings/position_embeddings": (int(config["max_position_embeddings"]), H),
    }

    def dense(prefix: str, n_in: int, n_out: int) -> None:
        shapes[f"{prefix}/kernel"], shapes[f"{prefix}/bias"] = (n_in, n_out), (n_out,)

    def ln(prefix: str) -> None:
        shapes[f"{prefix}/LayerNorm/gamma"] = shapes[f"{prefix}/LayerNorm/beta"] = (H,)

    ln("bert/embeddings")
    for i in range(int(config["num_hidden_layers"])):
        p = f"bert/encoder/layer_{i}"
        for part in ("query", "key", "value"):
            dense(f"{p}/attention/self/{part}", H, H)
        dense(f"{p}/attention/output/dense", H, H)
        ln(f"{p}/attention/output")
        dense(f"{p}/intermediate/dense", H, inter)
        dense(f"{p}/output/dense", inter, H)
        ln(f"{p}/output")
    if has("bert/pooler/dense/kernel"):
        dense("bert/pooler/dense", H, H)
    if has("cls/predictions/output_bias"):
        dense("cls/predictions/transform/dense", H, H)
        ln("cls/predictions/transform")
        shapes["cls/predictions/output_bias"] = (int(config["vocab_size"]),)
    for prefix in ("cls/seq_relationship/", "cls/squad/"):
        if has(f"{prefix}output_weights"):
            shapes[f"{prefix}output_weights"], shapes[f"{prefix}output_bias"] = (2, H), (2,)
    if has("output_weights") and "num_labels" in config:
        n = int(config["num_labels"])
        shapes["output_weights"], shapes["output_bias"] = (n, H), (n,)
    return shapes


def _matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w for x of any rank, as one 2-D product.

    numpy multiplies a stack of matrices one at a time: 1.3x slower for BERT-base's
    [4, 64, 768] @ [768, 3072] than one [256, 768] @ [768, 3072].
    """
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


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
        return _matmul(x, w(f"{prefix}/kernel")) + w(f"{prefix}/bias")

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
    states = [x]
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
        states.append(x)

    pooled = (
        np.tanh(dense(x[:, 0], "bert/pooler/dense")) if has("bert/pooler/dense/kernel") else None
    )
    mlm = nsp = None
    if has("cls/predictions/output_bias"):
        t = ln(act(dense(x, "cls/predictions/transform/dense")), "cls/predictions/transform")
        mlm = _matmul(t, words.T) + w("cls/predictions/output_bias")
    if has("cls/seq_relationship/output_weights") and pooled is not None:
        nsp = pooled @ w("cls/seq_relationship/output_weights").T + w(
            "cls/seq_relationship/output_bias"
        )
    classifier = squad = None
    if has("output_weights") and pooled is not None:
        classifier = pooled @ w("output_weights").T + w("output_bias")
    if has("cls/squad/output_weights"):
        squad = _matmul(x, w("cls/squad/output_weights").T) + w("cls/squad/output_bias")
    return Outputs(x, pooled, mlm, nsp, classifier, squad, states)

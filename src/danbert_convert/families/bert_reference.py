"""A reference BERT forward pass in numpy, straight from TF checkpoint variables by TF name.

It shares no code with the mapping table on purpose: it is the independent witness that
`verify` (and the tests) compare the converted transformers model against. It follows
google-research/bert's modeling.py and run_pretraining.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from danbert_convert.families.transformer_reference import (
    ACTIVATIONS,
    Weights,
    dense_shapes,
    embedding_shapes,
    embeddings,
    encoder,
    encoder_shapes,
    float64,
    layer_norm,
    layer_norm_shapes,
    matmul,
)
from danbert_convert.families.transformer_reference import dense as _dense

__all__ = ["ACTIVATIONS", "Outputs", "Weights", "forward", "variable_shapes"]


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
    shapes: dict[str, tuple[int, ...]] = {}
    embedding_shapes(
        shapes, "bert/embeddings", vocab=int(config["vocab_size"]), width=H,
        type_vocab=int(config["type_vocab_size"]),
        positions=int(config["max_position_embeddings"]),
    )  # fmt: skip
    encoder_shapes(
        shapes, "bert/encoder", num_layers=int(config["num_hidden_layers"]), hidden=H,
        intermediate=inter,
    )  # fmt: skip

    def dense(prefix: str, n_in: int, n_out: int) -> None:
        dense_shapes(shapes, prefix, n_in, n_out)

    def ln(prefix: str) -> None:
        layer_norm_shapes(shapes, prefix, H)

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
    w = float64(get)
    eps = float(config.get("layer_norm_eps", 1e-12))
    act = ACTIVATIONS[hidden_act or config.get("hidden_act", "gelu")]

    def dense(x: np.ndarray, prefix: str) -> np.ndarray:
        return _dense(w, x, prefix)

    def ln(x: np.ndarray, prefix: str) -> np.ndarray:
        return layer_norm(w, x, prefix, eps)

    # words is read once: the MLM decoder uses it again.
    x, words = embeddings(w, "bert/embeddings", input_ids, token_type_ids, eps)
    states = [x]
    states += encoder(
        w, "bert/encoder", x, attention_mask, num_layers=int(config["num_hidden_layers"]),
        num_heads=int(config["num_attention_heads"]), act=act, eps=eps,
    )  # fmt: skip
    x = states[-1]

    pooled = (
        np.tanh(dense(x[:, 0], "bert/pooler/dense")) if has("bert/pooler/dense/kernel") else None
    )
    mlm = nsp = None
    if has("cls/predictions/output_bias"):
        t = ln(act(dense(x, "cls/predictions/transform/dense")), "cls/predictions/transform")
        mlm = matmul(t, words.T) + w("cls/predictions/output_bias")
    if has("cls/seq_relationship/output_weights") and pooled is not None:
        nsp = pooled @ w("cls/seq_relationship/output_weights").T + w(
            "cls/seq_relationship/output_bias"
        )
    classifier = squad = None
    if has("output_weights") and pooled is not None:
        classifier = pooled @ w("output_weights").T + w("output_bias")
    if has("cls/squad/output_weights"):
        squad = matmul(x, w("cls/squad/output_weights").T) + w("cls/squad/output_bias")
    return Outputs(x, pooled, mlm, nsp, classifier, squad, states)

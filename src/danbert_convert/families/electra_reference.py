"""A reference ELECTRA forward pass in numpy, straight from a pre-training checkpoint by TF name.

It follows google-research/electra's model/modeling.py (BertModel: the embeddings, then
`embeddings_project` where the embedding width is not the hidden size, then the transformer) and
run_pretraining.py (the `discriminator_predictions` and `generator_predictions` heads). Like
bert_reference.py it shares no code with the converter's tables (families/bert.py, the ELECTRA
table): it is the independent witness `verify` compares a converted model against. The maths
common to BERT is transformer_reference.py's.

One checkpoint holds two networks, each a `part`: the discriminator (`electra/`,
`discriminator_predictions/`) and the generator (`generator/`, `generator_predictions/`), which
by default reads the discriminator's `electra/embeddings` (see `scopes`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np

from danbert_convert.families.transformer_reference import (
    ACTIVATIONS,
    Shapes,
    Weights,
    dense,
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

PARTS = ("discriminator", "generator")
# The variable whose presence means the part's head is in the checkpoint (as `has` answers).
HEAD_VARIABLES = {
    "discriminator": "discriminator_predictions/dense_1/kernel",
    "generator": "generator_predictions/output_bias",
}


@dataclass
class ElectraOutputs:
    sequence: np.ndarray  # [batch, seq, hidden]: the last encoder layer's output
    # The embedding output after embeddings_project (the encoder's input), then each encoder
    # layer's: [batch, seq, hidden] each, as transformers' ElectraModel(output_hidden_states=True).
    hidden_states: list[np.ndarray]
    # The part's head, keyed by part, present when the checkpoint holds it:
    # "discriminator" [batch, seq] (replaced-token logits), "generator" [batch, seq, vocab].
    logits: dict[str, np.ndarray] = field(default_factory=dict)


def scopes(names: Collection[str], part: str) -> tuple[str, str, str]:
    """(embeddings scope, transformer scope, head scope) of `part` among a checkpoint's names.

    modeling.BertModel puts the embeddings under `electra/embeddings` unless the generator's are
    untied (`untied_generator_embeddings`: `generator/embeddings`). The generator is a network of
    its own under `generator/` unless the run had none (`untied_generator: false`, or the
    BERT-like MLM objective): then it is `electra/` with `generator_predictions/` on top.
    """
    if part == "discriminator":
        return "electra/embeddings", "electra", "discriminator_predictions"
    if part != "generator":
        raise ValueError(f"part must be one of {', '.join(PARTS)}, not {part!r}")
    own_embeddings = "generator/embeddings/word_embeddings" in names
    own_encoder = any(n.startswith("generator/encoder/layer_0/") for n in names)
    return (
        "generator/embeddings" if own_embeddings else "electra/embeddings",
        "generator" if own_encoder else "electra",
        "generator_predictions",
    )


def _sizes(config: dict) -> tuple[int, int, int]:
    return int(config["vocab_size"]), int(config["embedding_size"]), int(config["hidden_size"])


def variable_shapes(
    config: dict, part: str, names: Collection[str], has: Callable[[str], bool] = lambda n: True
) -> Shapes:
    """The variables `forward` reads for `part` of a model of `config`'s sizes, with the shapes
    it needs. The head's variables are listed only where `has(HEAD_VARIABLES[part])`, as
    `forward` reads them only then."""
    emb, model, head = scopes(names, part)
    V, E, H = _sizes(config)
    shapes: Shapes = {}
    embedding_shapes(
        shapes, emb, vocab=V, width=E, type_vocab=int(config["type_vocab_size"]),
        positions=int(config["max_position_embeddings"]),
    )  # fmt: skip
    if E != H:
        dense_shapes(shapes, f"{model}/embeddings_project", E, H)
    encoder_shapes(
        shapes, f"{model}/encoder", num_layers=int(config["num_hidden_layers"]), hidden=H,
        intermediate=int(config["intermediate_size"]),
    )  # fmt: skip
    if has(HEAD_VARIABLES[part]):
        if part == "discriminator":
            dense_shapes(shapes, f"{head}/dense", H, H)
            dense_shapes(shapes, f"{head}/dense_1", H, 1)
        else:
            dense_shapes(shapes, f"{head}/dense", H, E)
            layer_norm_shapes(shapes, head, E)
            shapes[f"{head}/output_bias"] = (V,)
    return shapes


def forward(
    get: Weights,
    config: dict,
    part: str,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
    attention_mask: np.ndarray,
    *,
    names: Collection[str],
    has: Callable[[str], bool] = lambda n: True,
) -> ElectraOutputs:
    """Run `part` in float64 on [batch, seq] int arrays; `get(tf_name)` returns a variable.

    `config` is the transformers-style ElectraConfig dict of that part (vocab_size,
    embedding_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
    max_position_embeddings, type_vocab_size; layer_norm_eps 1e-12 and hidden_act "gelu" by
    default); `names` the checkpoint's variable names, which choose the scopes.

    Both heads' first dense uses `hidden_act`, as run_pretraining.py does. transformers 5's
    ElectraGeneratorPredictions hard-codes "gelu" instead: the same for every ELECTRA run (its
    hidden_act is gelu), different for any other activation. The generator's logits are computed
    at every position (ELECTRA gathers the masked ones first: the same per-position arithmetic).
    """
    emb, model, head = scopes(names, part)
    w = float64(get)
    V, E, H = _sizes(config)
    eps = float(config.get("layer_norm_eps", 1e-12))
    act = ACTIVATIONS[config.get("hidden_act", "gelu")]

    x, words = embeddings(w, emb, input_ids, token_type_ids, eps)
    # modeling.BertModel projects only where the embedding output is not already hidden-wide.
    if E != H:
        x = dense(w, x, f"{model}/embeddings_project")
    states = [x]
    states += encoder(
        w, f"{model}/encoder", x, attention_mask, num_layers=int(config["num_hidden_layers"]),
        num_heads=int(config["num_attention_heads"]), act=act, eps=eps,
    )  # fmt: skip
    x = states[-1]

    logits: dict[str, np.ndarray] = {}
    if has(HEAD_VARIABLES[part]):
        if part == "discriminator":
            # run_pretraining._get_discriminator_output: dense + act, dense_1 (one unit), squeeze.
            t = act(dense(w, x, f"{head}/dense"))
            logits[part] = dense(w, t, f"{head}/dense_1")[..., 0]
        else:
            # run_pretraining.get_token_logits: dense + act, LayerNorm, the word-embedding table
            # as the decoder (no variable of its own), output_bias.
            t = layer_norm(w, act(dense(w, x, f"{head}/dense")), head, eps)
            logits[part] = matmul(t, words.T) + w(f"{head}/output_bias")
    return ElectraOutputs(sequence=x, hidden_states=states, logits=logits)

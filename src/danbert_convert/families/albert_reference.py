"""A reference ALBERT forward pass in numpy, straight from a checkpoint by TF name.

It follows google-research/albert's modeling.py (AlbertModel: embeddings at embedding_size,
`embedding_hidden_mapping_in` to the hidden size when the two differ, then transformer_model's
shared blocks: layer i runs the inner groups of group int(i / L * G) in turn) and
run_pretraining.py (the `cls/predictions` MLM head with its embedding-sized transform and the
word table as decoder; the `cls/seq_relationship` sentence-order head on the pooled output).
Like bert_reference.py it shares no code with the converter's tables: it is the independent
witness `verify` compares a converted model against. The maths common to BERT is
transformer_reference.py's.

A checkpoint saved from a graph that loaded ALBERT's TF-Hub module has every name under
`module/`; `scope_prefix` finds which prefix a checkpoint's names use.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np

from danbert_convert.families.transformer_reference import (
    ACTIVATIONS,
    BlockNames,
    Shapes,
    Weights,
    attention_bias,
    block,
    block_shapes,
    dense,
    dense_shapes,
    embedding_shapes,
    embeddings,
    float64,
    layer_norm,
    layer_norm_shapes,
    matmul,
)

PREFIXES = ("", "module/")
# The variables whose presence means a head is in the checkpoint (as `has` answers), after the
# prefix.
POOLER_VARIABLE = "bert/pooler/dense/kernel"
HEAD_VARIABLES = {
    "mlm": "cls/predictions/output_bias",
    "sop": "cls/seq_relationship/output_weights",
}


@dataclass
class AlbertOutputs:
    sequence: np.ndarray  # [batch, seq, hidden]: the last block's output
    pooled: np.ndarray | None  # [batch, hidden], where the checkpoint has bert/pooler
    # The encoder's input (after embedding_hidden_mapping_in), then each block's output:
    # 1 + num_hidden_layers * inner_group_num of them, [batch, seq, hidden] each, as
    # transformers' AlbertModel(output_hidden_states=True).
    hidden_states: list[np.ndarray]
    # The heads the checkpoint holds: "mlm" [batch, seq, vocab], "sop" [batch, 2].
    logits: dict[str, np.ndarray] = field(default_factory=dict)


def scope_prefix(names: Collection[str]) -> str:
    """The prefix of a checkpoint's names: none where `bert/embeddings/word_embeddings` exists,
    else "module/" where that does (a TF-Hub module's variables); none when neither does, so a
    missing variable is reported under its plain name."""
    for prefix in PREFIXES:
        if f"{prefix}bert/embeddings/word_embeddings" in names:
            return prefix
    return ""


def group_of(layer: int, config: dict) -> int:
    """The group layer `layer` runs, as modeling.transformer_model computes it: int(i / L * G)
    in floats. transformers computes int(i / (L / G)), which differs for some (L, G), e.g.
    (22, 22) at layer 15; never for G = 1 or G = L <= 21."""
    return int(layer / int(config["num_hidden_layers"]) * int(config.get("num_hidden_groups", 1)))


def block_names(prefix: str, group: int, inner: int) -> BlockNames:
    """modeling.attention_ffn_block's scopes in `group_G/inner_group_I`."""
    p = f"{prefix}bert/encoder/transformer/group_{group}/inner_group_{inner}"
    return BlockNames(
        query=f"{p}/attention_1/self/query",
        key=f"{p}/attention_1/self/key",
        value=f"{p}/attention_1/self/value",
        attention_output=f"{p}/attention_1/output/dense",
        attention_norm=f"{p}/LayerNorm",
        intermediate=f"{p}/ffn_1/intermediate/dense",
        output=f"{p}/ffn_1/intermediate/output/dense",
        output_norm=f"{p}/LayerNorm_1",
    )


def _sizes(config: dict) -> tuple[int, int, int]:
    return int(config["vocab_size"]), int(config["embedding_size"]), int(config["hidden_size"])


def _groups(config: dict) -> list[int]:
    """The groups some layer runs, in order: only these exist in a checkpoint."""
    return sorted({group_of(i, config) for i in range(int(config["num_hidden_layers"]))})


def variable_shapes(
    config: dict,
    names: Collection[str],
    has: Callable[[str], bool] = lambda n: True,
    *,
    prefix: str | None = None,
) -> Shapes:
    """The variables `forward` reads for a model of `config`'s sizes, with the shapes it needs.
    Heads (and the pooler) are listed only where `has` says the checkpoint holds them, as
    `forward` reads them only then; `prefix` defaults to scope_prefix(names)."""
    p = scope_prefix(names) if prefix is None else prefix
    V, E, H = _sizes(config)
    shapes: Shapes = {}
    embedding_shapes(
        shapes, f"{p}bert/embeddings", vocab=V, width=E, type_vocab=int(config["type_vocab_size"]),
        positions=int(config["max_position_embeddings"]),
    )  # fmt: skip
    if E != H:
        dense_shapes(shapes, f"{p}bert/encoder/embedding_hidden_mapping_in", E, H)
    for g in _groups(config):
        for j in range(int(config.get("inner_group_num", 1))):
            block_shapes(shapes, block_names(p, g, j), hidden=H,
                         intermediate=int(config["intermediate_size"]))  # fmt: skip
    pooler = has(p + POOLER_VARIABLE)
    if pooler:
        dense_shapes(shapes, f"{p}bert/pooler/dense", H, H)
    if has(p + HEAD_VARIABLES["mlm"]):
        dense_shapes(shapes, f"{p}cls/predictions/transform/dense", H, E)
        layer_norm_shapes(shapes, f"{p}cls/predictions/transform", E)
        shapes[f"{p}cls/predictions/output_bias"] = (V,)
    if pooler and has(p + HEAD_VARIABLES["sop"]):
        shapes[f"{p}cls/seq_relationship/output_weights"] = (2, H)
        shapes[f"{p}cls/seq_relationship/output_bias"] = (2,)
    return shapes


def forward(
    get: Weights,
    config: dict,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
    attention_mask: np.ndarray,
    *,
    names: Collection[str],
    has: Callable[[str], bool] = lambda n: True,
    prefix: str | None = None,
) -> AlbertOutputs:
    """Run ALBERT in float64 on [batch, seq] int arrays; `get(tf_name)` returns a variable.

    `config` is the transformers-style AlbertConfig dict (vocab_size, embedding_size,
    hidden_size, num_hidden_layers, num_hidden_groups, inner_group_num, num_attention_heads,
    intermediate_size, max_position_embeddings, type_vocab_size; hidden_act "gelu_new" and
    layer_norm_eps 1e-12 by default): ALBERT's own albert_config.json says "gelu" for the tanh
    form that transformers calls "gelu_new". `names` (the checkpoint's variable names) choose
    the prefix unless `prefix` is given.
    """
    p = scope_prefix(names) if prefix is None else prefix
    w = float64(get)
    V, E, H = _sizes(config)
    eps = float(config.get("layer_norm_eps", 1e-12))
    act = ACTIVATIONS[config.get("hidden_act", "gelu_new")]
    heads = int(config["num_attention_heads"])

    x, words = embeddings(w, f"{p}bert/embeddings", input_ids, token_type_ids, eps)
    # modeling.transformer_model maps only where the embedding output is not hidden-wide.
    if E != H:
        x = dense(w, x, f"{p}bert/encoder/embedding_hidden_mapping_in")
    bias = attention_bias(attention_mask)
    states = [x]
    for i in range(int(config["num_hidden_layers"])):
        group = group_of(i, config)
        for j in range(int(config.get("inner_group_num", 1))):
            x = block(w, x, bias, block_names(p, group, j), num_heads=heads, act=act, eps=eps)
            states.append(x)

    pooled = None
    if has(p + POOLER_VARIABLE):
        pooled = np.tanh(dense(w, x[:, 0], f"{p}bert/pooler/dense"))
    logits: dict[str, np.ndarray] = {}
    if has(p + HEAD_VARIABLES["mlm"]):
        # get_masked_lm_output: dense to E + act, LayerNorm, the word table, output_bias.
        t = act(dense(w, x, f"{p}cls/predictions/transform/dense"))
        t = layer_norm(w, t, f"{p}cls/predictions/transform", eps)
        logits["mlm"] = matmul(t, words.T) + w(f"{p}cls/predictions/output_bias")
    if pooled is not None and has(p + HEAD_VARIABLES["sop"]):
        # get_sentence_order_output: output_weights [2, H] used with transpose_b.
        logits["sop"] = pooled @ w(f"{p}cls/seq_relationship/output_weights").T + w(
            f"{p}cls/seq_relationship/output_bias"
        )
    return AlbertOutputs(sequence=x, pooled=pooled, hidden_states=states, logits=logits)

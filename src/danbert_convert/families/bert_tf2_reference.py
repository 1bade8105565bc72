"""A reference forward pass in numpy of TF Model Garden's BERT, straight from a TF2 object-based
checkpoint's variables by object path.

It follows tf-models-official 2.20's BertEncoder / BertEncoderV2 (official/nlp/modeling/networks/
bert_encoder.py: word + position + type embeddings, LayerNorm, post-LayerNorm
TransformerEncoderBlocks, the tanh pooler on the first token) and BertPretrainerV2's heads
(layers/masked_lm.py: dense + activation, LayerNorm, the word table, the output bias;
layers/cls_head.py: the next-sentence head's own tanh dense, then out_proj). Attention runs as
tf_keras' MultiHeadAttention does, on the einsum-shaped kernels as stored: query/key/value
[hidden, heads, head_dim] with bias [heads, head_dim], output [heads, head_dim, hidden]. It never
reshapes them to [hidden, hidden]: that is the converter's step, and this module is the
independent witness `verify` compares the converter's output with.

Variables are named by object path ("/"-joined unescaped local names: `encoder/_transformer_
layers/0/_attention_layer/_query_dense/kernel`), under whatever root the checkpoint has
(`encoder/`, `model/encoder_network/`, none for a SavedModel's variables). Each is found by the
path's stable end (`_transformer_layers/0/_attention_layer/_query_dense/kernel`) among the
names given: exactly one must end so.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Collection

import numpy as np

from danbert_convert.errors import InputError
from danbert_convert.families.bert_reference import Outputs
from danbert_convert.families.transformer_reference import (
    ACTIVATIONS,
    BlockNames,
    Shapes,
    Weights,
    dense,
    float64,
    layer_norm_at,
    matmul,
)

__all__ = ["ACTIVATIONS", "Outputs", "Paths", "forward", "variable_shapes"]

# Each weight's possible path ends, in order of preference. The word table is one variable the
# encoder and the MLM head share: a checkpoint names it by one path or the other.
WORDS = ("_embedding_layer/embeddings", "masked_lm/embedding_table")
# PositionEmbedding's one variable has two local names.
POSITIONS = ("_position_embedding_layer/_position_embeddings",
             "_position_embedding_layer/embeddings")  # fmt: skip
TYPES = ("_type_embedding_layer/embeddings",)
EMBEDDING_NORM = "_embedding_norm_layer"
POOLER = "_pooler_layer"
MLM_DENSE, MLM_NORM = "masked_lm/dense", "masked_lm/layer_norm"
MLM_BIAS = ("masked_lm/output_bias/bias", "masked_lm/bias")
# BertPretrainerV2's next-sentence head (ClassificationHead): its dense is the pooler it trains;
# the encoder's _pooler_layer gets no gradient there.
NSP_DENSE, NSP_OUT = "classification_heads/0/dense", "classification_heads/0/out_proj"
# The same dense as BertPretrainerV2.checkpoint_items names it (`<head name>.pooler_dense`).
NSP_DENSE_ITEM = "next_sentence.pooler_dense"
# tf_keras' Softmax puts this where the mask is 0 (tf.where, not an addition).
MASKED_SCORE = -1e9


class Paths:
    """Finds a checkpoint's variables by the end of their object path."""

    def __init__(self, names: Collection[str]) -> None:
        self._by_end: dict[str, list[str]] = defaultdict(list)
        for name in names:
            parts = name.split("/")
            for i in range(len(parts)):
                self._by_end["/".join(parts[i:])].append(name)

    def find(self, *ends: str) -> str | None:
        """The one name ending (at a "/") in the first of `ends` any name ends in; None if none
        does; InputError if several do."""
        for end in ends:
            found = self._by_end.get(end, [])
            if len(found) > 1:
                shown = ", ".join(sorted(found)[:3]) + (", ..." if len(found) > 3 else "")
                raise InputError(f"{len(found)} variables end in {end} ({shown}): "
                                 "the TF2 BERT reference cannot tell which to read")  # fmt: skip
            if found:
                return found[0]
        return None

    def get(self, *ends: str) -> str:
        """As find, but InputError if no name ends in any of `ends`."""
        name = self.find(*ends)
        if name is None:
            raise InputError(f"no variable ends in {' or '.join(ends)}, which the TF2 BERT "
                             "reference reads")  # fmt: skip
        return name

    def scope(self, leaf: str, *scopes: str) -> str:
        """The full scope of a layer whose weight `leaf` (kernel, gamma) ends in one of
        `<scope>/<leaf>`."""
        return self.get(*(f"{s}/{leaf}" for s in scopes))[: -len(leaf) - 1]

    def find_scope(self, leaf: str, *scopes: str) -> str | None:
        name = self.find(*(f"{s}/{leaf}" for s in scopes))
        return None if name is None else name[: -len(leaf) - 1]

    def block(self, i: int) -> BlockNames:
        layer = f"_transformer_layers/{i}"
        attention = f"{layer}/_attention_layer"
        return BlockNames(
            query=self.scope("kernel", f"{attention}/_query_dense"),
            key=self.scope("kernel", f"{attention}/_key_dense"),
            value=self.scope("kernel", f"{attention}/_value_dense"),
            # Model Garden's 2020 Transformer layer kept its own `_attention_output_dense`.
            attention_output=self.scope(
                "kernel", f"{attention}/_output_dense", f"{layer}/_attention_output_dense"
            ),
            attention_norm=self.scope("gamma", f"{layer}/_attention_layer_norm"),
            intermediate=self.scope("kernel", f"{layer}/_intermediate_dense"),
            output=self.scope("kernel", f"{layer}/_output_dense"),
            output_norm=self.scope("gamma", f"{layer}/_output_layer_norm"),
        )


def einsum(equation: str, *operands: np.ndarray) -> np.ndarray:
    # optimize lets numpy hand each product to BLAS (tensordot); unoptimized einsum loops in C.
    return np.einsum(equation, *operands, optimize=True)


def attention(w: Weights, x: np.ndarray, mask: np.ndarray, scopes: BlockNames) -> np.ndarray:
    """tf_keras MultiHeadAttention on [batch, seq, hidden] with its kernels as stored; `mask`
    [batch, seq] is 1 for a key position to attend to."""

    def project(scope: str) -> np.ndarray:  # [batch, seq, heads, head_dim]
        return einsum("bsh,hnd->bsnd", x, w(f"{scope}/kernel")) + w(f"{scope}/bias")

    q, k, v = project(scopes.query), project(scopes.key), project(scopes.value)
    q = q / math.sqrt(q.shape[-1])  # MultiHeadAttention scales the query by 1/sqrt(key_dim)
    scores = einsum("bqnd,bknd->bnqk", q, k)
    scores = np.where(mask[:, None, None, :].astype(bool), scores, MASKED_SCORE)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    probs = scores / scores.sum(-1, keepdims=True)
    context = einsum("bnqk,bknd->bqnd", probs, v)
    out = scopes.attention_output
    return einsum("bqnd,ndh->bqh", context, w(f"{out}/kernel")) + w(f"{out}/bias")


def block(
    w: Weights,
    x: np.ndarray,
    mask: np.ndarray,
    scopes: BlockNames,
    *,
    act: Callable[[np.ndarray], np.ndarray],
    eps: float,
) -> np.ndarray:
    """TransformerEncoderBlock with norm_first=False (BERT's post-LayerNorm)."""
    x = layer_norm_at(w, x + attention(w, x, mask, scopes), scopes.attention_norm, eps)
    inner = act(dense(w, x, scopes.intermediate))
    return layer_norm_at(w, dense(w, inner, scopes.output) + x, scopes.output_norm, eps)


def _heads(paths: Paths, has: Callable[[str], bool]) -> tuple[str | None, str | None, str | None]:
    """(pooler scope, MLM output bias name, NSP out_proj scope), each None where the checkpoint
    lacks it or `has` leaves it out. The next-sentence logits need the head's own pooler."""
    head_pooler = paths.find_scope("kernel", NSP_DENSE, NSP_DENSE_ITEM)
    pooler = head_pooler or paths.find_scope("kernel", POOLER)
    if pooler is not None and not has(f"{pooler}/kernel"):
        pooler = None
    bias = paths.find(*MLM_BIAS)
    if bias is not None and not has(bias):
        bias = None
    nsp = paths.find_scope("kernel", NSP_OUT)
    if nsp is not None and (pooler is None or pooler != head_pooler or not has(f"{nsp}/kernel")):
        nsp = None
    return pooler, bias, nsp


def variable_shapes(
    config: dict, names: Collection[str], has: Callable[[str], bool] = lambda n: True
) -> Shapes:
    """The variables `forward` reads for a model of `config`'s sizes (transformers keys), by
    full name among `names`, with the shapes it needs. Heads (and the pooler) are listed only
    where the checkpoint has them and `has` says so, as `forward` reads them only then."""
    paths = Paths(names)
    H, A = int(config["hidden_size"]), int(config["num_attention_heads"])
    d, inter, V = H // A, int(config["intermediate_size"]), int(config["vocab_size"])
    shapes: Shapes = {
        paths.get(*WORDS): (V, H),
        paths.get(*POSITIONS): (int(config["max_position_embeddings"]), H),
        paths.get(*TYPES): (int(config["type_vocab_size"]), H),
    }

    def dense_shapes(scope: str, kernel: tuple[int, ...], bias: tuple[int, ...]) -> None:
        shapes[f"{scope}/kernel"], shapes[f"{scope}/bias"] = kernel, bias

    def norm_shapes(scope: str) -> None:
        shapes[f"{scope}/gamma"] = shapes[f"{scope}/beta"] = (H,)

    norm_shapes(paths.scope("gamma", EMBEDDING_NORM))
    for i in range(int(config["num_hidden_layers"])):
        s = paths.block(i)
        for scope in (s.query, s.key, s.value):
            dense_shapes(scope, (H, A, d), (A, d))
        dense_shapes(s.attention_output, (A, d, H), (H,))
        norm_shapes(s.attention_norm)
        dense_shapes(s.intermediate, (H, inter), (inter,))
        dense_shapes(s.output, (inter, H), (H,))
        norm_shapes(s.output_norm)
    pooler, bias, nsp = _heads(paths, has)
    if pooler is not None:
        dense_shapes(pooler, (H, H), (H,))
    if bias is not None:
        dense_shapes(paths.scope("kernel", MLM_DENSE), (H, H), (H,))
        norm_shapes(paths.scope("gamma", MLM_NORM))
        shapes[bias] = (V,)
    if nsp is not None:
        dense_shapes(nsp, (H, 2), (2,))
    return shapes


def forward(
    get: Weights,
    config: dict,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray,
    attention_mask: np.ndarray,
    *,
    names: Collection[str],
    has: Callable[[str], bool] = lambda name: True,
    hidden_act: str | None = None,
) -> Outputs:
    """Run Model Garden's BERT in float64 on [batch, seq] int arrays; `get(name)` returns the
    variable of object path `name`, one of `names`.

    `config` has transformers' keys (hidden_size, num_hidden_layers, intermediate_size, ...;
    layer_norm_eps 1e-12 by default). `hidden_act` is both the blocks' inner activation and the
    MLM transform's: Model Garden's "gelu" is the tanh form, transformers' "gelu_new", which is
    the default. MLM logits are computed at every position (Model Garden gathers the masked
    ones first: the same per-position arithmetic); the pooled output is the next-sentence
    head's dense where the checkpoint has one (the pooler pre-training trains), else the
    encoder's _pooler_layer.
    """
    paths = Paths(names)
    w = float64(get)
    eps = float(config.get("layer_norm_eps", 1e-12))
    act = ACTIVATIONS[hidden_act or config.get("hidden_act", "gelu_new")]

    words = w(paths.get(*WORDS))
    x = (
        words[input_ids]
        + w(paths.get(*POSITIONS))[: input_ids.shape[1]][None]
        + w(paths.get(*TYPES))[token_type_ids]
    )
    x = layer_norm_at(w, x, paths.scope("gamma", EMBEDDING_NORM), eps)
    states = [x]
    for i in range(int(config["num_hidden_layers"])):
        x = block(w, x, attention_mask, paths.block(i), act=act, eps=eps)
        states.append(x)

    pooler, bias, nsp = _heads(paths, has)
    pooled = np.tanh(dense(w, x[:, 0], pooler)) if pooler is not None else None
    mlm = nsp_logits = None
    if bias is not None:
        t = act(dense(w, x, paths.scope("kernel", MLM_DENSE)))
        t = layer_norm_at(w, t, paths.scope("gamma", MLM_NORM), eps)
        mlm = matmul(t, words.T) + w(bias)
    if nsp is not None and pooled is not None:
        nsp_logits = dense(w, pooled, nsp)
    return Outputs(sequence=x, pooled=pooled, mlm_logits=mlm, nsp_logits=nsp_logits,
                   hidden_states=states)  # fmt: skip

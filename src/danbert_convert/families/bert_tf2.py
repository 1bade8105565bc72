"""BERT trained or saved with TensorFlow 2's Model Garden (tf-models-official): object-based
checkpoints of a `BertEncoder`/`BertEncoderV2`, alone or in a `BertPretrainerV2`.

Variables are named by their object paths (readers/objgraph.py picks one path per variable,
not the ordinal `layer_with_weights-N` ones), and the rules match the end of a path: the
encoder is under `encoder/` in a published encoder checkpoint, `model/encoder_network/` in the
trainer's, nowhere in a SavedModel's variables. Attention kernels are einsum-shaped (query
[hidden, heads, head_dim], output [heads, head_dim, hidden]) and merge into transformers'
[hidden, hidden] Linear weights. Sizes come from the shapes (the head count too); a
`bert_config.json` or Model Garden's experiment params.yaml is checked against them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from pathlib import Path

from danbert_convert.errors import InputError
from danbert_convert.families import bert
from danbert_convert.families.table import (
    COPY,
    HEADS_BIAS,
    HEADS_IN,
    HEADS_OUT,
    Family,
    Plan,
    Rule,
    Table,
    check_fixed,
    check_sizes,
    common_config,
    dense,
)
from danbert_convert.readers.base import VariableInfo
from danbert_convert.readers.objgraph import OBJECT_GRAPH_KEY

log = logging.getLogger(__name__)

H, V, INTER, A = "hidden_size", "vocab_size", "intermediate_size", "num_attention_heads"
P, T = "max_position_embeddings", "type_vocab_size"
D = "attention_head_size"  # [H, A, d] kernels' last axis; not a transformers config key
CONFIG_NAME = "params.yaml"  # what Model Garden's trainer writes beside its checkpoints
LAYER = "_transformer_layers/{i}"
HF_LAYER = "bert.encoder.layer.{i}"


def _ln(tf: str, hf: str, group: str = "encoder") -> tuple:
    """A Keras LayerNormalization (epsilon 1e-12 throughout Model Garden's BERT)."""
    return (Rule(f"{tf}/gamma", f"{hf}.weight", COPY, (H,), group),
            Rule(f"{tf}/beta", f"{hf}.bias", COPY, (H,), group))  # fmt: skip


def _attention(tf: str, hf: str) -> tuple:
    """A query/key/value EinsumDense of MultiHeadAttention: "abc,cde->abde"."""
    return (Rule(f"{tf}/kernel", f"{hf}.weight", HEADS_IN, (H, A, D)),
            Rule(f"{tf}/bias", f"{hf}.bias", HEADS_BIAS, (A, D)))  # fmt: skip


WORD = "bert.embeddings.word_embeddings.weight"
ENCODER_RULES: tuple[Rule, ...] = (
    # official/nlp/modeling/networks/bert_encoder.py names its layers as attributes; both
    # encoders keep them (BertEncoder beside its Keras layer_with_weights-N ordinals).
    Rule("_embedding_layer/embeddings", WORD, COPY, (V, H)),
    # BertPretrainerV2's masked-LM head reads the same table; the reader may name it by that
    # path (the shorter one), never both: two tables would be two variables (both map to it).
    Rule("masked_lm/embedding_table", WORD, COPY, (V, H)),
    # layers/position_embedding.py: the one table has two attribute names.
    Rule("_position_embedding_layer/embeddings", "bert.embeddings.position_embeddings.weight",
         COPY, (P, H)),
    Rule("_position_embedding_layer/_position_embeddings",
         "bert.embeddings.position_embeddings.weight", COPY, (P, H)),
    Rule("_type_embedding_layer/embeddings", "bert.embeddings.token_type_embeddings.weight",
         COPY, (T, H)),
    *_ln("_embedding_norm_layer", "bert.embeddings.LayerNorm"),
    # layers/transformer_encoder_block.py, norm_first=False (BERT's post-LayerNorm block).
    *_attention(f"{LAYER}/_attention_layer/_query_dense", f"{HF_LAYER}.attention.self.query"),
    *_attention(f"{LAYER}/_attention_layer/_key_dense", f"{HF_LAYER}.attention.self.key"),
    *_attention(f"{LAYER}/_attention_layer/_value_dense", f"{HF_LAYER}.attention.self.value"),
    Rule(f"{LAYER}/_attention_layer/_output_dense/kernel",
         f"{HF_LAYER}.attention.output.dense.weight", HEADS_OUT, (A, D, H)),
    Rule(f"{LAYER}/_attention_layer/_output_dense/bias", f"{HF_LAYER}.attention.output.dense.bias",
         COPY, (H,)),
    # Model Garden's older Transformer layer kept the same EinsumDense as an attribute of the
    # layer itself (layers/transformer.py, 2020: `_attention_output_dense`).
    Rule(f"{LAYER}/_attention_output_dense/kernel", f"{HF_LAYER}.attention.output.dense.weight",
         HEADS_OUT, (A, D, H)),
    Rule(f"{LAYER}/_attention_output_dense/bias", f"{HF_LAYER}.attention.output.dense.bias",
         COPY, (H,)),
    *_ln(f"{LAYER}/_attention_layer_norm", f"{HF_LAYER}.attention.output.LayerNorm"),
    *dense(f"{LAYER}/_intermediate_dense", f"{HF_LAYER}.intermediate.dense", H, INTER),
    *dense(f"{LAYER}/_output_dense", f"{HF_LAYER}.output.dense", INTER, H),
    *_ln(f"{LAYER}/_output_layer_norm", f"{HF_LAYER}.output.LayerNorm"),
)  # fmt: skip

# models/bert_pretrainer.py BertPretrainerV2: layers/masked_lm.py (dense, activation, LayerNorm,
# logits against the word table plus a bias) and the next-sentence ClassificationHead
# (layers/cls_head.py: tanh(dense(x[:, 0])), then out_proj) of the default pre-training task.
NSP_POOLER = "classification_heads/0/dense"
# The same dense in a checkpoint of BertPretrainerV2.checkpoint_items (`<head>.pooler_dense`,
# the layout export_tfhub's model_with_mlm reads), which has no out_proj.
NSP_POOLER_ITEM = "next_sentence.pooler_dense"
HEAD_RULES: tuple[Rule, ...] = (
    *dense("masked_lm/dense", "cls.predictions.transform.dense", H, H, group="mlm"),
    *_ln("masked_lm/layer_norm", "cls.predictions.transform.LayerNorm", group="mlm"),
    # masked_lm.py adds the weight `output_bias` to a Keras layer: local names `bias` and
    # `output_bias/bias` for one variable.
    Rule("masked_lm/bias", "cls.predictions.bias", COPY, (V,), "mlm"),
    Rule("masked_lm/output_bias/bias", "cls.predictions.bias", COPY, (V,), "mlm"),
    *dense("classification_heads/0/out_proj", "cls.seq_relationship", H, 2, group="nsp"),
)  # fmt: skip
# The encoder's own pooler gets no gradient in BertPretrainerV2 (the head pools for itself):
# in a pre-training checkpoint it holds its initial values. transformers' pooler is then the
# next-sentence head's dense, which is what pre-training trained.
ENCODER_POOLER = dense("_pooler_layer", "bert.pooler.dense", H, H, group="pooler")
HEAD_POOLER = (*dense(NSP_POOLER, "bert.pooler.dense", H, H, group="pooler"),
               *dense(NSP_POOLER_ITEM, "bert.pooler.dense", H, H, group="pooler"))  # fmt: skip
UNTRAINED_POOLER = (
    (re.compile(r"(^|/)_pooler_layer/(kernel|bias)$"),
     "the encoder's pooler, which BertPretrainerV2 never trains (the next-sentence head's "
     "dense is the pooler written)"),
)  # fmt: skip

_LAYER_INDEX = re.compile(r"(?:^|/)_transformer_layers/([0-9]+)/")


def _has_head_pooler(names: Collection[str]) -> bool:
    return any(re.search(f"(^|/)({NSP_POOLER}|{re.escape(NSP_POOLER_ITEM)})/kernel$", n)
               for n in names)  # fmt: skip


def table(names: Collection[str], part: str, config: dict) -> Table:
    head_pooler = _has_head_pooler(names)
    rules = (*ENCODER_RULES, *(HEAD_POOLER if head_pooler else ENCODER_POOLER), *HEAD_RULES)
    return Table("Model Garden BERT", rules, bert.HEADS, bert.ARCHITECTURES, bert.CLASS_FOR_HEADS,
                 prefix="bert.", elsewhere=UNTRAINED_POOLER if head_pooler else (),
                 heads_where="masked_lm/* and classification_heads/* heads",
                 anchored=False)  # fmt: skip


def detect(names: Collection[str]) -> bool:
    """An object-based checkpoint holding a Model Garden Transformer encoder block."""
    return OBJECT_GRAPH_KEY in names and any(
        "/_attention_layer/_query_dense/" in n or n.startswith("_attention_layer/") for n in names
    )


def _one(variables: dict[str, VariableInfo], ends: tuple[str, ...], ndim: int, where: str) -> str:
    """The one variable whose path ends with one of `ends`, of `ndim` dimensions."""
    found = [n for n in variables if any(n == e or n.endswith(f"/{e}") for e in ends)]
    if not found:
        raise InputError(f"{where}: missing variable {ends[0]}")
    if len(found) > 1:
        raise InputError(f"{where}: {found[0]} and {found[1]} are both {ends[0]}; one model per "
                         "checkpoint")  # fmt: skip
    if len(variables[found[0]].shape) != ndim:
        raise InputError(f"{where}: {found[0]} has shape {list(variables[found[0]].shape)}; "
                         f"expected {ndim} dimensions")  # fmt: skip
    return found[0]


def _from_shapes(variables: dict[str, VariableInfo], where: str) -> tuple[dict, dict[str, str]]:
    """The sizes the shapes say, and which variable said each."""
    layers = {int(m.group(1)) for n in variables if (m := _LAYER_INDEX.search(n))}
    if not layers:
        ordinal = next((n for n in variables if "layer_with_weights-" in n), None)
        if ordinal is not None:
            raise InputError(f"{where}: the encoder's layers are named only by position "
                             f"({ordinal}); danbert maps Model Garden encoders by their layer "
                             "attributes (_transformer_layers/N/...), which this one lacks"
                             )  # fmt: skip
        raise InputError(f"{where}: no _transformer_layers/N/* variables")
    word = _one(variables, ("_embedding_layer/embeddings", "masked_lm/embedding_table"), 2, where)
    pos = _one(variables, ("_position_embedding_layer/embeddings",
                           "_position_embedding_layer/_position_embeddings"), 2, where)  # fmt: skip
    types = _one(variables, ("_type_embedding_layer/embeddings",), 2, where)
    query = _one(variables, ("_transformer_layers/0/_attention_layer/_query_dense/kernel",), 3,
                 where)  # fmt: skip
    inter = _one(variables, ("_transformer_layers/0/_intermediate_dense/kernel",), 2, where)
    shape = {n: variables[n].shape for n in (word, pos, types, query, inter)}
    sizes = {
        V: shape[word][0], H: shape[word][1], P: shape[pos][0], T: shape[types][0],
        A: shape[query][1], D: shape[query][2], INTER: shape[inter][1],
        "num_hidden_layers": 1 + max(layers),
    }  # fmt: skip
    origin = {V: word, H: word, P: pos, T: types, A: query, D: query, INTER: inter}
    said = {k: f"the shape of {v}" for k, v in origin.items()}
    said["num_hidden_layers"] = "the count of _transformer_layers/N"
    if sizes[A] * sizes[D] != sizes[H]:
        raise InputError(f"{where}: {query} has shape {list(shape[query])}: {sizes[A]} heads of "
                         f"{sizes[D]} is not the width {sizes[H]}")  # fmt: skip
    return sizes, said


# Model Garden's activation names (official/modeling/tf_utils.get_activation) that transformers
# computes alike. Its "gelu" is the tanh approximation (official/modeling/activations/gelu.py).
ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu", "swish": "silu", "linear": None,
               "identity": None}  # fmt: skip
# Model Garden encoder settings (official/nlp/configs/encoders.py BertEncoderConfig) that
# transformers' BertModel has no equivalent of, with the value that is plain BERT.
# (embedding_size equal to hidden_size is plain BERT too: BertEncoder projects only otherwise.)
PLAIN_BERT = {"embedding_size": None, "norm_first": False, "output_range": None}
ENCODER_KEYS = {"vocab_size": V, "hidden_size": H, "num_layers": "num_hidden_layers",
                "num_attention_heads": A, "intermediate_size": INTER,
                "max_position_embeddings": P, "type_vocab_size": T}  # fmt: skip
# The one sentence head transformers' BertForPreTraining computes: the default pre-training
# task's (official/nlp/tasks/masked_lm.py, configs/bert.py ClsHeadConfig), whose dense is as
# wide as the encoder, pooling token 0 through tanh.
NSP_HEAD = {"name": "next_sentence", "num_classes": 2, "activation": "tanh", "cls_token_idx": 0}
HEAD_DEFAULTS = {"inner_dim": 0, "num_classes": 2, "activation": "tanh", "cls_token_idx": 0,
                 "name": None}  # ClsHeadConfig's  # fmt: skip
_HEAD_INDEX = re.compile(r"(?:^|/)classification_heads/([0-9]+)/")
_HEAD_ITEM = re.compile(r"(?:^|/)[^/]+\.pooler_dense/")  # a head by its checkpoint_items name


def _mapping(value: object, key: str, where: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{where}: {key} is {value!r}, not a mapping")
    return value


def _model_garden(config: dict, where: str) -> tuple[dict, dict, list | None] | None:
    """(encoder config, the model config around it, its cls_heads) of a Model Garden
    experiment config (task.model.encoder) or an encoder config alone; None if neither."""
    model: dict = {}
    if "task" in config:
        task = _mapping(config["task"], "task", where)
        model = _mapping(task.get("model"), "task.model", where)
        encoder = model.get("encoder")
    elif "encoder" in config:
        encoder = config["encoder"]
    elif "type" in config and ("bert" in config or "bert_v2" in config):
        encoder = config
    else:
        return None
    encoder = _mapping(encoder, "the encoder section", where)
    kind = encoder.get("type")
    if kind not in ("bert", "bert_v2"):
        raise InputError(f"{where}: encoder type {kind!r}; danbert converts Model Garden's "
                         "bert and bert_v2 encoders")  # fmt: skip
    heads = model.get("cls_heads")
    if heads is not None and not isinstance(heads, list):
        raise InputError(f"{where}: cls_heads is {heads!r}, not a list")
    return _mapping(encoder.get(kind), kind, where), model, heads


def _read_model_garden(
    enc: dict, model: dict, heads: list | None, sizes: dict, names: Collection[str], where: str
) -> tuple[dict, str]:
    """What Model Garden params say, in transformers keys, and the activation; refusing what
    transformers' BERT cannot compute."""
    kind = "the encoder"
    for key, plain in PLAIN_BERT.items():
        value = enc.get(key, plain)
        if value != plain and not (key == "embedding_size" and value == sizes[H]):
            raise InputError(f"{where}: {kind}'s {key} is {value!r}; transformers' BertModel "
                             f"has no equivalent (only {plain!r} converts)")  # fmt: skip
    said = {k: enc[mg] for mg, k in ENCODER_KEYS.items() if mg in enc}
    act = enc.get("hidden_activation", "gelu")
    hf = _activation(act, where)
    mlm = model.get("mlm_activation", act)
    if mlm != act:
        raise InputError(f"{where}: mlm_activation {mlm!r} differs from hidden_activation "
                         f"{act!r}; transformers' BERT uses one activation for both")  # fmt: skip
    _check_heads(heads, sizes, names, where)
    for mg, key in (("dropout_rate", "hidden_dropout_prob"),
                    ("attention_dropout_rate", "attention_probs_dropout_prob"),
                    ("initializer_range", "initializer_range")):  # fmt: skip
        if mg in enc:
            said[key] = enc[mg]
    return said, hf


def _check_heads(heads: list | None, sizes: dict, names: Collection[str], where: str) -> None:
    """The checkpoint's classification heads must be the one next-sentence head."""
    present = sorted({int(m.group(1)) for n in names if (m := _HEAD_INDEX.search(n))})
    if not present and any(_HEAD_ITEM.search(n) for n in names):
        present = [0]
    if not present:
        return
    if not heads:
        raise InputError(f"{where}: no cls_heads, but the checkpoint has classification_heads/"
                         f"{present[0]}")  # fmt: skip
    if len(heads) != 1:
        raise InputError(f"{where}: {len(heads)} cls_heads; danbert converts the one "
                         "next-sentence head of BERT pre-training")  # fmt: skip
    head = _mapping(heads[0], "cls_heads[0]", where)
    want = {**NSP_HEAD, "inner_dim": sizes[H]}
    for key, value in want.items():
        if head.get(key, HEAD_DEFAULTS[key]) != value:
            raise InputError(f"{where}: cls_heads[0] {key} is "
                             f"{head.get(key, HEAD_DEFAULTS[key])!r}; transformers' "
                             f"BertForPreTraining computes the next-sentence head ({key} "
                             f"{value!r})")  # fmt: skip


def _activation(name: object, where: str) -> str:
    hf = ACTIVATIONS.get(name) if isinstance(name, str) else None
    if hf is None:
        raise InputError(f"{where}: activation {name!r} is not supported (Model Garden's "
                         f"{', '.join(k for k, v in ACTIVATIONS.items() if v)} convert)"
                         )  # fmt: skip
    return hf


def read_config(
    config: dict | None,
    config_name: str,
    variables: dict[str, VariableInfo],
    part: str,
    checkpoint_name: str,
) -> tuple[dict, dict[str, str]]:
    """The sizes from the shapes, checked against `config`: Model Garden's params (YAML) or a
    bert_config.json. One of them is needed: no variable shows whether the encoder normalises
    before or after each block (norm_first), its activation, or a sentence head's settings."""
    sizes, origin = _from_shapes(variables, checkpoint_name)
    if config is None:
        raise InputError(f"{checkpoint_name}: a Model Garden checkpoint does not record its "
                         "encoder's settings (norm_first, the activation); pass the params.yaml "
                         "its training wrote (or the bert_config.json published with an "
                         "encoder) with --config")  # fmt: skip
    extra: dict = {}
    described = _model_garden(config, config_name)
    if described is not None:
        said, act = _read_model_garden(*described, sizes, variables.keys(), config_name)
        kind = "Model Garden params"
    elif Path(config_name).suffix.lower() in (".yaml", ".yml"):
        raise InputError(f"{config_name}: no task.model.encoder section; not Model Garden "
                         "params")  # fmt: skip
    else:  # bert_config.json: BertConfig keys, as published beside TF2 encoders
        said = dict(check_sizes(config, config_name))
        check_fixed(config, config_name, "BERT")
        if any(_HEAD_INDEX.search(n) or _HEAD_ITEM.search(n) for n in variables):
            raise InputError(f"{config_name}: a BertConfig does not say how the checkpoint's "
                             "classification_heads/0 pools (cls_heads); pass Model Garden's "
                             "params.yaml with --config")  # fmt: skip
        # Model Garden builds its encoder from bert_config.json with get_activation(
        # hidden_act): "gelu" is its tanh approximation there too.
        act = _activation(config.get("hidden_act", "gelu"), config_name)
        kind = "bert_config.json"
    for key in ENCODER_KEYS.values():
        if key in said and said[key] != sizes[key]:
            raise InputError(f"{config_name}: {key} {said[key]!r} vs {sizes[key]} from "
                             f"{origin[key]} in {checkpoint_name}")  # fmt: skip
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range"):
        if isinstance(said.get(key), (int, float)) and not isinstance(said.get(key), bool):
            extra[key] = said[key]
    origin["hidden_act"] = f"{Path(config_name).name} ({kind})"  # no path: it is published
    return {**sizes, **extra, "hidden_act": act, "layer_norm_eps": 1e-12}, origin


def hf_config(
    config: dict, plan: Plan, hidden_act: str | None, pad_token_id: int
) -> dict[str, object]:
    """config.json of the BERT class `plan` writes, from the sizes the checkpoint showed."""
    out: dict[str, object] = {
        "model_type": "bert",
        **{k: config[k] for k in (V, H, "num_hidden_layers", A, INTER, P, T)},
        "hidden_act": hidden_act or config["hidden_act"],
        "layer_norm_eps": 1e-12,
        "hidden_dropout_prob": config.get("hidden_dropout_prob", 0.1),
        "attention_probs_dropout_prob": config.get("attention_probs_dropout_prob", 0.1),
        "initializer_range": config.get("initializer_range", 0.02),
        "pad_token_id": pad_token_id,
    }
    return common_config(out, plan)


FAMILY = Family(
    name="bert_tf2",
    title="Model Garden BERT",
    parts=("",),
    config_file=CONFIG_NAME,
    detect=detect,
    read_config=read_config,
    table=table,
    hf_config=hf_config,
    classes=lambda part: (bert.HEADS, bert.ARCHITECTURES),
    model_type="bert",
    source_kind="a TensorFlow 2 checkpoint of the TF Model Garden",
    activation_from="from the config",
    activation_note="Model Garden's \"gelu\" is the tanh approximation, transformers' `gelu_new`.",
    fixed_activation=True,  # Model Garden's "gelu" is only ever the tanh form
)

__all__ = ["FAMILY", "detect", "hf_config", "read_config", "table"]

"""ALBERT (google-research/albert): factorised embeddings and layers shared in groups.

The embeddings are E wide and mapped to the hidden size by `embedding_hidden_mapping_in`;
the transformer's weights live once per group (`group_G/inner_group_I`), and layer L of
`num_hidden_layers` runs group `int(L / (num_hidden_layers / num_hidden_groups))`
(modeling.py's transformer_model). transformers' AlbertModel keeps the same sharing
(`albert_layer_groups.G.albert_layers.I`), so each TF variable maps to one parameter.
Names as modeling.py and run_pretraining.py make them (google-research/albert); the TF-Hub
module copies inside the release tarballs carry a `module/` prefix and map the same way.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from danbert_convert.errors import InputError
from danbert_convert.families.table import (
    COPY,
    INTER,
    Architecture,
    Family,
    Head,
    Plan,
    Rule,
    Table,
    check_fixed,
    check_sizes,
    config_int,
    dense,
    ln,
    release_config,
)
from danbert_convert.readers.base import VariableInfo

H, V, E = "hidden_size", "vocab_size", "embedding_size"
CONFIG_NAME = "albert_config.json"
_GROUP = "bert/encoder/transformer/group_{g}/inner_group_{j}"
_HF_GROUP = "albert.encoder.albert_layer_groups.{g}.albert_layers.{j}"


def _rules(prefix: str) -> tuple[Rule, ...]:
    """ALBERT's table; `prefix` is "" or the TF-Hub module copy's "module/"."""
    p = prefix
    return (
        Rule(f"{p}bert/embeddings/word_embeddings", "albert.embeddings.word_embeddings.weight",
             COPY, (V, E)),
        Rule(f"{p}bert/embeddings/position_embeddings",
             "albert.embeddings.position_embeddings.weight", COPY, ("max_position_embeddings", E)),
        Rule(f"{p}bert/embeddings/token_type_embeddings",
             "albert.embeddings.token_type_embeddings.weight", COPY, ("type_vocab_size", E)),
        *ln(f"{p}bert/embeddings", "albert.embeddings", E),
        *dense(f"{p}bert/encoder/embedding_hidden_mapping_in",
               "albert.encoder.embedding_hidden_mapping_in", E, H),
        # One shared block per group and inner group. modeling.py's attention_ffn_block names
        # the attention `attention_1` and the FFN `ffn_1` (the scopes are opened twice); its
        # first LayerNorm follows the attention, `LayerNorm_1` the FFN (transformers' names
        # attention.LayerNorm and full_layer_layer_norm; its load_tf_weights_in_albert).
        *dense(f"{p}{_GROUP}/attention_1/self/query", f"{_HF_GROUP}.attention.query", H, H),
        *dense(f"{p}{_GROUP}/attention_1/self/key", f"{_HF_GROUP}.attention.key", H, H),
        *dense(f"{p}{_GROUP}/attention_1/self/value", f"{_HF_GROUP}.attention.value", H, H),
        *dense(f"{p}{_GROUP}/attention_1/output/dense", f"{_HF_GROUP}.attention.dense", H, H),
        *ln(f"{p}{_GROUP}", f"{_HF_GROUP}.attention"),
        *dense(f"{p}{_GROUP}/ffn_1/intermediate/dense", f"{_HF_GROUP}.ffn", H, INTER),
        *dense(f"{p}{_GROUP}/ffn_1/intermediate/output/dense", f"{_HF_GROUP}.ffn_output",
               INTER, H),
        Rule(f"{p}{_GROUP}/LayerNorm_1/gamma", f"{_HF_GROUP}.full_layer_layer_norm.weight",
             COPY, (H,)),
        Rule(f"{p}{_GROUP}/LayerNorm_1/beta", f"{_HF_GROUP}.full_layer_layer_norm.bias",
             COPY, (H,)),
        *dense(f"{p}bert/pooler/dense", "albert.pooler", H, H, group="pooler"),
        # The masked-LM head transforms back to the embedding width E; its decoder is the
        # word-embedding table (transformers ties predictions.decoder to it, and the decoder's
        # bias to predictions.bias).
        *dense(f"{p}cls/predictions/transform/dense", "predictions.dense", H, E, group="mlm"),
        *ln(f"{p}cls/predictions/transform", "predictions", E, group="mlm"),
        Rule(f"{p}cls/predictions/output_bias", "predictions.bias", COPY, (V,), "mlm"),
        # Sentence-order prediction: [2, hidden] used with transpose_b, so already [out, in].
        Rule(f"{p}cls/seq_relationship/output_weights", "sop_classifier.classifier.weight",
             COPY, (2, H), "sop"),
        Rule(f"{p}cls/seq_relationship/output_bias", "sop_classifier.classifier.bias", COPY,
             (2,), "sop"),
    )  # fmt: skip


HEADS: tuple[Head, ...] = (
    Head("mlm", "masked-LM", ("predictions",), "sequence"),
    Head("sop", "sentence-order", ("sop_classifier",), "pooled"),
)
ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("AlbertForPreTraining", frozenset({"mlm", "sop"}), pooler=True,
                 task="fill-mask"),
    Architecture("AlbertForMaskedLM", frozenset({"mlm"}), pooler=False, task="fill-mask"),
    Architecture("AlbertModel", frozenset(), pooler=True, prefixed=False),
)  # fmt: skip
CLASS_FOR_HEADS = {"mlm": "AlbertForMaskedLM", "none": "AlbertModel"}
# A checkpoint saved from a graph that loaded the TF-Hub module holds the module's copy of
# every weight under `module/`, beside its own (or alone): the plain names win when present.
_COPY = ((re.compile(r"^module/"), "the TF-Hub module's copy (not compared: the plain weights "
                                   "are converted)"),)  # fmt: skip
TABLES = {
    prefix: Table("ALBERT", _rules(prefix), HEADS, ARCHITECTURES, CLASS_FOR_HEADS,
                  prefix="albert.", heads_where="cls/* heads",
                  ranges=(("g", "num_hidden_groups"), ("j", "inner_group_num")),
                  elsewhere=_COPY if prefix == "" else ())
    for prefix in ("", "module/")
}  # fmt: skip

# ALBERT's paper goes to 48 layers; a count far past that is a mistyped config.
MAX_LAYERS = 10_000
# modeling.py's options that change the computation beyond what transformers' ALBERT does,
# with the value that keeps it plain.
PLAIN = {key: (value, f"{key} {value}") for key, value in (
    ("net_structure_type", 0), ("gap_size", 0), ("num_memory_blocks", 0),
    ("down_scale_factor", 1),
)}  # fmt: skip


def _prefix(names: Collection[str]) -> str:
    plain = any(n.startswith("bert/encoder/") for n in names)
    return "module/" if not plain and any(n.startswith("module/bert/") for n in names) else ""


def detect(names: Collection[str]) -> bool:
    """ALBERT's names are BERT's scopes with the shared `transformer/group_*` blocks."""
    markers = ("bert/encoder/transformer/group_", "bert/encoder/embedding_hidden_mapping_in")
    return any(n.removeprefix("module/").startswith(markers) for n in names)


def read_config(
    config: dict | None,
    config_name: str,
    variables: dict[str, VariableInfo],
    part: str,
    checkpoint_name: str,
) -> tuple[dict, dict[str, str]]:
    """albert_config.json: BERT's sizes plus embedding_size and the grouping."""
    if config is None:
        raise InputError(f"{config_name}: not found; an ALBERT checkpoint needs its "
                         f"{CONFIG_NAME} (or --config FILE)")  # fmt: skip
    check_sizes(config, config_name)
    for key in (E, "num_hidden_groups", "inner_group_num"):
        config_int(config, key, config_name)
    if config["num_hidden_groups"] > config["num_hidden_layers"]:
        raise InputError(f"{config_name}: num_hidden_groups {config['num_hidden_groups']} is "
                         f"more than num_hidden_layers {config['num_hidden_layers']}")  # fmt: skip
    layers, groups = config["num_hidden_layers"], config["num_hidden_groups"]
    if layers > MAX_LAYERS:
        # The layers share the groups' weights, so no variable name counts them: only a bound
        # keeps a mistyped count from writing a model that never finishes a forward pass.
        raise InputError(f"{config_name}: num_hidden_layers {layers} is more than the "
                         f"{MAX_LAYERS} an ALBERT may have here")  # fmt: skip
    for i in range(layers):
        # modeling.py: int(i / L * G) in floats; transformers: int(i / (L / G)). They differ
        # for a few counts (22 layers in 22 groups): such a model cannot be run faithfully.
        if int(i / layers * groups) != int(i / (layers / groups)):
            raise InputError(f"{config_name}: num_hidden_layers {layers} in num_hidden_groups "
                             f"{groups}: ALBERT runs layer {i} with group "
                             f"{int(i / layers * groups)}, transformers with group "
                             f"{int(i / (layers / groups))}")  # fmt: skip
    if config[E] == config[H]:
        # modeling.py then has no embedding_hidden_mapping_in; transformers always has one.
        raise InputError(f"{config_name}: embedding_size equals hidden_size ({config[H]}): "
                         "ALBERT has no embedding_hidden_mapping_in then, which transformers' "
                         "ALBERT needs; not supported")  # fmt: skip
    check_fixed(config, config_name, "ALBERT", PLAIN)
    if config.get("hidden_act", "gelu") == "gelu":
        # modeling.py's gelu is the tanh approximation, whatever albert_config.json calls it:
        # transformers' name for that is gelu_new.
        why = "ALBERT's modeling.py: its gelu is the tanh approximation"
        return {**config, "hidden_act": "gelu_new"}, {"hidden_act": why}
    return config, {}


def table(names: Collection[str], part: str, config: dict) -> Table:
    return TABLES[_prefix(names)]


def hf_config(
    albert_config: dict, plan: Plan, hidden_act: str | None, pad_token_id: int
) -> dict[str, object]:
    """config.json: albert_config.json with every key kept (hidden_act as read_config
    named it), plus what transformers needs."""
    return release_config(albert_config, plan, "albert", hidden_act, pad_token_id)


FAMILY = Family(
    name="albert",
    title="ALBERT",
    parts=("",),
    config_file=CONFIG_NAME,
    detect=detect,
    read_config=read_config,
    table=table,
    hf_config=hf_config,
    classes=lambda part: (HEADS, ARCHITECTURES),
    model_type="albert",
    source_kind="an ALBERT TensorFlow 1 checkpoint",
)

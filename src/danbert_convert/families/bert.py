"""BERT (google-research/bert): its tensor table, its heads and classes, its config.

`TENSOR_MAP` is the whole name mapping; `HEADS` and `ARCHITECTURES` declare each head (its
variables' group, the transformers modules computing it) and which heads and pooler each class
has: convert writes from them, verify compares what they say the class computes. The release's
bert_config.json is read and checked here (`read_config`), and config.json written
(`hf_config`).
"""

from __future__ import annotations

from collections.abc import Collection

from danbert_convert.errors import InputError
from danbert_convert.families.table import (
    COPY,
    TRANSPOSE,
    Architecture,
    Family,
    Head,
    Plan,
    Rule,
    Table,
    TensorPlan,
    check_fixed,
    check_sizes,
    dense,
    encoder_layer,
    ln,
    release_config,
    skip_reason,
)
from danbert_convert.families.table import plan as plan_table
from danbert_convert.readers.base import VariableInfo

H, V, INTER = "hidden_size", "vocab_size", "intermediate_size"
CONFIG_NAME = "bert_config.json"

TENSOR_MAP: tuple[Rule, ...] = (
    # embeddings
    Rule("bert/embeddings/word_embeddings", "bert.embeddings.word_embeddings.weight", COPY, (V, H)),
    Rule("bert/embeddings/position_embeddings", "bert.embeddings.position_embeddings.weight", COPY,
         ("max_position_embeddings", H)),
    Rule("bert/embeddings/token_type_embeddings", "bert.embeddings.token_type_embeddings.weight",
         COPY, ("type_vocab_size", H)),
    *ln("bert/embeddings", "bert.embeddings"),
    # encoder layers
    *encoder_layer("bert/encoder/layer_{i}", "bert.encoder.layer.{i}"),
    # pooler
    *dense("bert/pooler/dense", "bert.pooler.dense", H, H, group="pooler"),
    # masked-LM head (run_pretraining.py); its decoder weight is the word-embedding table
    *dense("cls/predictions/transform/dense", "cls.predictions.transform.dense", H, H, group="mlm"),
    *ln("cls/predictions/transform", "cls.predictions.transform", group="mlm"),
    Rule("cls/predictions/output_bias", "cls.predictions.bias", COPY, (V,), "mlm"),
    # next-sentence head: [2, hidden], used with transpose_b, so already [out, in]
    Rule("cls/seq_relationship/output_weights", "cls.seq_relationship.weight", COPY, (2, H), "nsp"),
    Rule("cls/seq_relationship/output_bias", "cls.seq_relationship.bias", COPY, (2,), "nsp"),
    # run_classifier.py fine-tuning head: [num_labels, hidden], also transpose_b
    Rule("output_weights", "classifier.weight", COPY, ("num_labels", H), "classifier"),
    Rule("output_bias", "classifier.bias", COPY, ("num_labels",), "classifier"),
    # run_squad.py fine-tuning head: [2, hidden] (start, end logits)
    Rule("cls/squad/output_weights", "qa_outputs.weight", COPY, (2, H), "squad"),
    Rule("cls/squad/output_bias", "qa_outputs.bias", COPY, (2,), "squad"),
)  # fmt: skip

HEADS: tuple[Head, ...] = (
    Head("mlm", "masked-LM", ("cls.predictions",), "sequence"),
    Head("nsp", "next-sentence", ("cls.seq_relationship",), "pooled"),
    Head("classifier", "classifier", ("classifier",), "pooled"),
    Head("squad", "SQuAD span", ("qa_outputs",), "sequence"),
)

# --heads all takes the first class whose heads include the checkpoint's: a pre-training
# checkpoint must then have both of BertForPreTraining's, a fine-tuned one has its own.
# No Hub task predicts next sentences: that head gets what AutoModel gives, features.
ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("BertForPreTraining", frozenset({"mlm", "nsp"}), pooler=True, task="fill-mask"),
    Architecture("BertForMaskedLM", frozenset({"mlm"}), pooler=False, task="fill-mask"),
    Architecture("BertForNextSentencePrediction", frozenset({"nsp"}), pooler=True),
    Architecture("BertForSequenceClassification", frozenset({"classifier"}), pooler=True,
                 task="text-classification"),
    Architecture("BertForQuestionAnswering", frozenset({"squad"}), pooler=False,
                 task="question-answering"),
    Architecture("BertModel", frozenset(), pooler=True, prefixed=False),
)  # fmt: skip
# The --heads choices that name one class, whatever heads the checkpoint has.
CLASS_FOR_HEADS = {"mlm": "BertForMaskedLM", "none": "BertModel"}

TABLE = Table("BERT", TENSOR_MAP, HEADS, ARCHITECTURES, CLASS_FOR_HEADS, prefix="bert.",
              heads_where="cls/* heads")  # fmt: skip


def architecture(name: str) -> Architecture | None:
    """The architecture of a transformers class name, if danbert writes that class."""
    return TABLE.architecture(name)


def detect(names: Collection[str]) -> bool:
    """A Google-BERT checkpoint: its variables are under `bert/` (and `cls/`)."""
    return any(n.startswith(("bert/", "cls/")) for n in names)


def plan(
    variables: dict[str, VariableInfo],
    config: dict,
    *,
    config_name: str = CONFIG_NAME,
    checkpoint_name: str = "checkpoint",
    ignore_unknown: bool = False,
    heads: str = "auto",
) -> Plan:
    """`table.plan` with BERT's table (see there)."""
    return plan_table(TABLE, variables, config, config_name=config_name,
                      checkpoint_name=checkpoint_name, ignore_unknown=ignore_unknown,
                      heads=heads)  # fmt: skip


def read_config(
    config: dict | None,
    config_name: str,
    variables: dict[str, VariableInfo],
    part: str,
    checkpoint_name: str,
) -> tuple[dict, dict[str, str]]:
    """BERT's sizes come from bert_config.json alone: the plan then checks every shape."""
    if config is None:
        raise InputError(f"{config_name}: not found; a BERT checkpoint needs its {CONFIG_NAME} "
                         "(or --config FILE)")  # fmt: skip
    check_fixed(config, config_name, "BERT")
    return check_sizes(config, config_name), {}


def table(names: Collection[str], part: str, config: dict) -> Table:
    return TABLE


def hf_config(
    bert_config: dict, plan: Plan, hidden_act: str | None, pad_token_id: int
) -> dict[str, object]:
    """config.json for the class `plan` writes: bert_config.json with every key kept, plus
    what transformers needs."""
    return release_config(bert_config, plan, "bert", hidden_act, pad_token_id)


FAMILY = Family(
    name="bert",
    title="BERT",
    parts=("",),
    config_file=CONFIG_NAME,
    detect=detect,
    read_config=read_config,
    table=table,
    hf_config=hf_config,
    classes=lambda part: (HEADS, ARCHITECTURES),
    model_type="bert",
)

__all__ = [
    "ARCHITECTURES", "CLASS_FOR_HEADS", "COPY", "FAMILY", "HEADS", "TABLE", "TENSOR_MAP",
    "TRANSPOSE", "Plan", "Rule", "TensorPlan", "architecture", "hf_config", "plan", "skip_reason",
]  # fmt: skip

"""From TensorFlow variable names to transformers parameter names: one table, then a plan.

`TENSOR_MAP` is the whole name mapping. `plan()` checks a checkpoint's variables against it
and against the config (coverage, shapes, layer count) before a single byte of weight data
is read, and decides which transformers class the tensors make up. `HEADS` and
`ARCHITECTURES` declare each head (its variables' group, the transformers module computing
it) and which heads and pooler each class has: convert writes from them, verify compares
what they say the class computes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from danbert_convert.errors import InputError
from danbert_convert.readers.base import VariableInfo

# How a TF value becomes the PyTorch value. TF dense kernels are [in, out], nn.Linear is [out, in].
COPY = "copy"
TRANSPOSE = "transpose"


@dataclass(frozen=True)
class Rule:
    tf: str  # TF variable name; `{i}` stands for the encoder layer number
    hf: str  # transformers name below the model root; `{i}` likewise
    transform: str
    # TF shape, each dim a bert_config.json key or a literal number.
    shape: tuple[str | int, ...]
    # Which part of the network this belongs to; decides the model class written.
    group: str = "encoder"


H, V, INTER = "hidden_size", "vocab_size", "intermediate_size"
_LAYER = "bert/encoder/layer_{i}"
_HF_LAYER = "bert.encoder.layer.{i}"


def _ln(tf: str, hf: str, group: str = "encoder") -> tuple[Rule, ...]:
    return (
        Rule(f"{tf}/LayerNorm/gamma", f"{hf}.LayerNorm.weight", COPY, (H,), group),
        Rule(f"{tf}/LayerNorm/beta", f"{hf}.LayerNorm.bias", COPY, (H,), group),
    )


def _dense(tf: str, hf: str, n_in: str, n_out: str, group: str = "encoder") -> tuple[Rule, ...]:
    return (
        Rule(f"{tf}/kernel", f"{hf}.weight", TRANSPOSE, (n_in, n_out), group),
        Rule(f"{tf}/bias", f"{hf}.bias", COPY, (n_out,), group),
    )


TENSOR_MAP: tuple[Rule, ...] = (
    # embeddings
    Rule("bert/embeddings/word_embeddings", "bert.embeddings.word_embeddings.weight", COPY, (V, H)),
    Rule("bert/embeddings/position_embeddings", "bert.embeddings.position_embeddings.weight", COPY,
         ("max_position_embeddings", H)),
    Rule("bert/embeddings/token_type_embeddings", "bert.embeddings.token_type_embeddings.weight",
         COPY, ("type_vocab_size", H)),
    *_ln("bert/embeddings", "bert.embeddings"),
    # encoder layers
    *_dense(f"{_LAYER}/attention/self/query", f"{_HF_LAYER}.attention.self.query", H, H),
    *_dense(f"{_LAYER}/attention/self/key", f"{_HF_LAYER}.attention.self.key", H, H),
    *_dense(f"{_LAYER}/attention/self/value", f"{_HF_LAYER}.attention.self.value", H, H),
    *_dense(f"{_LAYER}/attention/output/dense", f"{_HF_LAYER}.attention.output.dense", H, H),
    *_ln(f"{_LAYER}/attention/output", f"{_HF_LAYER}.attention.output"),
    *_dense(f"{_LAYER}/intermediate/dense", f"{_HF_LAYER}.intermediate.dense", H, INTER),
    *_dense(f"{_LAYER}/output/dense", f"{_HF_LAYER}.output.dense", INTER, H),
    *_ln(f"{_LAYER}/output", f"{_HF_LAYER}.output"),
    # pooler
    *_dense("bert/pooler/dense", "bert.pooler.dense", H, H, "pooler"),
    # masked-LM head (run_pretraining.py); its decoder weight is the word-embedding table
    *_dense("cls/predictions/transform/dense", "cls.predictions.transform.dense", H, H, "mlm"),
    *_ln("cls/predictions/transform", "cls.predictions.transform", "mlm"),
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


@dataclass(frozen=True)
class Head:
    group: str  # the Rule.group of its variables
    title: str  # in messages, before "head": "masked-LM"
    module: str  # the transformers module that computes it, below the model root
    input: str  # what that module reads: "sequence" (every token) or "pooled" (the pooler's)


HEADS: tuple[Head, ...] = (
    Head("mlm", "masked-LM", "cls.predictions", "sequence"),
    Head("nsp", "next-sentence", "cls.seq_relationship", "pooled"),
    Head("classifier", "classifier", "classifier", "pooled"),
    Head("squad", "SQuAD span", "qa_outputs", "sequence"),
)
HEAD_GROUPS = {h.group: h for h in HEADS}


@dataclass(frozen=True)
class Architecture:
    name: str  # the transformers class, written to config.json `architectures`
    heads: frozenset[str]  # its head groups; in the checkpoint, they select it (--heads auto)
    pooler: bool  # whether the class has a pooler
    prefixed: bool = True  # whether parameter names keep the `bert.` prefix

    @property
    def groups(self) -> frozenset[str]:
        """Every group of variables the class holds."""
        return frozenset({"encoder", *self.heads, *(["pooler"] if self.pooler else [])})

    @property
    def outputs(self) -> tuple[str, ...]:
        """What it computes: the encoder's sequence, the pooled [CLS], each head's logits."""
        heads = tuple(h.group for h in HEADS if h.group in self.heads)
        return ("sequence", *(["pooled"] if self.pooler else []), *heads)


# --heads all takes the first class whose heads include the checkpoint's: a pre-training
# checkpoint must then have both of BertForPreTraining's, a fine-tuned one has its own.
ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("BertForPreTraining", frozenset({"mlm", "nsp"}), pooler=True),
    Architecture("BertForMaskedLM", frozenset({"mlm"}), pooler=False),
    Architecture("BertForNextSentencePrediction", frozenset({"nsp"}), pooler=True),
    Architecture("BertForSequenceClassification", frozenset({"classifier"}), pooler=True),
    Architecture("BertForQuestionAnswering", frozenset({"squad"}), pooler=False),
    Architecture("BertModel", frozenset(), pooler=True, prefixed=False),
)
# The --heads choices that name one class, whatever heads the checkpoint has.
CLASS_FOR_HEADS = {"mlm": "BertForMaskedLM", "none": "BertModel"}


def architecture(name: str) -> Architecture | None:
    """The architecture of a transformers class name, if danbert writes that class."""
    return next((a for a in ARCHITECTURES if a.name == name), None)


# Variables that are not model weights, by the last part of their name.
SKIP_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(^|/)adam_[mv]$"), "Adam optimizer slot"),
    (re.compile(r"(^|/)AdamWeightDecayOptimizer(_1)?$"), "Adam optimizer slot"),
    (re.compile(r"(^|/)(Momentum|Adagrad|RMSProp(_1)?|LAMB(_1)?)$"), "optimizer slot"),
    (re.compile(r"^global_step$"), "training step counter"),
    (re.compile(r"(^|/)(bad_steps|good_steps|loss_scale|current_loss_scale)$"),
     "mixed-precision loss-scaling state"),
)  # fmt: skip

# What a weight may be stored as; an integer embedding table is no model.
WEIGHT_DTYPES = ("float32", "float16", "bfloat16")

_TF2_MARKERS = ("_CHECKPOINTABLE_OBJECT_GRAPH", ".ATTRIBUTES/VARIABLE_VALUE", "layer_with_weights-")


def _compile(rule: Rule) -> re.Pattern[str]:
    return re.compile("^" + re.escape(rule.tf).replace(r"\{i\}", r"([0-9]+)") + "$")


_COMPILED = tuple((_compile(r), r) for r in TENSOR_MAP)


def match(name: str) -> tuple[Rule, int | None] | None:
    """The rule for a TF variable name and its layer number, or None."""
    for pattern, rule in _COMPILED:
        m = pattern.match(name)
        if m:
            return rule, int(m.group(1)) if m.groups() else None
    return None


def group_of(name: str) -> str | None:
    """The group ("encoder", "pooler", a head) a TF variable belongs to, or None."""
    m = match(name)
    return m[0].group if m else None


def skip_reason(name: str) -> str | None:
    """Why a variable that is not a weight is left out, or None if it is not skippable."""
    for pattern, reason in SKIP_RULES:
        if pattern.search(name):
            return reason
    return None


@dataclass(frozen=True)
class TensorPlan:
    hf: str  # output name
    tf: str  # source variable
    transform: str
    shape: tuple[int, ...]  # output shape
    dtype: str  # numpy dtype name of the source

    @property
    def nbytes(self) -> int:
        import numpy as np

        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclass
class Plan:
    architecture: Architecture
    tensors: list[TensorPlan]
    skipped: dict[str, str]  # TF name -> reason
    unknown: list[str]
    derived_config: dict[str, object] = field(default_factory=dict)

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def _hf_name(rule: Rule, layer: int | None, arch: Architecture) -> str:
    name = rule.hf.replace("{i}", str(layer)) if layer is not None else rule.hf
    if not arch.prefixed and name.startswith("bert."):
        name = name[len("bert.") :]
    return name


def _heads_of(name: str) -> frozenset[str]:
    arch = architecture(name)
    return frozenset() if arch is None else frozenset(arch.heads)


def _choose_architecture(present: set[str], heads: str, where: str) -> Architecture:
    """The class to write for the checkpoint's head groups and the --heads choice.

    auto: the class with exactly those heads; all: the first whose heads include them; mlm,
    none: the class named in CLASS_FOR_HEADS. A head the class needs and the checkpoint lacks
    altogether is a one-line error naming its variables.
    """
    if heads in CLASS_FOR_HEADS:
        found = architecture(CLASS_FOR_HEADS[heads])
    elif heads == "auto":
        found = next((a for a in ARCHITECTURES if a.heads == present), None)
    elif heads == "all":
        found = next((a for a in ARCHITECTURES if a.heads >= present), None)
    else:
        raise ValueError(
            f"heads must be auto, all or one of {sorted(CLASS_FOR_HEADS)}, not {heads!r}"
        )
    if found is None:
        # A class made of some of its heads still converts, leaving the others out.
        ways = [h for h, cls in CLASS_FOR_HEADS.items() if _heads_of(cls) <= present]
        hint = f"; --heads {' or '.join(ways)} writes a part of it" if ways else ""
        raise InputError(
            f"{where}: unsupported combination of output heads ({', '.join(sorted(present))})"
            + hint
        )
    missing = [h for h in HEADS if h.group in found.heads - present]
    if missing:
        names = [r.tf for h in missing for r in TENSOR_MAP if r.group == h.group]
        titles = " and ".join(h.title for h in missing)
        raise InputError(
            f"{where}: --heads {heads} writes {found.name}, but the checkpoint has no {titles} "
            f"head{'s' if len(missing) > 1 else ''}: {', '.join(names)} missing"
        )
    return found


def _not_written(group: str, arch: Architecture, heads: str) -> str:
    """Why a weight of the checkpoint is not in the class written (the manifest's reason)."""
    what = "pooler" if group == "pooler" else f"{HEAD_GROUPS[group].title} head"
    if heads == "auto":  # only the pooler: auto writes every head the checkpoint has
        return f"{what}, which {arch.name} does not have"
    return f"not written: --heads {heads}: {arch.name} has no {what}"


def _config_int(config: dict, key: str, config_name: str, needed_for: str = "") -> int:
    """A size from the config: a positive integer, or one line naming the key."""
    if key not in config:
        raise InputError(f"{config_name}: missing key {key!r}" + needed_for)
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{config_name}: {key} is {value!r}; it must be a positive integer")
    return value


def _expected_shape(rule: Rule, config: dict, config_name: str, tf_name: str) -> tuple[int, ...]:
    return tuple(
        d if isinstance(d, int) else _config_int(config, d, config_name, f" (needed for {tf_name})")
        for d in rule.shape
    )


def plan(
    variables: dict[str, VariableInfo],
    config: dict,
    *,
    config_name: str = "bert_config.json",
    checkpoint_name: str = "checkpoint",
    ignore_unknown: bool = False,
    heads: str = "auto",
) -> Plan:
    """Map every checkpoint variable, or fail with one line naming what is wrong.

    `heads` chooses the class written (defaults.HEAD_SETTINGS): auto, the one the checkpoint's heads
    make up; all, that class's every head (BertForPreTraining for a pre-training checkpoint);
    mlm, BertForMaskedLM; none, BertModel. What the class has no place for is skipped, with
    the reason.
    """
    tf2 = [n for n in variables if any(m in n for m in _TF2_MARKERS)]
    if tf2:
        raise InputError(
            f"{checkpoint_name}: a TF2 object-based checkpoint (variables like {tf2[0]}); "
            "only TF1 name-based Google-BERT checkpoints (bert/encoder/layer_0/...) are supported"
        )

    matched: list[tuple[str, Rule, int | None]] = []
    skipped: dict[str, str] = {}
    unknown: list[str] = []
    for name in variables:
        m = match(name)
        if m:
            matched.append((name, *m))
        elif reason := skip_reason(name):
            skipped[name] = reason
        else:
            unknown.append(name)
    if unknown and not ignore_unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise InputError(
            f"{checkpoint_name}: unrecognised variable {unknown[0]}{more}; "
            "use --ignore-unknown to convert without it"
        )
    for name in unknown:
        skipped[name] = "unrecognised (--ignore-unknown)"

    present = {rule.group for _, rule, _ in matched} - {"encoder", "pooler"}
    arch = _choose_architecture(present, heads, checkpoint_name)

    derived: dict[str, object] = {}
    derived_from: dict[str, str] = {}
    if "classifier" in arch.heads:
        # The label count is whatever the fine-tuning used; the checkpoint is its only record.
        head = variables.get("output_bias") or variables["output_weights"]
        derived["num_labels"] = head.shape[0]
        derived_from = {"num_labels": head.name}
        if "num_labels" in config:
            said = _config_int(config, "num_labels", config_name)
            if said != head.shape[0]:
                raise InputError(f"num_labels {said} in {config_name} vs {head.shape[0]} rows in "
                                 f"{head.name} of {checkpoint_name}")  # fmt: skip
    cfg = {**config, **derived}

    n_layers = _config_int(cfg, "num_hidden_layers", config_name)
    tensors: list[TensorPlan] = []
    for name, rule, layer in matched:
        if rule.group not in arch.groups:
            skipped[name] = _not_written(rule.group, arch, heads)
            continue
        if layer is not None and not 0 <= layer < n_layers:
            raise InputError(
                f"{checkpoint_name}: {name} is layer {layer}, but num_hidden_layers is "
                f"{n_layers} in {config_name}"
            )
        dtype = variables[name].dtype
        if dtype.name not in WEIGHT_DTYPES:
            kind = dtype.name if dtype.kind != "O" else "object (a string or other non-number)"
            raise InputError(
                f"{checkpoint_name}: variable {name} has dtype {kind}; weights must be "
                f"{', '.join(WEIGHT_DTYPES[:-1])} or {WEIGHT_DTYPES[-1]}"
            )
        expected = _expected_shape(rule, cfg, config_name, name)
        actual = variables[name].shape
        if len(actual) != len(expected):
            raise InputError(
                f"{checkpoint_name}: {name} has shape {list(actual)}, expected {list(expected)} "
                f"from {config_name}"
            )
        for axis, (key, want, got) in enumerate(zip(rule.shape, expected, actual, strict=True)):
            if want == got:
                continue
            found = f"{got} {_axis_word(axis, len(actual))} in {name} (shape {list(actual)})"
            if isinstance(key, int):
                raise InputError(f"{checkpoint_name}: {found}; a BERT has {want} there")
            if key in derived_from:
                raise InputError(f"{checkpoint_name}: {key} {want} from {derived_from[key]} vs "
                                 f"{found}")  # fmt: skip
            raise InputError(f"{key} {want} in {config_name} vs {found}")
        out_shape = tuple(reversed(actual)) if rule.transform == TRANSPOSE else actual
        tensors.append(
            TensorPlan(_hf_name(rule, layer, arch), name, rule.transform, out_shape,
                       variables[name].dtype.name)
        )  # fmt: skip

    _check_unique(tensors, checkpoint_name)
    _check_layer_count(matched, n_layers, config_name, checkpoint_name)
    _check_complete(tensors, arch, n_layers, checkpoint_name)
    tensors.sort(key=lambda t: t.hf)
    return Plan(arch, tensors, dict(sorted(skipped.items())), sorted(unknown), derived)


def _axis_word(axis: int, ndim: int) -> str:
    if ndim == 1:
        return "entries"
    return "rows" if axis == 0 else "columns" if axis == 1 else f"entries on axis {axis}"


def _check_unique(tensors: list[TensorPlan], checkpoint_name: str) -> None:
    """Two variables for one output (layer_1 and layer_01) would make a corrupt file."""
    seen: dict[str, str] = {}
    for t in tensors:
        if t.hf in seen:
            raise InputError(f"{checkpoint_name}: {seen[t.hf]} and {t.tf} both map to {t.hf}")
        seen[t.hf] = t.tf


def _check_layer_count(
    matched: list[tuple[str, Rule, int | None]],
    n_layers: int,
    config_name: str,
    checkpoint_name: str,
) -> None:
    """More layers in the config than in the checkpoint: one line, before any per-layer work.

    (A config saying 1000000000 layers must not make a list of them.)
    """
    present = 1 + max((layer for _, _, layer in matched if layer is not None), default=-1)
    if n_layers > present:
        have = f"layer_0 to layer_{present - 1}" if present else "no bert/encoder/layer_*"
        raise InputError(f"num_hidden_layers {n_layers} in {config_name} vs {present} layers "
                         f"({have}) in {checkpoint_name}")  # fmt: skip


def _check_complete(
    tensors: list[TensorPlan], arch: Architecture, n_layers: int, checkpoint_name: str
) -> None:
    """Every weight the chosen class has must come from the checkpoint: none left random."""
    have = {t.hf for t in tensors}
    for rule in TENSOR_MAP:
        if rule.group not in arch.groups:
            continue
        layers: Iterable[int | None] = range(n_layers) if "{i}" in rule.tf else [None]
        for layer in layers:
            if _hf_name(rule, layer, arch) not in have:
                tf = rule.tf.replace("{i}", str(layer)) if layer is not None else rule.tf
                raise InputError(
                    f"{checkpoint_name}: missing variable {tf} (needed for "
                    f"{_hf_name(rule, layer, arch)} of {arch.name})"
                )


def hf_config(
    bert_config: dict, plan: Plan, hidden_act: str | None, pad_token_id: int
) -> dict[str, object]:
    """config.json for the class `plan` writes: bert_config.json with every key kept, plus
    what transformers needs."""
    config: dict[str, object] = {**bert_config}
    config["model_type"] = "bert"
    config["architectures"] = [plan.architecture.name]
    if hidden_act:
        config["hidden_act"] = hidden_act
    config.setdefault("layer_norm_eps", 1e-12)  # Google BERT's LayerNorm epsilon
    config["pad_token_id"] = pad_token_id
    if len({t.dtype for t in plan.tensors}) > 1:
        # transformers loads the whole model in one dtype, by default the first tensor's:
        # float32 weights would be rounded to a float16 neighbour's. float16 and bfloat16
        # widen to float32 exactly.
        config["dtype"] = "float32"
    if "num_labels" in plan.derived_config:
        # From the classifier's shape, which the plan checked against bert_config.json.
        n = int(str(plan.derived_config["num_labels"]))
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(n)}
    else:
        # Without a classifier the key sizes nothing but the label table transformers builds
        # from it on load, which an absurd value would make huge.
        config.pop("num_labels", None)
    return config

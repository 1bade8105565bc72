"""What every family's tensor table is made of, and `plan()`, which checks a checkpoint against one.

A family module (bert.py, electra.py) declares a `Table`: its `Rule`s (TF variable name ->
transformers name, transform, TF shape in config keys), its heads and the transformers classes
they make up. `plan()` is the same for every family: it checks a checkpoint's variables against
the table and the config (coverage, shapes, layer count) before a single byte of weight data
is read, and decides which class the tensors make up. `Family` is what convert, verify and
inspect ask: detection from variable names, the config, the table, the config.json written.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from danbert_convert.errors import InputError, with_article
from danbert_convert.readers.base import VariableInfo
from danbert_convert.readers.objgraph import OBJECT_GRAPH_KEY

if TYPE_CHECKING:
    import numpy as np

# How a TF value becomes the PyTorch value. TF dense kernels are [in, out], nn.Linear is [out, in].
COPY = "copy"
TRANSPOSE = "transpose"
# Model Garden's (TF2) attention kernels are einsum-shaped; their head axes merge row-major, so
# head n takes columns n*d..(n+1)*d, as transformers' transpose_for_scores splits them.
HEADS_IN = "merge_heads_transpose"  # query/key/value kernel [H, A, d] -> [H, A*d] -> transposed
HEADS_BIAS = "merge_heads"  # their bias [A, d] -> [A*d]
HEADS_OUT = "merge_heads_out_transpose"  # output kernel [A, d, H] -> [A*d, H] -> transposed


def _merged_shape(transform: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` with the head axes that `transform` merges merged."""
    if transform == HEADS_IN:
        return (shape[0], math.prod(shape[1:]))
    if transform == HEADS_BIAS:
        return (math.prod(shape),)
    if transform == HEADS_OUT:
        return (math.prod(shape[:-1]), shape[-1])
    return tuple(shape)


def merged(transform: str, value: np.ndarray) -> np.ndarray:
    """`value` with the head axes that `transform` merges merged (a view): what is then
    copied or transposed."""
    return value.reshape(_merged_shape(transform, value.shape))


def transposes(transform: str) -> bool:
    return transform in (TRANSPOSE, HEADS_IN, HEADS_OUT)


def output_shape(transform: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The transformers shape of a TF value of `shape` after `transform`."""
    shape = _merged_shape(transform, shape)
    return tuple(reversed(shape)) if transposes(transform) else shape


@dataclass(frozen=True)
class Rule:
    tf: str  # TF variable name; `{i}` (or another of Table.ranges) stands for a number
    hf: str  # transformers name below the model root; the same placeholders
    transform: str
    # TF shape, each dim a config key or a literal number.
    shape: tuple[str | int, ...]
    # Which part of the network this belongs to; decides the model class written.
    group: str = "encoder"


H, V, INTER = "hidden_size", "vocab_size", "intermediate_size"


def ln(tf: str, hf: str, dim: str = H, group: str = "encoder") -> tuple[Rule, ...]:
    """A LayerNorm: TF's gamma/beta are transformers' weight/bias."""
    return (
        Rule(f"{tf}/LayerNorm/gamma", f"{hf}.LayerNorm.weight", COPY, (dim,), group),
        Rule(f"{tf}/LayerNorm/beta", f"{hf}.LayerNorm.bias", COPY, (dim,), group),
    )


def dense(
    tf: str, hf: str, n_in: str, n_out: str | int, group: str = "encoder"
) -> tuple[Rule, ...]:
    """A tf.layers.dense: kernel [in, out] transposed to nn.Linear's [out, in], bias copied."""
    return (
        Rule(f"{tf}/kernel", f"{hf}.weight", TRANSPOSE, (n_in, n_out), group),
        Rule(f"{tf}/bias", f"{hf}.bias", COPY, (n_out,), group),
    )


def encoder_layer(tf: str, hf: str) -> tuple[Rule, ...]:
    """One Transformer layer of google-research/bert's modeling.py `transformer_model`.

    ELECTRA's model/modeling.py is a copy of it and names its variables the same way.
    """
    return (
        *dense(f"{tf}/attention/self/query", f"{hf}.attention.self.query", H, H),
        *dense(f"{tf}/attention/self/key", f"{hf}.attention.self.key", H, H),
        *dense(f"{tf}/attention/self/value", f"{hf}.attention.self.value", H, H),
        *dense(f"{tf}/attention/output/dense", f"{hf}.attention.output.dense", H, H),
        *ln(f"{tf}/attention/output", f"{hf}.attention.output"),
        *dense(f"{tf}/intermediate/dense", f"{hf}.intermediate.dense", H, INTER),
        *dense(f"{tf}/output/dense", f"{hf}.output.dense", INTER, H),
        *ln(f"{tf}/output", f"{hf}.output"),
    )


@dataclass(frozen=True)
class Head:
    group: str  # the Rule.group of its variables
    title: str  # in messages, before "head": "masked-LM"
    # The transformers modules that compute it, below the model root, applied in order.
    modules: tuple[str, ...]
    input: str  # what the first module reads: "sequence" (every token) or "pooled"


@dataclass(frozen=True)
class Architecture:
    name: str  # the transformers class, written to config.json `architectures`
    heads: frozenset[str]  # its head groups; in the checkpoint, they select it (--heads auto)
    pooler: bool  # whether the class has a pooler
    prefixed: bool = True  # whether parameter names keep the base model's prefix ("bert.")
    task: str = "feature-extraction"  # the Hub's pipeline task for it (the model card's tag)

    @property
    def groups(self) -> frozenset[str]:
        """Every group of variables the class holds."""
        return frozenset({"encoder", *self.heads, *(["pooler"] if self.pooler else [])})

    @property
    def outputs(self) -> tuple[str, ...]:
        """What it computes: the encoder's sequence, the pooled [CLS], each head's logits."""
        return ("sequence", *(["pooled"] if self.pooler else []), *sorted(self.heads))


@dataclass(frozen=True)
class Table:
    """One family's (or one part's) declarative tensor table, and the classes it can write."""

    title: str  # the family in messages: "BERT", "ELECTRA discriminator"
    rules: tuple[Rule, ...]
    heads: tuple[Head, ...]
    # --heads all takes the first class whose heads include the checkpoint's.
    architectures: tuple[Architecture, ...]
    class_for_heads: dict[str, str]  # the --heads choices that name one class
    prefix: str  # the base model's parameter prefix, e.g. "bert."
    # Variables of the checkpoint that belong to another part, with why they are left out.
    elsewhere: tuple[tuple[re.Pattern[str], str], ...] = ()
    heads_where: str = "output heads"  # where its heads' variables are, for messages
    # Each placeholder of the rules and the config key counting it: BERT's layers `{i}`;
    # ALBERT's shared groups `{g}` and their inner layers `{j}`. The first is what messages
    # call the encoder's layers.
    ranges: tuple[tuple[str, str], ...] = (("i", "num_hidden_layers"),)
    # Whether a rule names the whole variable (TF1 scopes) or its end: TF2 object paths start
    # wherever the checkpoint put the model (`encoder/`, `model/encoder_network/`, nothing).
    anchored: bool = True
    _compiled: tuple[tuple[re.Pattern[str], Rule], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        compiled = tuple((_compile(r, self.ranges, self.anchored), r) for r in self.rules)
        object.__setattr__(self, "_compiled", compiled)

    def match(self, name: str) -> tuple[Rule, Index] | None:
        """The rule for a TF variable name and its numbers ({"i": 3}), or None."""
        for pattern, rule in self._compiled:
            m = pattern.search(name)
            if m:
                return rule, tuple((k, int(v)) for k, v in m.groupdict().items())
        return None

    def group_of(self, name: str) -> str | None:
        """The group ("encoder", "pooler", a head) a TF variable belongs to, or None."""
        m = self.match(name)
        return m[0].group if m else None

    def hf_name(self, name: str) -> str | None:
        """The transformers name of a TF variable in the full (prefixed) class, or None."""
        m = self.match(name)
        if not m:
            return None
        return fill(m[0].hf, m[1])

    def elsewhere_reason(self, name: str) -> str | None:
        """Why a variable of another part of the checkpoint is left out, or None."""
        return next((r for p, r in self.elsewhere if p.search(name)), None)

    def architecture(self, name: str) -> Architecture | None:
        """The architecture of a transformers class name, if this table writes that class."""
        return next((a for a in self.architectures if a.name == name), None)

    def head(self, group: str) -> Head:
        return next(h for h in self.heads if h.group == group)


Index = tuple[tuple[str, int], ...]  # a variable's placeholder values: (("i", 3),)


def fill(template: str, index: Index) -> str:
    """A rule's name with its placeholders replaced by `index`'s numbers."""
    for key, value in index:
        template = template.replace(f"{{{key}}}", str(value))
    return template


def _compile(rule: Rule, ranges: tuple[tuple[str, str], ...], anchored: bool) -> re.Pattern[str]:
    pattern = re.escape(rule.tf)
    for key, _ in ranges:
        pattern = pattern.replace(re.escape(f"{{{key}}}"), f"(?P<{key}>[0-9]+)")
    return re.compile(f"^{pattern}$" if anchored else f"(?:^|/){pattern}$")


@dataclass(frozen=True)
class Family:
    """What convert, verify and inspect ask of a model family; one instance per family module."""

    name: str  # "bert", "electra": recorded in the manifest
    title: str  # "BERT"
    parts: tuple[str, ...]  # the networks one checkpoint holds ("discriminator", "generator")
    config_file: str  # the config file a release has beside its checkpoint ("" if none)
    detect: Callable[[Collection[str]], bool]
    # (parsed config file or None, its name, the checkpoint's variables, part, checkpoint name)
    # -> the sizes of the part, in transformers config keys, and where each one came from.
    read_config: Callable[
        [dict | None, str, dict[str, VariableInfo], str, str], tuple[dict, dict[str, str]]
    ]
    table: Callable[[Collection[str], str, dict], Table]  # (variable names, part, config)
    # (config, plan, --hidden-act, pad token id) -> config.json
    hf_config: Callable[[dict, Plan, str | None, int], dict[str, object]]
    # part -> its heads and the classes they make (what verify computes for a class)
    classes: Callable[[str], tuple[tuple[Head, ...], tuple[Architecture, ...]]]
    model_type: str  # config.json's model_type
    default_part: str = ""
    # Whether its releases may keep vocab.txt up to source.VOCAB_LEVELS_UP folders above the
    # checkpoint (ELECTRA's data/models/NAME/). Elsewhere one found there may be another model's.
    vocab_above: bool = False
    # What the model card calls a source of this family that no registry entry names.
    source_kind: str = "a Google-BERT TensorFlow 1 checkpoint"
    # The model card's word on the activation: where it came from (unless --hidden-act set it),
    # then what the source's name for it means.
    activation_from: str = "as bert_config.json says"
    activation_note: str = (
        'google-research/bert wrote "gelu" for the exact (erf) GELU until December 2018 and '
        "for the tanh approximation from February 2019 on; transformers calls the latter "
        "`gelu_new`."
    )
    # Whether the source computes only its config's activation (verify's parity then ignores
    # a --hidden-act override, which makes the model compute something else).
    fixed_activation: bool = False


# The sizes every family's config has (BertConfig's; ElectraConfig and AlbertConfig keep them).
REQUIRED_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)


def check_sizes(config: dict, path: object) -> dict:
    """A config's transformer sizes: each a positive integer, the heads dividing the width."""
    for key in REQUIRED_CONFIG_KEYS:
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InputError(f"{path}: key {key!r} missing or not an integer")
        if value < 1:
            raise InputError(f"{path}: {key} is {value}; it must be a positive integer")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise InputError(
            f"{path}: hidden_size {config['hidden_size']} is not a multiple of "
            f"num_attention_heads {config['num_attention_heads']}"
        )
    return config


# Keys transformers would act on that Google's TensorFlow code (BERT's, ALBERT's modeling.py)
# never reads, with what that code computes: a release config saying otherwise would make the
# converted model (and the reference verify builds from config.json) compute something else.
FIXED_KEYS: dict[str, tuple[object, str]] = {
    "layer_norm_eps": (1e-12, "each LayerNorm with 1e-12"),
    "tie_word_embeddings": (True, "the masked-LM decoder with the word-embedding table"),
    "position_embedding_type": ("absolute", "absolute position embeddings"),
}


def check_fixed(config: dict, config_name: str, title: str, fixed: dict | None = None) -> None:
    """Refuse a key of FIXED_KEYS (and `fixed`: key -> value) the TensorFlow code ignores
    but transformers would use, when its value is not what that code computes."""
    for key, (want, what) in {**FIXED_KEYS, **(fixed or {})}.items():
        value = config.get(key, want)
        if value != want or isinstance(value, bool) != isinstance(want, bool):
            raise InputError(f"{config_name}: {key} {value!r} is not supported ({title}'s "
                             f"modeling.py computes {what})")  # fmt: skip


# Variables that are not model weights, by the last part of their name.
SKIP_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(^|/)adam_[mv]$"), "Adam optimizer slot"),
    # Google's internal LAMB (ALBERT): export_checkpoints.py filters these names out.
    (re.compile(r"(^|/)lamb_[mv]$"), "LAMB optimizer slot"),
    (re.compile(r"(^|/)AdamWeightDecayOptimizer(_1)?$"), "Adam optimizer slot"),
    (re.compile(r"(^|/)(Momentum|Adagrad|RMSProp(_1)?|LAMB(_1)?)$"), "optimizer slot"),
    (re.compile(r"^global_step$"), "training step counter"),
    (re.compile(r"(^|/)(bad_steps|good_steps|loss_scale|current_loss_scale)$"),
     "mixed-precision loss-scaling state"),
)  # fmt: skip

OBJECT_GRAPH_REASON = "object graph (read for the variable names)"
METADATA_REASON = "object metadata, not a weight"
# TensorFlow 2 object-based checkpoints only (those holding OBJECT_GRAPH_KEY), whose variables
# readers/objgraph.py names by object path; (pattern, reason, scalars only).
OBJECT_SKIP_RULES: tuple[tuple[re.Pattern[str], str, bool], ...] = (
    # Legacy (tf.compat.v1 / tf_keras.optimizers.legacy) slots: <var>/.OPTIMIZER_SLOT/<opt>/m.
    (re.compile(r"(^|/)\.OPTIMIZER_SLOT/"), "optimizer slot", False),
    # Keras optimizers (tf_keras >= 2.11, Keras 3) keep their slots in lists of their own
    # (_momentums/N, _velocities/N, _variables/N, ...); _trainable_variables lists the MODEL's
    # weights, which have model paths of their own when the model is in the checkpoint.
    (re.compile(r"^optimizer/(?!_trainable_variables/)_?[A-Za-z_]+/[0-9]+$"), "optimizer slot",
     False),
    # The optimizer's counters and hyperparameters (iter, beta_1, _learning_rate, ...): scalars.
    # A tensor directly under `optimizer` is no known state: unrecognised, not skipped.
    (re.compile(r"^optimizer/[^/]+$"), "optimizer state", True),
    (re.compile(r"^save_counter$"), "checkpoint save counter", True),
    (re.compile(f"^{OBJECT_GRAPH_KEY}$"), OBJECT_GRAPH_REASON, True),
    # A variable's own key (.../.ATTRIBUTES/VARIABLE_VALUE) appears only when no object path
    # names it: that one stays unrecognised.
    (re.compile(r"(^|/)\.ATTRIBUTES/(?!VARIABLE_VALUE$)"), METADATA_REASON, False),
)  # fmt: skip
# The skip reasons above that are not training state (inspect lists them apart).
NOT_TRAINING_STATE = (OBJECT_GRAPH_REASON, METADATA_REASON)

# What a weight may be stored as; an integer embedding table is no model.
WEIGHT_DTYPES = ("float32", "float16", "bfloat16")


def skip_reason(name: str, variables: Mapping[str, VariableInfo] | None = None) -> str | None:
    """Why a variable that is not a weight is left out, or None if it is not skippable.

    `variables`: the checkpoint's listing, if known; a TF2 object-based checkpoint's own
    rules (OBJECT_SKIP_RULES) apply only with it, and only when it holds the object graph.
    """
    for pattern, reason in SKIP_RULES:
        if pattern.search(name):
            return reason
    if variables is None or OBJECT_GRAPH_KEY not in variables:
        return None
    for pattern, reason, scalar in OBJECT_SKIP_RULES:
        if pattern.search(name) and not (scalar and variables[name].shape != ()):
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


def _hf_name(table: Table, rule: Rule, index: Index, arch: Architecture) -> str:
    name = fill(rule.hf, index)
    if not arch.prefixed and name.startswith(table.prefix):
        name = name[len(table.prefix) :]
    return name


def _choose_architecture(table: Table, present: set[str], heads: str, where: str) -> Architecture:
    """The class to write for the checkpoint's head groups and the --heads choice.

    auto: the class with exactly those heads; all: the first whose heads include them; mlm,
    none: the class named in `class_for_heads`. A head the class needs and the checkpoint lacks
    altogether is a one-line error naming its variables.
    """
    found: Architecture | None
    if heads in table.class_for_heads:
        found = table.architecture(table.class_for_heads[heads])
    elif heads == "auto":
        found = next((a for a in table.architectures if a.heads == present), None)
    elif heads == "all":
        found = next((a for a in table.architectures if a.heads >= present), None)
    elif heads in ("mlm", "none"):  # a choice of the CLI's that this table has no class for
        raise InputError(f"{where}: --heads {heads}: the {table.title} has no such class; "
                         f"choose from auto, all, {', '.join(table.class_for_heads)}")  # fmt: skip
    else:
        raise ValueError(
            f"heads must be auto, all or one of {sorted(table.class_for_heads)}, not {heads!r}"
        )
    if found is None:
        # A class made of some of its heads still converts, leaving the others out.
        ways = [
            h
            for h, cls in table.class_for_heads.items()
            if (a := table.architecture(cls)) is not None and a.heads <= present
        ]
        hint = f"; --heads {' or '.join(ways)} writes a part of it" if ways else ""
        raise InputError(
            f"{where}: unsupported combination of output heads ({', '.join(sorted(present))})"
            + hint
        )
    missing = [h for h in table.heads if h.group in found.heads - present]
    if missing:
        names = [r.tf for h in missing for r in table.rules if r.group == h.group]
        titles = " and ".join(h.title for h in missing)
        raise InputError(
            f"{where}: --heads {heads} writes {found.name}, but the checkpoint has no {titles} "
            f"head{'s' if len(missing) > 1 else ''}: {', '.join(names)} missing"
        )
    return found


def _not_written(table: Table, group: str, arch: Architecture, heads: str) -> str:
    """Why a weight of the checkpoint is not in the class written (the manifest's reason)."""
    what = "pooler" if group == "pooler" else f"{table.head(group).title} head"
    if heads == "auto":  # only the pooler: auto writes every head the checkpoint has
        return f"{what}, which {arch.name} does not have"
    return f"not written: --heads {heads}: {arch.name} has no {what}"


def config_int(config: dict, key: str, config_name: str, needed_for: str = "") -> int:
    """A size from the config: a positive integer, or one line naming the key."""
    if key not in config:
        raise InputError(f"{config_name}: missing key {key!r}" + needed_for)
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{config_name}: {key} is {value!r}; it must be a positive integer")
    return value


def _expected_shape(rule: Rule, config: dict, config_name: str, tf_name: str) -> tuple[int, ...]:
    return tuple(
        d if isinstance(d, int) else config_int(config, d, config_name, f" (needed for {tf_name})")
        for d in rule.shape
    )


def plan(
    table: Table,
    variables: dict[str, VariableInfo],
    config: dict,
    *,
    config_name: str,
    checkpoint_name: str = "checkpoint",
    ignore_unknown: bool = False,
    heads: str = "auto",
) -> Plan:
    """Map every checkpoint variable by `table`, or fail with one line naming what is wrong.

    `heads` chooses the class written (defaults.HEAD_SETTINGS): auto, the one the checkpoint's
    heads make up; all, that class's every head; mlm or none, the class `table.class_for_heads`
    names. What the class has no place for is skipped, with the reason.
    """
    matched: list[tuple[str, Rule, Index]] = []
    skipped: dict[str, str] = {}
    unknown: list[str] = []
    for name in variables:
        m = table.match(name)
        if m:
            matched.append((name, *m))
        elif reason := skip_reason(name, variables) or table.elsewhere_reason(name):
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
    arch = _choose_architecture(table, present, heads, checkpoint_name)

    # A dimension that only a head's shape records (run_classifier.py's label count: whatever
    # the fine-tuning used) comes from the checkpoint, checked against the config if it says.
    derived: dict[str, object] = {}
    derived_from: dict[str, str] = {}
    for name, rule, _ in matched:
        if rule.group not in arch.heads:
            continue
        for axis, key in enumerate(rule.shape):
            if key == "num_labels" and key not in derived:
                derived[key] = variables[name].shape[axis]
                derived_from[key] = name
                if key in config and config_int(config, key, config_name) != derived[key]:
                    raise InputError(f"{key} {config[key]} in {config_name} vs {derived[key]} "
                                     f"rows in {name} of {checkpoint_name}")  # fmt: skip
    cfg = {**config, **derived}

    counts = {k: config_int(cfg, key, config_name) for k, key in table.ranges}
    tensors: list[TensorPlan] = []
    for name, rule, index in matched:
        if rule.group not in arch.groups:
            skipped[name] = _not_written(table, rule.group, arch, heads)
            continue
        for k, value in index:
            if not 0 <= value < counts[k]:
                key = dict(table.ranges)[k]
                raise InputError(
                    f"{checkpoint_name}: {name} is {_word(table, k)} {value}, but {key} is "
                    f"{counts[k]} in {config_name}"
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
                raise InputError(
                    f"{checkpoint_name}: {found}; {with_article(table.title)} has {want} there"
                )
            if key in derived_from:
                raise InputError(f"{checkpoint_name}: {key} {want} from {derived_from[key]} vs "
                                 f"{found}")  # fmt: skip
            raise InputError(f"{key} {want} in {config_name} vs {found}")
        out_shape = output_shape(rule.transform, actual)
        tensors.append(
            TensorPlan(_hf_name(table, rule, index, arch), name, rule.transform, out_shape,
                       variables[name].dtype.name)
        )  # fmt: skip

    _check_unique(tensors, checkpoint_name)
    _check_counts(table, matched, counts, config_name, checkpoint_name)
    _check_complete(table, tensors, arch, counts, checkpoint_name)
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


def _check_counts(
    table: Table,
    matched: list[tuple[str, Rule, Index]],
    counts: dict[str, int],
    config_name: str,
    checkpoint_name: str,
) -> None:
    """More layers (or groups) in the config than in the checkpoint: one line, before any
    per-layer work. (A config saying 1000000000 layers must not make a list of them.)"""
    for k, key in table.ranges:
        present = 1 + max((v for _, _, index in matched for kk, v in index if kk == k), default=-1)
        if counts[k] <= present:
            continue
        templates = [r.tf for r in table.rules if f"{{{k}}}" in r.tf]
        scope = templates[0].split(f"{{{k}}}")[0] if templates else "encoder layers"
        word = _word(table, k)
        have = f"{word}_0 to {word}_{present - 1}" if present else f"no {scope}*"
        noun = f"{word}s"
        raise InputError(f"{key} {counts[k]} in {config_name} vs {present} {noun} "
                         f"({have}) in {checkpoint_name}")  # fmt: skip


def _word(table: Table, k: str) -> str:
    """What placeholder `k` counts, from the names: "layer" (layer_{i}), "group", ..."""
    template = next((r.tf for r in table.rules if f"{{{k}}}" in r.tf), "layer_{i}")
    return template.split(f"{{{k}}}")[0].rstrip("/_").rsplit("/", 1)[-1]


def _check_complete(
    table: Table, tensors: list[TensorPlan], arch: Architecture, counts: dict[str, int],
    checkpoint_name: str,
) -> None:  # fmt: skip
    """Every weight the chosen class has must come from the checkpoint: none left random."""
    have = {t.hf for t in tensors}
    for rule in table.rules:
        if rule.group not in arch.groups:
            continue
        keys = [k for k, _ in table.ranges if f"{{{k}}}" in rule.tf]
        for values in itertools.product(*(range(counts[k]) for k in keys)):
            index = tuple(zip(keys, values, strict=True))
            if _hf_name(table, rule, index, arch) not in have:
                raise InputError(
                    f"{checkpoint_name}: missing variable {fill(rule.tf, index)} (needed for "
                    f"{_hf_name(table, rule, index, arch)} of {arch.name})"
                )


def release_config(
    release: dict, plan: Plan, model_type: str, hidden_act: str | None, pad_token_id: int
) -> dict[str, object]:
    """config.json from a release's own config (bert_config.json, albert_config.json): every
    key kept, plus what transformers needs."""
    config: dict[str, object] = {**release, "model_type": model_type}
    if hidden_act:
        config["hidden_act"] = hidden_act
    config["pad_token_id"] = pad_token_id
    return common_config(config, plan)


def common_config(config: dict[str, object], plan: Plan) -> dict[str, object]:
    """What every family's config.json says the same way: the class, the dtype, the labels."""
    config["architectures"] = [plan.architecture.name]
    config.setdefault("layer_norm_eps", 1e-12)  # Google BERT's (and ELECTRA's) LayerNorm epsilon
    if len({t.dtype for t in plan.tensors}) > 1:
        # transformers loads the whole model in one dtype, by default the first tensor's:
        # float32 weights would be rounded to a float16 neighbour's. float16 and bfloat16
        # widen to float32 exactly.
        config["dtype"] = "float32"
    if "num_labels" in plan.derived_config:
        # From the classifier's shape, which the plan checked against the config.
        n = int(str(plan.derived_config["num_labels"]))
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(n)}
    else:
        # Without a classifier the key sizes nothing but the label table transformers builds
        # from it on load, which an absurd value would make huge.
        config.pop("num_labels", None)
    return config

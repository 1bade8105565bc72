"""Model families, one module each (bert.py, electra.py), and which one a checkpoint is.

A family module holds its declarative tensor table (TF variable name -> transformers name,
with the transform each needs; table.py has what tables are made of and the `plan()` that
checks a checkpoint against one), its heads and the classes they make, how its config is read
(or inferred from shapes) and the config.json it writes, and how it is detected from variable
names. Its numpy reference forward for verify is a module of its own (*_reference.py) that
shares no code with the table: verify compares the conversion with an independent computation.

Adding a family: a module here with a `FAMILY`, and a line in `FAMILIES`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from danbert_convert.errors import InputError, with_article
from danbert_convert.families import (
    albert,
    albert_reference,
    bert,
    bert_reference,
    bert_tf2,
    bert_tf2_reference,
    electra,
    electra_reference,
)
from danbert_convert.families.table import Architecture, Family, Head, skip_reason
from danbert_convert.readers.base import VariableInfo, open_checkpoint
from danbert_convert.readers.objgraph import OBJECT_GRAPH_KEY
from danbert_convert.source import (
    Source,
    SourceFiles,
    locate,
    read_config_file,
    read_vocab,
    tokenizer_kind,
)
from danbert_convert.spm_model import read_spm_model

if TYPE_CHECKING:
    from danbert_convert._fs import StrPath

log = logging.getLogger(__name__)

# In the order detection asks them: ELECTRA's and ALBERT's names are the more specific
# (ALBERT's are BERT's scopes with shared groups). A folder's model_type names the first
# family writing it (TF1 BERT before Model Garden's) unless its manifest says which.
FAMILIES: tuple[Family, ...] = (electra.FAMILY, albert.FAMILY, bert.FAMILY, bert_tf2.FAMILY)
BY_NAME = {f.name: f for f in FAMILIES}
# The config files a release keeps beside its checkpoint, found without being named.
CONFIG_NAMES = tuple(dict.fromkeys(f.config_file for f in FAMILIES if f.config_file))


def detect(names: Collection[str], checkpoint_name: str) -> Family:
    """The family whose variables the checkpoint holds; one line naming what it is otherwise."""
    for family in FAMILIES:
        if family.detect(names):
            return family
    if OBJECT_GRAPH_KEY in names:
        listing = names if isinstance(names, Mapping) else None
        weight = next((n for n in sorted(names) if not skip_reason(n, listing)),
                      OBJECT_GRAPH_KEY)  # fmt: skip
        raise InputError(
            f"{checkpoint_name}: a TF2 object-based checkpoint (variables like {weight}) that "
            "holds no Model Garden BERT encoder (_transformer_layers/N/_attention_layer/...); "
            "the other TF2 layouts are not supported"
        )
    example = next(iter(sorted(names)), None)
    known = ", ".join(sorted(f.title for f in FAMILIES))
    raise InputError(
        f"{checkpoint_name}: not a checkpoint of a family danbert knows ({known})"
        + (f" (variables like {example})" if example else " (it holds no variables)")
    )


def family(name: str) -> Family:
    """The family of a manifest's `family` name."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise InputError(f"unknown model family {name!r}; this version knows "
                         f"{', '.join(BY_NAME)}") from None  # fmt: skip


@dataclass(frozen=True)
class ModelKind:
    """What a written model folder is: family, part, class, and the heads that class computes."""

    family: Family
    part: str
    architecture: Architecture
    heads: tuple[Head, ...]


def model_kind(
    model_type: str, class_name: str, part: str | None = None, family: str | None = None
) -> ModelKind:
    """The kind of a model folder from its config.json's model_type and class. A class that
    two parts write (ElectraModel) is `part`'s, else the first part's; the family `family`
    (a manifest's) if it writes that model_type, else the first that does. ValueError for a
    class danbert does not write."""
    fam = next((f for f in FAMILIES if f.model_type == model_type and f.name == family), None)
    fam = fam or next((f for f in FAMILIES if f.model_type == model_type), None)
    if fam is None:
        raise ValueError(f"config.json has model_type {model_type!r}, which danbert does not write")
    found = [(p, a) for p in fam.parts for a in fam.classes(p)[1] if a.name == class_name]
    if not found:
        raise ValueError(f"config.json names {class_name}, which danbert does not write")
    p, arch = next((f for f in found if f[0] == part), found[0])
    return ModelKind(fam, p, arch, fam.classes(p)[0])


def _bert_outputs(get: Callable[[str], np.ndarray], config: dict, part: str,
                  batch: dict[str, np.ndarray], *, names: Collection[str],
                  has: Callable[[str], bool], hidden_act: str) -> dict[str, Any]:  # fmt: skip
    o = bert_reference.forward(get, config, batch["input_ids"], batch["token_type_ids"],
                               batch["attention_mask"], hidden_act=hidden_act, has=has)  # fmt: skip
    return {"sequence": o.sequence, "pooled": o.pooled, "mlm": o.mlm_logits,
            "nsp": o.nsp_logits, "classifier": o.classifier_logits, "squad": o.squad_logits,
            "layers": o.hidden_states}  # fmt: skip


def _electra_outputs(get: Callable[[str], np.ndarray], config: dict, part: str,
                     batch: dict[str, np.ndarray], *, names: Collection[str],
                     has: Callable[[str], bool], hidden_act: str) -> dict[str, Any]:  # fmt: skip
    o = electra_reference.forward(get, {**config, "hidden_act": hidden_act}, part,
                                  batch["input_ids"], batch["token_type_ids"],
                                  batch["attention_mask"], names=names, has=has)  # fmt: skip
    # The reference names the logits by part; the table's head groups are what verify keys by.
    group = {"discriminator": "discriminator", "generator": "mlm"}[part]
    return {"sequence": o.sequence, group: o.logits.get(part), "layers": o.hidden_states}


@dataclass(frozen=True)
class Reference:
    """How verify runs a family's independent numpy forward pass (*_reference.py), keyed as
    the family's table names the outputs: "sequence", "pooled", each head group; "layers"."""

    outputs: Callable[..., dict[str, Any]]
    # (config, part, variable names, has) -> the variables it reads, with their shapes
    shapes: Callable[[dict, str, Collection[str], Callable[[str], bool]], dict]


def _albert_outputs(get: Callable[[str], np.ndarray], config: dict, part: str,
                    batch: dict[str, np.ndarray], *, names: Collection[str],
                    has: Callable[[str], bool], hidden_act: str) -> dict[str, Any]:  # fmt: skip
    o = albert_reference.forward(get, {**config, "hidden_act": hidden_act}, batch["input_ids"],
                                 batch["token_type_ids"], batch["attention_mask"], names=names,
                                 has=has)  # fmt: skip
    return {"sequence": o.sequence, "pooled": o.pooled, "mlm": o.logits.get("mlm"),
            "sop": o.logits.get("sop"), "layers": o.hidden_states}  # fmt: skip


def _bert_tf2_outputs(get: Callable[[str], np.ndarray], config: dict, part: str,
                      batch: dict[str, np.ndarray], *, names: Collection[str],
                      has: Callable[[str], bool], hidden_act: str) -> dict[str, Any]:  # fmt: skip
    o = bert_tf2_reference.forward(get, config, batch["input_ids"], batch["token_type_ids"],
                                   batch["attention_mask"], names=names, has=has,
                                   hidden_act=hidden_act)  # fmt: skip
    return {"sequence": o.sequence, "pooled": o.pooled, "mlm": o.mlm_logits,
            "nsp": o.nsp_logits, "layers": o.hidden_states}  # fmt: skip


REFERENCES = {
    "bert": Reference(_bert_outputs,
                      lambda config, part, names, has: bert_reference.variable_shapes(config, has)),
    "electra": Reference(_electra_outputs, electra_reference.variable_shapes),
    "bert_tf2": Reference(_bert_tf2_outputs,
                          lambda config, part, names, has: bert_tf2_reference.variable_shapes(
                              config, names, has)),
    "albert": Reference(_albert_outputs,
                        lambda config, part, names, has: albert_reference.variable_shapes(
                            config, names, has)),
}  # fmt: skip


def load_source(
    files: SourceFiles,
    *,
    part: str | None = None,
    variables: dict[str, VariableInfo] | None = None,
) -> Source:
    """Read what `files` point at: the family (from the variable names), the part's sizes
    (from the config and the shapes, as the family says) and the vocab.

    `variables`: the checkpoint's listing if the caller has it (else its .index is read).
    """
    index = f"{files.checkpoint}.index"
    if variables is None:
        reader = open_checkpoint(files.checkpoint, "native")  # reads the .index alone
        try:
            variables = reader.variables()
        finally:
            reader.close()
    fam = detect(variables, index)
    if part is None or part == "":
        part = fam.default_part
    if part not in fam.parts:
        raise InputError(
            f"{index}: --part {part} does not apply to {with_article(fam.title)} checkpoint"
            + (f"; choose {' or '.join(fam.parts)}" if any(fam.parts) else "")
        )
    if files.vocab_above:
        beside = files.folder / "vocab.txt"
        if not fam.vocab_above:
            raise InputError(f"{beside}: vocab.txt not found; {with_article(fam.title)} release "
                             f"keeps it beside the checkpoint ({files.vocab_path} may be another "
                             "model's: to use it, pass --vocab)")  # fmt: skip
        log.warning("%s: no vocab.txt beside the checkpoint; using %s", files.folder,
                    files.vocab_path)  # fmt: skip
    parsed = None if files.config_path is None else read_config_file(files.config_path)
    config_name = str(files.config_path or files.folder / (fam.config_file or "config"))
    config, origin = fam.read_config(parsed, config_name, variables, part, index)
    if tokenizer_kind(files.vocab_path) == "sentencepiece":
        pieces = [p for p, _, _ in read_spm_model(files.vocab_path).pieces]
        if len(pieces) > config["vocab_size"]:
            raise InputError(f"{files.vocab_path}: {len(pieces)} pieces, more than vocab_size "
                             f"{config['vocab_size']} in the config")  # fmt: skip
        vocab = pieces
    else:
        vocab = read_vocab(files.vocab_path, config["vocab_size"])
    return Source(
        files.checkpoint, files.config_path, files.vocab_path, config, vocab, files.state_path,
        fam.name, part, origin,
    )  # fmt: skip


def open_source(
    src: StrPath,
    *,
    checkpoint: StrPath | None = None,
    config: StrPath | None = None,
    vocab: StrPath | None = None,
    part: str | None = None,
    variables: dict[str, VariableInfo] | None = None,
) -> Source:
    """Locate and read the parts of a release folder (overrides win): `locate`, then
    `load_source`."""
    return load_source(locate_files(src, checkpoint=checkpoint, config=config, vocab=vocab),
                       part=part, variables=variables)  # fmt: skip


def locate_files(
    src: StrPath,
    *,
    checkpoint: StrPath | None = None,
    config: StrPath | None = None,
    vocab: StrPath | None = None,
) -> SourceFiles:
    """`source.locate` knowing every family's config file name."""
    return locate(Path(src), checkpoint=checkpoint, config=config, vocab=vocab,
                  config_names=CONFIG_NAMES)  # fmt: skip


__all__ = [
    "BY_NAME", "CONFIG_NAMES", "FAMILIES", "REFERENCES", "Family", "ModelKind", "Reference",
    "detect", "family", "load_source", "locate_files", "model_kind", "open_source",
]  # fmt: skip

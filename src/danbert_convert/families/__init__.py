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

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from danbert_convert.errors import InputError
from danbert_convert.families import bert, electra
from danbert_convert.families.table import Family
from danbert_convert.readers.base import VariableInfo, open_checkpoint
from danbert_convert.source import Source, SourceFiles, locate, read_json, read_vocab

if TYPE_CHECKING:
    from danbert_convert._fs import StrPath

# In the order detection asks them: ELECTRA's names are the more specific.
FAMILIES: tuple[Family, ...] = (electra.FAMILY, bert.FAMILY)
BY_NAME = {f.name: f for f in FAMILIES}

# TF2 object-based checkpoints name objects, not scopes (issue 16).
_TF2_MARKERS = ("_CHECKPOINTABLE_OBJECT_GRAPH", ".ATTRIBUTES/VARIABLE_VALUE", "layer_with_weights-")


def detect(names: Collection[str], checkpoint_name: str) -> Family:
    """The family whose variables the checkpoint holds; one line naming what it is otherwise."""
    tf2 = next((n for n in names if any(m in n for m in _TF2_MARKERS)), None)
    if tf2 is not None:
        raise InputError(
            f"{checkpoint_name}: a TF2 object-based checkpoint (variables like {tf2}); "
            "only TF1 name-based checkpoints (bert/encoder/layer_0/..., electra/...) are supported"
        )
    for family in FAMILIES:
        if family.detect(names):
            return family
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
            f"{index}: --part {part} does not apply to a {fam.title} checkpoint"
            + (f"; choose {' or '.join(fam.parts)}" if any(fam.parts) else "")
        )
    parsed = None if files.config_path is None else read_json(files.config_path)
    config_name = str(files.config_path or files.folder / (fam.config_file or "config"))
    config, origin = fam.read_config(parsed, config_name, variables, part, index)
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
    files = locate(Path(src), checkpoint=checkpoint, config=config, vocab=vocab)
    return load_source(files, part=part, variables=variables)


__all__ = ["BY_NAME", "FAMILIES", "Family", "detect", "family", "load_source", "open_source"]

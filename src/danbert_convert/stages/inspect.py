"""`danbert inspect`: what a checkpoint holds and what convert would make of it.

Reads only the `.index` file (and bert_config.json and vocab.txt if they are there), so a
checkpoint can be looked at before its 1.3 GB of data is downloaded. The model family comes
from the variable names; each variable is listed with the part(s) of the checkpoint (an
ELECTRA's discriminator, generator) that convert would write it into.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from danbert_convert.errors import InputError
from danbert_convert.families import CONFIG_NAMES, detect
from danbert_convert.families.table import NOT_TRAINING_STATE, Family, plan, skip_reason
from danbert_convert.output.tokenizer import VocabReport, vocab_report
from danbert_convert.readers.base import open_checkpoint
from danbert_convert.source import (
    SPM_SUFFIX,
    find_checkpoint,
    normalize_prefix,
    read_config_file,
    read_vocab,
    tokenizer_kind,
)

if TYPE_CHECKING:
    from danbert_convert._fs import StrPath

WEIGHTS, OPTIMIZER, OTHER = "weights", "optimizer_state", "other_skipped"


@dataclass(frozen=True)
class Variable:
    """One checkpoint variable, and what convert makes of it."""

    name: str
    shape: list[int]
    dtype: str  # as stored, spelled as numpy does ("bfloat16" and "string" have no numpy type)
    bytes: int  # as stored in the data file
    maps_to: str | None
    skip_reason: str | None
    kind: str  # WEIGHTS, OPTIMIZER (optimizer slots and other training state) or OTHER
    parts: list[str]  # the parts that convert it ("discriminator", "generator"; [] for a BERT)


@dataclass(frozen=True)
class Listing:
    """What `inspect_checkpoint` found: the variables, and the vocab as convert would see it."""

    checkpoint: str  # the .index file
    config: str | None
    architecture: str | None  # the transformers class convert would write, if known
    problem: str | None  # why convert would refuse this checkpoint, if it would
    variables: list[Variable]
    vocab_path: str | None = None
    vocab: VocabReport | None = None  # None: no vocab.txt, or one convert would refuse
    family: str | None = None  # "bert", "electra"; None when the names are no family's
    architectures: dict[str, str] | None = None  # each part's class (ELECTRA), if known

    def totals(self) -> dict[str, dict[str, int]]:
        out = {k: {"count": 0, "bytes": 0} for k in (WEIGHTS, OPTIMIZER, OTHER, "all")}
        for v in self.variables:
            for key in (v.kind, "all"):
                out[key]["count"] += 1
                out[key]["bytes"] += v.bytes
        return out

    def to_json(self) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "config": self.config,
            "architecture": self.architecture,
            "problem": self.problem,
            "variables": [
                # "parts" only for a checkpoint of several networks (an ELECTRA's two)
                {k: v for k, v in asdict(var).items() if k != "kind" and (k != "parts" or v)}
                for var in self.variables
            ],
            "totals": self.totals(),
            "family": self.family,
            "architectures": self.architectures,
            "vocab": {"path": self.vocab_path, **self.vocab.to_json()} if self.vocab else None,
        }


def _locate(
    src: Path, config: StrPath | None, vocab: StrPath | None
) -> tuple[Path, Path | None, Path | None]:
    """The checkpoint prefix and, if found, the config (bert_config.json, albert_config.json)
    and vocab.txt beside it."""
    config = None if config is None else Path(config)
    vocab = None if vocab is None else Path(vocab)
    if src.is_dir():
        prefix = find_checkpoint(src)
        folder = src
    else:
        prefix = normalize_prefix(src)
        folder = prefix.parent
    if config is None:
        config = next((folder / n for n in CONFIG_NAMES if (folder / n).is_file()), None)
    if vocab is None and (folder / "vocab.txt").is_file():
        vocab = folder / "vocab.txt"
    models = sorted(folder.glob(f"*{SPM_SUFFIX}"))
    if vocab is None and len(models) == 1:  # ALBERT's 30k-clean.model
        vocab = models[0]
    return prefix, config, vocab


def inspect_checkpoint(
    src: StrPath, *, config: StrPath | None = None, vocab: StrPath | None = None
) -> Listing:
    """List the variables of the checkpoint in `src` (a folder, a prefix or its .index file),
    and its vocab. Reads only the .index file, so the data file need not be there.

    - `config`: a bert_config.json (default: the one beside the checkpoint, if any). With
      one, names map exactly as `convert` would map them; without one, or when convert would
      refuse the checkpoint (`Listing.problem` says why), by the name table alone.
    - `vocab`: a vocab.txt (default: the one beside the checkpoint, if any), reported as
      convert would tokenize with it (its default rule).

    Raises InputError when no checkpoint is found or its .index is damaged.
    """
    prefix, config, vocab = _locate(Path(src), config, vocab)
    index = f"{prefix}.index"
    # The native reader reads the .index alone until a value is asked for.
    reader = open_checkpoint(prefix, "native")
    try:
        infos = reader.variables()
    finally:
        reader.close()
    problem = None
    parsed: dict | None = None
    if config is not None:
        try:
            parsed = read_config_file(Path(config))
        except InputError as e:
            problem = str(e)
    family: Family | None = None
    try:
        family = detect(infos, index)
    except InputError as e:
        problem = problem or str(e)
    maps: dict[str, str] = {}
    parts: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    architectures: dict[str, str] = {}
    cfg: dict | None = parsed
    if family is not None and not (config is not None and parsed is None):
        config_name = str(config or prefix.parent / (family.config_file or "config"))
        for part in family.parts:
            default = part == family.parts[0]  # what convert does without --part
            try:
                found, _ = family.read_config(parsed, config_name, infos, part, index)
                p = plan(family.table(infos.keys(), part, found), infos, found,
                         config_name=config_name, checkpoint_name=index,
                         ignore_unknown=True)  # fmt: skip
            except InputError as e:
                problem = problem or (str(e) if default else None)
                continue
            cfg = found if default else cfg
            architectures[part] = p.architecture.name
            for t in p.tensors:
                maps[t.tf] = t.hf
                parts.setdefault(t.tf, []).append(part)
            for name, why in p.skipped.items():
                skipped.setdefault(name, why)
            if p.unknown and default:
                problem = problem or (
                    f"{index}: {len(p.unknown)} unrecognised variable(s), "
                    f"e.g. {p.unknown[0]}; convert needs --ignore-unknown"
                )
    for name in maps:  # converted by one part: not skipped, whatever another part said
        skipped.pop(name, None)
    if not maps and family is not None:
        # No config, or no plan: the default part's name table alone, as far as it goes
        # without sizes (BERT's needs none).
        try:
            table = family.table(infos.keys(), family.parts[0], cfg or {})
        except (KeyError, InputError):
            table = None
        if table is not None:
            for name in infos:
                if hf := table.hf_name(name):
                    maps[name] = hf
                else:
                    skipped[name] = skip_reason(name, infos) or "unrecognised"
    for name in infos:
        if name not in maps and name not in skipped:
            skipped[name] = skip_reason(name, infos) or "unrecognised"
    variables = []
    for name, info in infos.items():
        dtype, size = info.stored
        target, reason = maps.get(name), skipped.get(name)
        training = skip_reason(name, infos) not in (None, *NOT_TRAINING_STATE)
        kind = WEIGHTS if target else OPTIMIZER if training else OTHER
        on = [p for p in parts.get(name, []) if p]
        variables.append(Variable(name, list(info.shape), dtype, size, target, reason, kind, on))
    architecture = next(iter(architectures.values()), None)
    report = None
    if vocab is not None and tokenizer_kind(Path(vocab)) == "sentencepiece":
        pass  # no WordPiece report: the listing names the model
    elif vocab is not None:
        given = cfg.get("vocab_size") if isinstance(cfg, dict) else None
        rows = given if isinstance(given, int) and not isinstance(given, bool) else None
        try:
            report = vocab_report(read_vocab(Path(vocab), rows or sys.maxsize), rows)
        except InputError as e:
            problem = problem or str(e)
    return Listing(
        index, str(config) if config else None, architecture, problem, variables,
        str(vocab) if vocab else None, report, family.name if family else None,
        architectures if family is not None and any(family.parts) else None,
    )  # fmt: skip


def _mb(n: int) -> str:
    """Bytes in decimal units, as file sizes are usually shown."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def format_listing(listing: Listing) -> str:
    """A plain-text table, one variable per line, then totals."""
    rows = [
        (
            v.name,
            "[" + ", ".join(map(str, v.shape)) + "]",
            v.dtype,
            _mb(v.bytes),
            (f"-> {v.maps_to}" + (f" ({', '.join(v.parts)})" if v.parts else ""))
            if v.maps_to
            else f"skipped: {v.skip_reason}",
        )
        for v in listing.variables
    ]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(4)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
        f"{r[3]:>{widths[3]}}  {r[4]}"
        for r in rows
    ]
    t = listing.totals()
    if listing.architectures:
        arch = " for " + ", ".join(f"{c} ({p})" for p, c in listing.architectures.items())
    else:
        arch = f" for {listing.architecture}" if listing.architecture else ""
    lines += [
        "",
        f"{listing.checkpoint}: {t['all']['count']} variables, {_mb(t['all']['bytes'])}",
        f"  weights{arch}: {t[WEIGHTS]['count']} variables, {_mb(t[WEIGHTS]['bytes'])}",
        f"  optimizer state: {t[OPTIMIZER]['count']} variables, {_mb(t[OPTIMIZER]['bytes'])}",
    ]
    if t[OTHER]["count"]:
        lines.append(f"  other skipped: {t[OTHER]['count']} variables, {_mb(t[OTHER]['bytes'])}")
    if listing.family:
        lines.append(f"  family: {listing.family}")
    if listing.config is None and listing.family in ("bert", None):
        lines.append("  (no bert_config.json: names mapped by the name table alone)")
    if listing.problem:
        lines.append(f"  convert would refuse this: {listing.problem}")
    if listing.vocab:
        first, *rest = listing.vocab.lines()
        lines += ["", f"{listing.vocab_path}: {first}", *rest]
    elif listing.vocab_path is None:
        lines += ["", "(no vocab.txt beside the checkpoint)"]
    elif tokenizer_kind(Path(listing.vocab_path)) == "sentencepiece":
        lines += ["", f"{listing.vocab_path}: a SentencePiece model (convert writes spiece.model "
                  "and tokenizer.json from it)"]  # fmt: skip
    return "\n".join(lines)

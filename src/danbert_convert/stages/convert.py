"""The convert stage: a Google-BERT TF1 release folder becomes a transformers model folder.

Plan first (every variable accounted for, every shape checked), then write into a temporary
sibling of OUT that is renamed into place only when everything is written.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm import tqdm

from danbert_convert import __version__
from danbert_convert._fs import (
    StrPath,
    atomic_dir,
    check_not_inside,
    check_writable_target,
    sha256_file,
    write_json,
)
from danbert_convert.defaults import (
    FORMATS,
    HEAD_SETTINGS,
    HIDDEN_ACTS,
    HeadSetting,
    PartName,
    ReaderName,
    WeightFormat,
)
from danbert_convert.errors import InputError, with_article
from danbert_convert.families import family, load_source, locate_files
from danbert_convert.families.table import Plan, TensorPlan, plan
from danbert_convert.output.card import CARD_NAME, carry_users_readme, kept_message, write_card
from danbert_convert.output.manifest import (
    MANIFEST_NAME,
    danbert_files,
    in_folder,
    manifest,
    source_root,
)
from danbert_convert.output.sentencepiece import write_spm_tokenizer
from danbert_convert.output.tokenizer import (
    TokenizerSettings,
    unproducible_warnings,
    vocab_report,
    write_tokenizer,
)
from danbert_convert.output.writer import (
    BIN_NAME,
    WEIGHTS_NAME,
    transform,
    write_bin,
    write_safetensors,
)
from danbert_convert.readers.base import check_finite, open_checkpoint
from danbert_convert.readers.tensorflow import TensorFlowReader
from danbert_convert.source import VOCAB_LEVELS_UP, Source, data_files

log = logging.getLogger(__name__)


@dataclass
class ConvertResult:
    """What `convert` wrote."""

    out: Path
    """The model folder."""
    architecture: str
    """The transformers class written, e.g. "BertForPreTraining"."""
    tensors: int
    """Tensors in the weights file."""
    weight_bytes: int
    """Their size in bytes, as written."""
    skipped: dict[str, str]
    """Checkpoint variables left out, each with its reason (e.g. "Adam optimizer slot")."""
    files: list[str]
    """The files written in `out`, by name."""
    warnings: list[str] = field(default_factory=list)
    """What was also logged as warnings (vocab size, unknown variables, ...)."""

    def to_dict(self) -> dict[str, object]:
        return paths_as_strings(asdict(self))


def paths_as_strings(d: dict[str, object]) -> dict[str, object]:
    """`d` (a dataclass's asdict) made JSON-safe: its Path values as strings."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def _versions(reader: str) -> dict[str, str]:
    """Versions from package metadata: looking them up imports nothing."""
    # Each key with the distributions that provide it: TensorFlow ships under two names.
    names: dict[str, tuple[str, ...]] = {
        n: (n,) for n in ("numpy", "safetensors", "tokenizers", "transformers")
    }
    if reader == TensorFlowReader.__name__:
        names["tensorflow"] = ("tensorflow", "tensorflow-cpu")
    out = {"danbert-convert": __version__}
    for key, dists in names.items():
        for dist in dists:
            try:
                out[key] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def reuse_freed_memory() -> None:
    """Let glibc's malloc hand freed tensor buffers out again instead of unmapping them.

    Buffers above its (moving) mmap threshold are mapped and unmapped one by one, so each of
    BERT-base's ~300 read and transpose buffers faulted in fresh zeroed pages: ~50k page
    faults, 0.2-0.3 s of a 1.4 s conversion. Process-wide, so the CLI calls it, not
    convert(). Costs a few MB of peak RSS. Does nothing where malloc is not glibc's.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest allowed value
    mallopt(m_trim_threshold, 128 << 20)


def convert(
    src: StrPath,
    out: StrPath,
    *,
    checkpoint: StrPath | None = None,
    config: StrPath | None = None,
    vocab: StrPath | None = None,
    format: WeightFormat = "safetensors",
    force: bool = False,
    ignore_unknown: bool = False,
    lowercase: bool | None = None,
    strip_accents: bool | None = None,
    hidden_act: str | None = None,
    reader: ReaderName = "auto",
    heads: HeadSetting = "auto",
    part: PartName | None = None,
    progress: bool | None = None,
    hash_sources: bool = False,
    provenance: dict[str, object] | None = None,
    card: bool = True,
) -> ConvertResult:
    """Convert the release folder `src` (a Google-BERT or ELECTRA TF1 checkpoint) into the
    transformers model folder `out`.

    `out` appears complete or not at all (written beside it, then renamed into place).

    - `checkpoint`: the checkpoint prefix, or its .index file (default: discovered in `src`).
    - `config`, `vocab`: a config and vocab.txt to use instead of `src`'s. For BERT a
      bert_config.json (needed); for ELECTRA (whose releases have none) optional: its
      run_pretraining.py --hparams JSON, a BertConfig JSON or a transformers config.json,
      giving the head count (else ELECTRA's rule, hidden_size // 64) and checked against
      the shapes.
    - `format`: the weights to write: "safetensors", "bin" (a PyTorch pickle) or "both".
    - `force`: replace `out` if it exists and is not empty.
    - `ignore_unknown`: convert even if the checkpoint has variables this tool does not
      know (they are listed in `skipped` and warned about).
    - `lowercase`: the tokenizer's casing (None: inferred from the vocab).
    - `strip_accents`: True strips every accent, False none, as BERT does (None: strip all
      but the accented letters the vocab holds, e.g. keep Danish å).
    - `hidden_act`: the activation written to config.json (None: bert_config.json's).
    - `heads` (defaults.HEAD_SETTINGS): the class written: "auto", the one the checkpoint's
      heads make up; "all", every head of it (a pre-training checkpoint must have MLM and
      next-sentence); "mlm", BertForMaskedLM; "none", BertModel. A head asked for and missing
      is an InputError; weights left out are in `skipped` with the choice as their reason.
      ELECTRA: "auto"/"all" write ElectraForPreTraining (discriminator) or ElectraForMaskedLM
      (generator), "none" ElectraModel.
    - `part`: which network of an ELECTRA checkpoint: "discriminator" (the default) or
      "generator"; None for a BERT.
    - `reader`: "auto" or "native" (the built-in reader), "tensorflow" (needs the tf extra).
    - `progress`: False hides the progress bar; None lets tqdm decide (shown on a terminal).
    - `hash_sources`: record the data shards' SHA-256 in the manifest too (the small source
      files are always hashed; each converted tensor is checked against the index's CRC-32C).
    - `provenance`: where `src` came from (release, url, zip, zip_sha256), recorded as given.
    - `card`: write the model card README.md (licence and credits from the registry entry the
      provenance names); a README.md of the user's already in `out` is carried over
      unchanged instead, card or not.

    Raises InputError (bad source), OutputExistsError (`out` not empty without `force`).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {format!r}")
    if heads not in HEAD_SETTINGS:
        raise ValueError(f"heads must be one of {HEAD_SETTINGS}, not {heads!r}")
    if hidden_act is not None and hidden_act not in HIDDEN_ACTS:
        raise InputError(f"--hidden-act {hidden_act!r}: choose from {', '.join(HIDDEN_ACTS)}")
    out = Path(out)
    check_not_inside(out, [Path(src)])
    check_writable_target(out, force)  # before any heavy reading
    found = locate_files(Path(src), checkpoint=checkpoint, config=config, vocab=vocab)
    ckpt = open_checkpoint(found.checkpoint, reader)
    try:
        variables = ckpt.variables()
        source = load_source(found, part=part, variables=variables)
        check_not_inside(out, source.files())
        fam = family(source.family)
        config_name = str(source.config_path) if source.config_path else (
            f"the sizes read from {source.checkpoint}.index"
        )  # fmt: skip
        warnings: list[str] = []
        if len(source.vocab) < source.config["vocab_size"]:
            warnings.append(
                f"{source.vocab_path} has {len(source.vocab)} tokens for vocab_size "
                f"{source.config['vocab_size']}: the "
                f"{source.config['vocab_size'] - len(source.vocab)} extra rows are kept but no "
                "token maps to them"
            )
        tok = _tokenizer(source, lowercase, strip_accents, warnings)

        reader_name = type(getattr(ckpt, "inner", ckpt)).__name__  # an ObjectGraphReader wraps one
        act = hidden_act or source.config.get("hidden_act", "gelu")
        if act not in HIDDEN_ACTS:
            raise InputError(
                f"{config_name}: hidden_act {act!r} is not supported; "
                f"override with --hidden-act ({', '.join(HIDDEN_ACTS)})"
            )
        if source.config_origin:
            log.info("%s: %s", " ".join(filter(None, (fam.title, source.part))), "; ".join(
                f"{k} {source.config[k]} from {v}" for k, v in source.config_origin.items()
            ))  # fmt: skip
        table = fam.table(variables.keys(), source.part, source.config)
        p = plan(
            table,
            variables,
            source.config,
            config_name=config_name,
            checkpoint_name=f"{source.checkpoint}.index",
            ignore_unknown=ignore_unknown,
            heads=heads,
        )
        if not p.architecture.heads and heads == "auto":
            warnings.append(
                f"{source.checkpoint}: no {table.heads_where}; writing "
                f"{with_article(p.architecture.name)} (the "
                f"{'encoder and pooler' if p.architecture.pooler else 'encoder'} only)"
            )
        for name in p.unknown:
            warnings.append(f"{source.checkpoint}: ignored unrecognised variable {name}")
        if "num_labels" in source.config and "num_labels" not in p.derived_config:
            # transformers makes a label table of that size on load: it sizes nothing here.
            warnings.append(
                f"{source.config_path}: num_labels {source.config['num_labels']!r} left out of "
                + (
                    f"config.json: --heads {heads} writes {p.architecture.name}, without the "
                    "classifier head"
                    if "output_weights" in p.skipped
                    else "config.json: the checkpoint has no classifier head (output_weights)"
                )
            )
        for w in warnings:
            log.warning(w)

        # A folder of ours being replaced may hold the user's own files too (a Hub repository's
        # .git, .gitattributes, notes): they move into the new folder. A folder that is not
        # ours (no manifest) is replaced whole, as --force says.
        ours = danbert_files(out) if force else None
        keep = None if ours is None else (lambda name: name not in ours)
        with atomic_dir(out, force, keep) as tmp:
            outputs = _write_weights(ckpt, p, tmp, format, progress)
            # Every file but the manifest, so that `all` can tell a damaged folder from a good one;
            # hashed as written, never read back.
            outputs["config.json"] = write_json(
                tmp / "config.json",
                fam.hf_config(source.config, p, hidden_act, tok.pad_token_id),
            )
            outputs.update(tok.write(tmp))
            settings = {
                "family": fam.name,
                "part": source.part,
                "config_origin": source.config_origin,
                "hidden_act": act,
                "hidden_act_overridden": hidden_act is not None,
                **tok.settings,
                # True/False: forced all-or-nothing; "vocab": the default rule (WordPiece: all
                # but the vocab's own letters; SentencePiece: ALBERT's, every accent)
                "strip_accents": "vocab" if strip_accents is None else strip_accents,
                "ignore_unknown": ignore_unknown,
                "heads": heads,
            }
            write_json(
                tmp / MANIFEST_NAME,
                manifest(
                    plan=p,
                    source=_source_record(Path(src), out, source, reader_name, hash_sources),
                    outputs=outputs,
                    settings=settings,
                    provenance=provenance,
                    versions=_versions(reader_name),
                ),
            )
            files = sorted([*outputs, MANIFEST_NAME])
            # README.md stays out of the manifest's hashed outputs: it is documentation that
            # users edit, and `all` rewrites it after verify. Hashed, either would make `all`
            # convert again; recording the new hash would change the manifest, whose SHA-256
            # keys the saved verify result (danbert-verify.json).
            if carry_users_readme(out, tmp):
                log.info(kept_message(out / CARD_NAME, card))
                files = sorted([*files, CARD_NAME])
            elif card:
                write_card(tmp, name=Path(os.path.abspath(out)).name)
                files = sorted([*files, CARD_NAME])
    finally:
        ckpt.close()
    return ConvertResult(
        out, p.architecture.name, len(p.tensors), p.weight_bytes, p.skipped, files, warnings
    )


@dataclass
class _Tokenizer:
    """The tokenizer files a conversion writes, and what the manifest says of them."""

    pad_token_id: int
    settings: dict[str, object]
    write: Callable[[Path], dict[str, str]]  # into the folder; {file name: SHA-256}


def _tokenizer(
    source: Source, lowercase: bool | None, strip_accents: bool | None, warnings: list[str]
) -> _Tokenizer:
    """WordPiece from vocab.txt (BERT, ELECTRA) or SentencePiece from a .model (ALBERT)."""
    positions = source.config["max_position_embeddings"]
    if source.tokenizer == "sentencepiece":
        # ALBERT's releases are uncased, accents always stripped (its preprocess_text).
        lower, keep = lowercase is not False, strip_accents is False
        return _Tokenizer(
            source.vocab.index("<pad>") if "<pad>" in source.vocab else 0,
            {"tokenizer": "sentencepiece", "lowercase": lower},
            lambda folder: write_spm_tokenizer(folder, source.vocab_path, lowercase=lower,
                                               keep_accents=keep, model_max_length=positions),
        )  # fmt: skip
    report = vocab_report(source.vocab, source.config["vocab_size"], lowercase, strip_accents)
    warnings += unproducible_warnings(report, source.vocab_path)
    settings = TokenizerSettings(report.rule, positions)
    return _Tokenizer(
        source.vocab.index("[PAD]"),
        {"lowercase": settings.lowercase, "vocab": report.to_json()},
        lambda folder: write_tokenizer(folder, source.vocab_path, source.vocab, settings),
    )


def _source_record(
    src: Path, out: Path, source: Source, reader: str, hash_sources: bool
) -> dict[str, object]:
    """The manifest's record of the source, every path relative to SRC (or a bare name).

    The small files are hashed whole. The data shards (mostly Adam slots never converted)
    get size and mtime: each converted tensor was checked against the CRC-32C that the
    hashed .index holds for it, so the index hash pins every converted byte.
    """
    outside = False

    def name(path: Path) -> str:
        nonlocal outside
        inside = in_folder(path, src)
        if inside is None and (above := _just_above(path, src)):
            return above  # ELECTRA's vocab.txt in the data folder above the checkpoints
        if inside is None:  # an override outside SRC (--checkpoint, --config, --vocab)
            outside = True
            return path.name
        return inside

    files: list[dict[str, object]] = []
    for f in source.small_files():
        files.append({"path": name(f), "bytes": f.stat().st_size, "sha256": sha256_file(f)})
    for f in data_files(source.checkpoint):
        st = f.stat()
        record: dict[str, object] = {
            "path": name(f),
            "bytes": st.st_size,
            "mtime": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(),
        }
        if hash_sources:
            record["sha256"] = sha256_file(f)
        files.append(record)
    paths = {
        "checkpoint": name(source.checkpoint),
        "config": None if source.config_path is None else name(source.config_path),
        "vocab": name(source.vocab_path),
    }
    # Where SRC is seen from OUT, for `verify` without --against: only when every file is in it.
    root = None if outside else source_root(src, out)
    return {"root": root, **paths, "reader": reader, "files": files}


def _just_above(path: Path, src: Path) -> str | None:
    """`path` as "../name" or "../../name" when it lies in one of SRC's two parent folders."""
    try:
        rel = Path(os.path.relpath(path.resolve(), src.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return None
    return rel if re.fullmatch(rf"(\.\./){{1,{VOCAB_LEVELS_UP}}}[^/]+", rel) else None


def _write_weights(
    ckpt, p: Plan, folder: Path, format: str, progress: bool | None
) -> dict[str, str]:
    """Stream the planned tensors into model.safetensors (and the .bin if asked); returns hashes."""
    order = sorted(p.tensors, key=lambda t: t.tf)  # checkpoint order: sequential reads

    def produce(t: TensorPlan) -> np.ndarray:
        value = ckpt.read(t.tf)
        check_finite(value, t.tf, lambda: ckpt.data_file(t.tf))
        return transform(t, value)

    with tqdm(total=len(order), unit="tensor", desc="convert", disable=_disable(progress)) as bar:
        digest = write_safetensors(
            folder / WEIGHTS_NAME,
            order,
            produce,
            metadata={"converted_by": f"danbert-convert {__version__}"},
            on_tensor=lambda t: bar.update(),
        )
    outputs = {WEIGHTS_NAME: digest}
    if format in ("bin", "both"):
        outputs[BIN_NAME] = write_bin(folder / WEIGHTS_NAME, folder / BIN_NAME)
        if format == "bin":
            (folder / WEIGHTS_NAME).unlink()
            del outputs[WEIGHTS_NAME]
    return outputs


def _disable(progress: bool | None) -> bool | None:
    return None if progress is None else not progress


__all__ = ["ConvertResult", "FORMATS", "HIDDEN_ACTS", "MANIFEST_NAME", "convert"]

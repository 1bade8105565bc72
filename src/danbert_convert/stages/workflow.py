"""`danbert all`: fetch, convert and verify in one go, skipping what is already done."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from danbert_convert._fs import StrPath, sha256_file, write_json
from danbert_convert.defaults import DEFAULT_DEST, HeadSetting, PartName, ReaderName
from danbert_convert.errors import DanbertError
from danbert_convert.output.card import update_card
from danbert_convert.output.manifest import MANIFEST_NAME, VERIFY_NAME, source_paths
from danbert_convert.releases.http import DEFAULT_RETRY
from danbert_convert.releases.registry import DEFAULT_MODEL, get_release
from danbert_convert.stages.convert import convert, paths_as_strings
from danbert_convert.stages.fetch import FetchResult, fetch
from danbert_convert.stages.verify import Report, read_manifest, verify

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class StageTime:
    """One stage of `run_all`: how long it took, and whether its earlier result was kept."""

    stage: str
    """"fetch", "convert" or "verify"."""
    seconds: float
    skipped: bool
    """True when the stage found its result present and valid and only checked it."""


@dataclass
class AllResult:
    """What `run_all` made."""

    out: Path
    """The model folder."""
    checkpoint_dir: Path
    """The checkpoint folder fetched (convert's source)."""
    architecture: str
    """The transformers class written, e.g. "BertForPreTraining"."""
    stages: list[StageTime] = field(default_factory=list)
    report: Report | None = None
    """verify's report (the saved one when verify was skipped)."""

    def to_dict(self) -> dict[str, object]:
        """The `all --json` document: `report` as danbert-verify.json saves it."""
        d = paths_as_strings({**asdict(self), "report": None})
        if self.report is not None:
            d["report"] = {**self.report.to_dict(), "manifest_sha256": _manifest_digest(self.out)}
        return d

    def python_lines(self) -> str:
        """The two lines of Python that load the result."""
        p = json.dumps(str(self.out.resolve()), ensure_ascii=False)  # a literal of any path
        return (
            f"tokenizer = AutoTokenizer.from_pretrained({p})\n"
            f"model = AutoModel.from_pretrained({p})"
        )


def default_out(model: str | None, urls: Sequence[str], from_path: StrPath | None) -> Path:
    """`./<release name>` for a registry release, else `./danbert-model`."""
    if model is None and (urls or from_path is not None):
        return Path("danbert-model")
    return Path(model or DEFAULT_MODEL)


def _stage(name: str, result: AllResult, skip: bool, work: Callable[[], T]) -> T:
    """Run one stage, timing it; an error says which stage it came from."""
    log.info("[%s] %s", name, "already done" if skip else "running")
    start = time.perf_counter()
    try:
        value = work()
    except DanbertError as e:
        e.args = (f"{name} stage: {e}",)
        raise
    result.stages.append(StageTime(name, time.perf_counter() - start, skip))
    log.info("[%s] %s in %.1f s", name, "checked" if skip else "done", result.stages[-1].seconds)
    return value


def public_url(url: str) -> str | None:
    """`url` without user, password, query or fragment (they may hold tokens); None if not
    an http(s) URL (a local path)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def provenance(fetched: FetchResult) -> dict[str, object] | None:
    """Where the checkpoint came from, for the manifest: the release name, the URL it was
    downloaded from in this run (None when the zip was already in DEST or given with
    --from), the zip's name and the SHA-256 fetch computed. For an unpacked folder only the
    release name, when one was given (the card credits it); None without one."""
    if fetched.sha256 is None or fetched.zip_path is None:
        if fetched.model is None:
            return None
        return {"release": fetched.model, "url": None, "zip": None, "zip_sha256": None}
    return {
        "release": fetched.model,
        "url": public_url(fetched.source) if fetched.downloaded else None,
        "zip": fetched.zip_path.name,
        "zip_sha256": fetched.sha256,
    }


def _release_strip_accents(model: str | None) -> bool | None:
    """The accent handling the release's own tokenizer had, when the registry records it."""
    return None if model is None else get_release(model).strip_accents


def _conversion_current(
    out: Path,
    checkpoint_dir: Path,
    hidden_act: str | None,
    heads: str = "auto",
    release: str | None = None,
    part: str | None = None,
) -> bool:
    """OUT holds a complete conversion of this checkpoint folder with the asked settings (and,
    when a release is named, recorded as that release's: the card credits it)."""
    try:
        m = read_manifest(out)
    except DanbertError:
        return False
    if not m or not _same_source(m, out, checkpoint_dir):
        return False
    settings = m.get("settings", {})
    if hidden_act and settings.get("hidden_act") != hidden_act:
        return False
    if hidden_act is None and settings.get("hidden_act_overridden"):
        return False  # no override asked: bert_config.json's activation, not an earlier one
    if release is not None and (m.get("provenance") or {}).get("release") != release:
        return False
    # Manifests from before --heads were all written as auto does.
    if settings.get("heads", "auto") != heads:
        return False
    hint = None if release is None else get_release(release).strip_accents
    if settings.get("strip_accents", "vocab") != ("vocab" if hint is None else hint):
        return False  # the release's own accent handling, not what an earlier run did
    # Manifests from before --part are BERT conversions, which have no parts.
    if part is not None and settings.get("part", "") != part:
        return False
    outputs = m.get("outputs", {})
    # Re-hashed, not just listed: any truncated, edited or missing output means converting again.
    return bool(outputs) and all(
        (out / name).is_file() and sha256_file(out / name) == digest
        for name, digest in outputs.items()
    )


def _same_source(m: dict[str, Any], out: Path, checkpoint_dir: Path) -> bool:
    """The manifest records a conversion of `checkpoint_dir`'s files.

    Schema 2 holds no absolute path: the small files' recorded SHA-256 (the .index among
    them, which pins every converted byte of the data shards by CRC-32C) must match the
    files now in `checkpoint_dir`, and the data shards' sizes theirs.
    """
    if m.get("schema_version", 1) == 1:
        paths = source_paths(m, out)
        return paths is not None and paths["config"].parent == checkpoint_dir.resolve()
    files = m.get("source", {}).get("files", [])
    if not any(str(f["path"]).endswith(".index") and "sha256" in f for f in files):
        return False
    for f in files:
        path = checkpoint_dir / f["path"]
        if not path.is_file():
            return False
        if "sha256" in f:
            if sha256_file(path) != f["sha256"]:
                return False
        elif path.stat().st_size != f.get("bytes"):
            return False
    return True


def _manifest_digest(out: Path) -> str:
    return sha256_file(out / MANIFEST_NAME)


def _verified(out: Path) -> Report | None:
    """The saved passing report for the conversion now in OUT, if there is one."""
    path = out / VERIFY_NAME
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict):
        return None
    if not (saved.get("ok") and saved.get("manifest_sha256") == _manifest_digest(out)):
        return None
    try:
        report = Report.from_dict(saved)
    except (KeyError, TypeError, AttributeError):  # edited: verify again
        return None
    report.model = out  # saved as the folder's bare name: the folder is published
    return report


def run_all(
    model: str | None = None,
    *,
    dest: StrPath = DEFAULT_DEST,
    out: StrPath | None = None,
    urls: Sequence[str] = (),
    sha256: str | None = None,
    from_path: StrPath | None = None,
    retries: int = DEFAULT_RETRY.retries,
    timeout: float | tuple[float, float] = DEFAULT_RETRY.timeout,
    force: bool = False,
    reader: ReaderName = "auto",
    hidden_act: str | None = None,
    heads: HeadSetting = "auto",
    part: PartName | None = None,
    expect: str | None = None,
    progress: bool | None = None,
    card: bool = True,
) -> AllResult:
    """fetch -> convert -> verify; a stage whose result is present and valid is not redone.

    - `model`, `urls`, `sha256`, `from_path`, `retries`, `timeout`: as for `fetch`.
    - `dest`: the working folder for the zip and the unpacked release.
    - `out`: the model folder (default: ./MODEL, or ./danbert-model with `urls`/`from_path`).
    - `force`: redo every stage (download, unpack, convert over `out`, verify).
    - `reader`, `hidden_act`, `heads`, `part`: as for `convert` (`reader` for verify's parity
      too); a conversion in `out` made with other `heads`, `part` or `hidden_act` is redone.
    - `expect`: as for `verify`.
    - `progress`: as for `fetch`, `convert` and `verify`.
    - `card`: OUT/README.md is the model card, with verify's result once it passed (also when
      that result is the saved one); a README.md of the user's is kept as it is.

    Raises the first stage's error, its message prefixed with the stage ("convert stage: ...");
    VerifyError when a check fails. A conversion of the same checkpoint with the same
    settings, and a passing verification of it (danbert-verify.json), are kept.
    """
    if isinstance(urls, str):
        urls = (urls,)
    out = Path(out) if out is not None else default_out(model, urls, from_path)
    result = AllResult(out, Path(dest), "")
    fetched = _stage(
        "fetch",
        result,
        False,
        lambda: fetch(model, Path(dest), urls=urls, sha256=sha256, from_path=from_path,
                      force=force, progress=progress, retries=retries, timeout=timeout),
    )  # fmt: skip
    result.stages[-1].skipped = not (fetched.downloaded or fetched.unpacked)
    result.checkpoint_dir = fetched.checkpoint_dir

    current = not force and _conversion_current(
        out, fetched.checkpoint_dir, hidden_act, heads, fetched.model, part
    )
    if current:
        _stage("convert", result, True, lambda: None)
    else:
        # An earlier conversion is ours to replace; any other non-empty folder needs --force.
        replace = force or (out / MANIFEST_NAME).is_file()
        _stage(
            "convert",
            result,
            False,
            lambda: convert(fetched.checkpoint_dir, out, force=replace, reader=reader,
                            hidden_act=hidden_act, heads=heads, part=part, progress=progress,
                            strip_accents=_release_strip_accents(fetched.model),
                            provenance=provenance(fetched), card=card),
        )  # fmt: skip
    manifest = read_manifest(out) or {}
    result.architecture = str(manifest.get("architecture", ""))

    saved = None if (force or not current) else _verified(out)
    if saved is not None and expect is None:
        _stage("verify", result, True, lambda: None)
        result.report = saved
        if card:  # unchanged, unless it went missing or an earlier run had --no-card
            update_card(out, saved, announce=current)
        return result

    def run_verify() -> Report:
        report = verify(out, against=fetched.checkpoint_dir, reader=reader, expect=expect,
                        progress=progress)  # fmt: skip
        # The folder is published as it is: its own name, not where it lives on this machine.
        data = {**report.to_dict(), "model": out.name, "manifest_sha256": _manifest_digest(out)}
        write_json(out / VERIFY_NAME, data)
        result.report = report
        if not report.ok:
            log.info("%s", report.table())
            if card:  # an earlier pass it may show is no longer true of this folder
                update_card(out, None, announce=False)
        report.raise_if_failed()
        return report

    log.info("%s", _stage("verify", result, False, run_verify).table())
    if card:
        # A user's README.md was announced already when convert carried it over.
        update_card(out, result.report, announce=current)
    return result

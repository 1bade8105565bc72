"""Fetch a release: look it up in the registry, download its zip (releases/http.py) or take a
local one, check it, then unpack it (releases/archive.py).

"Zip" here stands for any release archive: a zip, or a tar (.tar.gz, .tgz, .tar) such as
ALBERT's. Its first bytes, not its name, say which it is; a name that says otherwise is
logged as a warning and the archive is unpacked as what it is.

A zip whose SHA-256 checks out is `NAME.zip`, and its digest is recorded beside it in
`NAME.zip.sha256` (sha256sum format). One fetch at a time works on a NAME.zip: the others
wait on `NAME.zip.lock`, then check and reuse what it left.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

from filelock import FileLock, Timeout

from danbert_convert._fs import StrPath, sha256_file
from danbert_convert.errors import DownloadError, InputError
from danbert_convert.releases.archive import (
    MAX_RATIO,
    MAX_TOTAL,
    ArchiveCorruptError,
    archive_format,
    locate,
    unpack,
)
from danbert_convert.releases.http import (
    CHUNK,
    DEFAULT_RETRY,
    MAX_RECORD,
    DownloadResult,
    ProgressHook,
    download,
    forget,
    sidecar,
)
from danbert_convert.releases.registry import DEFAULT_MODEL, Release, get_release

log = logging.getLogger("danbert_convert")

LOCK_POLL = 0.1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class FetchResult:
    """What `fetch` got, and from where."""

    model: str | None
    """The registry release, or None for `urls`/`from_path` alone."""
    source: str
    """The URL the zip came from, or the local path given with `from_path`."""
    zip_path: Path | None
    """The verified zip (None for an unpacked folder given with `from_path`)."""
    sha256: str | None
    """The zip's SHA-256 (None for an unpacked folder)."""
    size: int
    """The zip's size in bytes (0 for an unpacked folder)."""
    downloaded: bool
    """False when an existing verified zip (or a local source) was used."""
    checkpoint_dir: Path
    """What `convert` takes."""
    unpacked: bool
    """True when the zip was unpacked in this call (False: already unpacked, or not asked)."""
    resumed_from: int = 0
    """Bytes of an interrupted download that were kept and resumed from."""
    received: int = 0
    """Bytes that came over the network."""
    tried: list[tuple[str, str]] = field(default_factory=list)
    """(url, what went wrong) for every source that failed before one worked."""
    vocab: Path | None = None
    """vocab.txt beside the checkpoint folder, else the nearest above it in the release."""
    spm_model: Path | None = None
    """Without a vocab.txt: the release's SentencePiece model found the same way (ALBERT's
    30k-clean.model), else None."""

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        for k in ("zip_path", "checkpoint_dir", "vocab", "spm_model"):
            d[k] = None if d[k] is None else str(d[k])
        d["tried"] = [{"url": u, "error": e} for u, e in self.tried]
        return d


def check_sha256(value: str) -> str:
    """A normalised hex digest; InputError otherwise."""
    v = value.strip().lower()
    if not _HEX64.match(v):
        raise InputError(f"--sha256 {value!r} is not a SHA-256 hex digest (64 hex digits)")
    return v


_ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")


def filename_from_url(url: str) -> str:
    """An archive's file name from the URL's last path segment (query strings such as ?dl=1
    dropped); `.zip` is added unless it ends in .zip, .tar.gz, .tgz or .tar."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "download"
    return name if name.lower().endswith(_ARCHIVE_SUFFIXES) else name + ".zip"


def _warn_if_misnamed(path: Path) -> None:
    """Say when an archive's name and its first bytes disagree (unpack goes by the bytes)."""
    kind = archive_format(path)
    low = path.name.lower()
    named = "zip" if low.endswith(".zip") else "tar" if low.endswith(_ARCHIVE_SUFFIXES) else None
    if named is not None and named != kind:
        log.warning(f"{path}: named like a {named}, but its bytes are a {kind}; unpacking it so")


def _copy_packaged(resource: str, path: Path, sha256: str | None) -> DownloadResult:
    """Copy a release zip shipped inside this package to `path`, via `path.part`, checking its
    SHA-256 as a download's is checked."""
    src = resources.files("danbert_convert").joinpath(resource)
    part = path.with_name(path.name + ".part")
    h = hashlib.sha256()
    try:
        fin = src.open("rb")
    except OSError:
        raise DownloadError(
            f"{resource} is missing from the installed danbert-convert; reinstall it"
        ) from None
    with fin, open(part, "wb") as fout:
        while chunk := fin.read(CHUNK):
            h.update(chunk)
            fout.write(chunk)
    digest, size = h.hexdigest(), part.stat().st_size
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise DownloadError(
            f"could not copy {path.name}: {src} -> SHA-256 mismatch: expected {sha256}, got "
            f"{digest}; the installed danbert-convert is damaged: reinstall it"
        )
    forget(path)
    os.replace(part, path)
    sidecar(part, ".json").unlink(missing_ok=True)  # an older download's record
    log.info(f"{path.name}: copied from the package's own data (no download)")
    return DownloadResult(str(src), path, digest, size, 0, 0, [])


def _record_digest(zip_path: Path, digest: str) -> None:
    """Write NAME.zip.sha256 in sha256sum format, so `sha256sum -c` can check it too."""
    tmp = sidecar(zip_path, ".sha256.tmp")
    tmp.write_text(f"{digest}  {zip_path.name}\n")
    os.replace(tmp, sidecar(zip_path, ".sha256"))


def _read_record(path: Path) -> str | None:
    """A small text file we wrote beside the zip; None if missing, unreadable, too big or not
    UTF-8 (a damaged record is no record)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_RECORD + 1)
        return data.decode("utf-8") if len(data) <= MAX_RECORD else None
    except (OSError, ValueError):
        return None


def _recorded_digest(zip_path: Path) -> str | None:
    text = _read_record(sidecar(zip_path, ".sha256"))
    if text is None:
        return None
    digest = text.split(maxsplit=1)[0].lower() if text.strip() else ""
    return digest if _HEX64.match(digest) else None


def _distrust(zip_path: Path, digest: str, reason: str) -> None:
    """Mark NAME.zip as failed to unpack (NAME.zip.untrusted: its digest and why); it is no
    longer a verified download, so its recorded digest goes."""
    reason = reason.removeprefix(f"{zip_path}: ")
    tmp = sidecar(zip_path, ".untrusted.tmp")
    tmp.write_text(f"{digest}  {reason}\n", encoding="utf-8")
    os.replace(tmp, sidecar(zip_path, ".untrusted"))
    sidecar(zip_path, ".sha256").unlink(missing_ok=True)


def _verify_existing(zip_path: Path, expected: str | None) -> str:
    """Hash an existing zip and compare with the expected or recorded digest; refuse one that
    failed to unpack before."""
    digest = sha256_file(zip_path)
    marker = sidecar(zip_path, ".untrusted")
    text = _read_record(marker)
    if text is None and os.path.lexists(marker):
        raise DownloadError(
            f"{zip_path} did not unpack in an earlier run ({marker.name} is unreadable); it is "
            "not trusted: use --force to download it again"
        )
    if text is not None:
        bad_digest, _, reason = (text.strip().splitlines() or [""])[0].partition("  ")
        if bad_digest == digest:
            raise DownloadError(
                f"{zip_path} did not unpack in an earlier run ({reason}); it is not trusted: "
                "use --force to download it again"
            )
        marker.unlink(missing_ok=True)  # the zip was replaced since
    want = expected or _recorded_digest(zip_path)
    if want is not None and digest != want:
        raise DownloadError(
            f"{zip_path} exists but its SHA-256 is {digest}, expected {want}; "
            "delete it (or use --force) to download again"
        )
    return digest


def _make_dirs(folder: Path) -> list[Path]:
    """mkdir -p; return the folders it created, outermost first.

    Anything already at `folder`, a symlink that leads nowhere included, is left for the
    caller's checks to judge.
    """
    missing = [p for p in (folder, *folder.parents) if not os.path.lexists(p)]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


@contextlib.contextmanager
def _new_dirs(folder: Path) -> Iterator[list[Path]]:
    """Create `folder` if needed; if the body fails, remove the folders this created, if empty."""
    created = _make_dirs(folder)
    try:
        yield created
    except BaseException:
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _holder(pid_path: Path, wait: float = 1.0) -> str:
    """The pid the lock holder wrote (it writes it just after taking the lock)."""
    deadline = time.monotonic() + wait
    while True:
        with contextlib.suppress(OSError):
            text = pid_path.read_text().strip()
            if text.isdigit():
                return text
        if time.monotonic() > deadline:
            return "unknown"
        time.sleep(0.05)


@contextlib.contextmanager
def _locked(zip_path: Path, created: list[Path]) -> Iterator[bool]:
    """Hold NAME.zip.lock, waiting for another fetch that holds it; yield whether that fetch
    left a new NAME.zip while we waited.

    `filelock` locks with flock (LockFileEx on Windows), which the system drops if the holder
    dies. The lock file stays, as filelock intends (waiters share its inode), except in a
    folder this fetch made and leaves empty on failure; the holder's pid is in
    NAME.zip.lock.pid while it holds the lock.
    """
    folder = zip_path.parent
    lock_path, pid_path = sidecar(zip_path, ".lock"), sidecar(zip_path, ".lock.pid")
    before = _identity(zip_path)
    lock = FileLock(str(lock_path))
    waited = False
    for _ in range(10):
        try:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                if not waited:
                    log.warning(
                        f"another fetch is downloading {zip_path.name} into {folder} "
                        f"(pid {_holder(pid_path)}); waiting for it"
                    )
                waited = True
                lock.acquire(timeout=-1, poll_interval=LOCK_POLL)
        except FileNotFoundError:
            if os.path.lexists(folder):  # a symlink to nowhere: making folders cannot help
                raise
            # The fetch we waited for failed and removed the folder it had made.
            created += _make_dirs(folder)
            continue
        if lock_path.exists():
            break
        # We locked the lock file of a fetch that removed it with its folder as we took it.
        lock.release()
        created += _make_dirs(folder)
    else:
        raise DownloadError(f"{lock_path}: could not take the lock; is {folder} being deleted?")
    try:
        pid_path.write_text(f"{os.getpid()}\n")
        yield waited and _identity(zip_path) not in (None, before)
    except BaseException:
        # Removed while we hold the lock, so that the folder we made can go too.
        with contextlib.suppress(OSError):
            if folder in created and set(folder.iterdir()) <= {lock_path, pid_path}:
                lock_path.unlink()
        raise
    finally:
        pid_path.unlink(missing_ok=True)
        lock.release()


def fetch(
    model: str | None = None,
    dest: StrPath = Path("."),
    *,
    urls: Sequence[str] = (),
    sha256: str | None = None,
    from_path: StrPath | None = None,
    force: bool = False,
    do_unpack: bool = True,
    progress: bool | None = None,
    on_progress: ProgressHook | None = None,
    retries: int = DEFAULT_RETRY.retries,
    backoff: float = DEFAULT_RETRY.backoff,
    max_backoff: float = DEFAULT_RETRY.max_backoff,
    timeout: float | tuple[float, float] = DEFAULT_RETRY.timeout,
    max_total: int = MAX_TOTAL,
    max_ratio: float = MAX_RATIO,
) -> FetchResult:
    """Get a release into `dest`, verified and unpacked; the result says where its checkpoint
    folder is. An existing verified zip is not downloaded again.

    - `model`: a registry release name (`RELEASES`; default: the Danish v2 release, unless
      `urls` or `from_path` is given). The bundled sample is copied from package data.
    - `dest`: the folder for the zip and the unpacked release.
    - `urls`: download from these, tried in order, instead of the registry's sources.
    - `sha256`: the zip's expected SHA-256 (default: the registry's, where known).
    - `from_path`: a local zip or tar(.gz) (checked, unpacked into `dest`) or unpacked
      folder (used where it is) instead of downloading; excludes `urls`.
    - `force`: download and unpack again even if present (an untrusted zip included).
    - `do_unpack`: False only downloads and verifies the zip.
    - `progress`: False hides the progress bars; None lets tqdm decide (shown on a terminal).
    - `on_progress`: called after every chunk with (bytes on disk, total or None).
    - `retries`: retries per source after failures that made no progress.
    - `backoff`, `max_backoff`: seconds before the first retry, doubling up to this cap.
    - `timeout`: seconds to wait for data, or (connect, read); connecting waits at most 10 s.
    - `max_total`, `max_ratio`: refuse a download or unpacked size over `max_total` bytes, or
      a compression ratio over `max_ratio` (zip bombs).

    Raises DownloadError when every source fails or the zip is not what was expected,
    InputError for an unknown release or a missing `from_path`, ValueError for `urls` with
    `from_path`. A KeyboardInterrupt keeps the partial download, for the next call to resume.
    """
    if isinstance(urls, str):  # one URL, not its characters
        urls = (urls,)
    if urls and from_path is not None:
        raise ValueError("urls and from_path exclude each other: download, or use a local copy")
    retry = replace(
        DEFAULT_RETRY,
        retries=retries,
        backoff=backoff,
        max_backoff=max_backoff,
        timeout=_timeouts(timeout),
    )
    dest = Path(dest)
    expected = check_sha256(sha256) if sha256 else None
    release: Release | None = None
    # --url and --from stand for themselves; the registry only speaks when a model is named.
    if model is not None or (not urls and from_path is None):
        release = get_release(model or DEFAULT_MODEL)
        if release.broken:
            log.warning(f"{release.name}: {release.notes}")
        expected = expected or release.sha256

    if from_path is not None:
        return _fetch_local(
            Path(from_path), dest, release, expected, force, progress, max_total, max_ratio
        )

    sources = list(urls) if urls or release is None else list(release.urls)
    packaged = release.package_data if release is not None and not urls else None
    name = release.filename if release is not None else filename_from_url(sources[0])
    zip_path = dest / name
    result = FetchResult(
        model=release.name if release else None,
        source=str(zip_path),
        zip_path=zip_path,
        sha256=None,
        size=0,
        downloaded=False,
        checkpoint_dir=dest,
        unpacked=False,
    )
    with _new_dirs(dest) as created, _locked(zip_path, created) as fresh:
        if force and fresh and not sidecar(zip_path, ".untrusted").exists():
            log.info(f"{zip_path} was just downloaded by the fetch we waited for; using it")
            force = False
        if zip_path.is_file() and not force:
            log.info(f"{zip_path} already downloaded; checking it")
            result.sha256 = _verify_existing(zip_path, expected)
            result.size = zip_path.stat().st_size
        elif packaged is not None:
            d = _copy_packaged(packaged, zip_path, expected)
            result.source, result.sha256, result.size = d.url, d.sha256, d.size
            result.downloaded = True
        else:
            d = download(
                sources,
                zip_path,
                sha256=expected,
                progress=progress,
                on_progress=on_progress,
                retry=retry,
                max_size=max_total,
            )
            result.source, result.sha256, result.size = d.url, d.sha256, d.size
            result.downloaded, result.resumed_from = True, d.resumed_from
            result.received, result.tried = d.received, d.tried
        _record_digest(zip_path, result.sha256)
        log.info(f"sha256 {result.sha256}  {zip_path}")
        if do_unpack:
            try:
                _warn_if_misnamed(zip_path)
                u = unpack(
                    zip_path,
                    dest,
                    force=force,
                    progress=progress,
                    max_total=max_total,
                    max_ratio=max_ratio,
                    subfolder=release.subfolder if release is not None else None,
                )
            except ArchiveCorruptError as e:
                _distrust(zip_path, result.sha256, str(e))
                raise DownloadError(
                    f"{e}; {zip_path.name} will not be trusted again: "
                    "use --force to download it again"
                ) from None
            result.checkpoint_dir, result.unpacked = u.checkpoint_dir, u.unpacked
            result.vocab, result.spm_model = u.vocab, u.spm_model
    return result


def _timeouts(timeout: float | tuple[float, float]) -> tuple[float, float]:
    """(connect, read) seconds: a single number is the read timeout, as the CLI's --timeout."""
    if isinstance(timeout, tuple):
        return timeout
    return (min(DEFAULT_RETRY.timeout[0], timeout), timeout)


def _fetch_local(
    src: Path,
    dest: Path,
    release: Release | None,
    expected: str | None,
    force: bool,
    progress: bool | None,
    max_total: int,
    max_ratio: float,
) -> FetchResult:
    """`--from`: an unpacked folder is used where it is; a zip is checked and unpacked."""
    name = release.name if release else None
    subfolder = release.subfolder if release is not None else None
    if src.is_dir():
        u = locate(src, subfolder)
        return FetchResult(
            name,
            str(src),
            None,
            None,
            0,
            False,
            u.checkpoint_dir,
            False,
            vocab=u.vocab,
            spm_model=u.spm_model,
        )
    if not src.is_file():
        raise InputError(f"{src}: no such file or folder")
    digest = sha256_file(src)
    if expected is not None and digest != expected:
        raise DownloadError(f"{src}: SHA-256 mismatch: expected {expected}, got {digest}")
    log.info(f"sha256 {digest}  {src}")
    _warn_if_misnamed(src)
    with _new_dirs(dest):
        u = unpack(
            src,
            dest,
            force=force,
            progress=progress,
            max_total=max_total,
            max_ratio=max_ratio,
            subfolder=subfolder,
        )
    return FetchResult(
        name,
        str(src),
        src,
        digest,
        src.stat().st_size,
        False,
        u.checkpoint_dir,
        u.unpacked,
        vocab=u.vocab,
        spm_model=u.spm_model,
    )

"""Download a release zip over a hostile network, then unpack it.

Bytes stream into `NAME.zip.part`, hashed as they arrive; a later run resumes the `.part` with
an HTTP Range request. Only a complete file whose SHA-256 checks out is renamed to `NAME.zip`,
and its digest is recorded beside it in `NAME.zip.sha256` (sha256sum format).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from tqdm import tqdm

from danbert_convert import __version__
from danbert_convert._fs import hash_file_into, sha256_file
from danbert_convert.errors import DownloadError, InputError
from danbert_convert.models import DEFAULT_MODEL, Release, get_release
from danbert_convert.unpack import MAX_RATIO, MAX_TOTAL, locate_checkpoint_dir, unpack

log = logging.getLogger("danbert_convert")

TIMEOUT = (10.0, 60.0)
"""Seconds to connect, and to wait for the next bytes of the body."""
RETRIES = 5
"""Retries per source after a failure that made no progress; progress resets the count."""
BACKOFF = 1.0
MAX_BACKOFF = 30.0
CHUNK = 1 << 20

ProgressHook = Callable[[int, "int | None"], None]
"""Called after every chunk with (bytes on disk, total or None)."""

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")


@dataclass
class DownloadResult:
    url: str
    path: Path
    sha256: str
    size: int
    resumed_from: int
    """Bytes that were already on disk in the `.part` when this download started."""
    received: int
    """Bytes that came over the network."""
    tried: list[tuple[str, str]]
    """(url, what went wrong) for every source that failed before `url` worked."""


@dataclass
class FetchResult:
    model: str | None
    source: str
    """The URL the zip came from, or the local path given with `from_path`."""
    zip_path: Path | None
    sha256: str | None
    size: int
    downloaded: bool
    """False when an existing verified zip (or a local source) was used."""
    checkpoint_dir: Path
    """What `danbert convert` takes."""
    unpacked: bool
    resumed_from: int = 0
    received: int = 0
    tried: list[tuple[str, str]] = field(default_factory=list)
    """(url, what went wrong) for every source that failed before one worked."""

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        for k in ("zip_path", "checkpoint_dir"):
            d[k] = None if d[k] is None else str(d[k])
        d["tried"] = [{"url": u, "error": e} for u, e in self.tried]
        return d


class _SourceFailed(Exception):
    """This source cannot give us the file; try the next one."""


class _Retry(Exception):
    """A transient failure: wait, then ask the same source again."""


class _Restart(Exception):
    """The `.part` was discarded; ask again at once from byte 0."""


def check_sha256(value: str) -> str:
    """A normalised hex digest; InputError otherwise."""
    v = value.strip().lower()
    if not _HEX64.match(v):
        raise InputError(f"--sha256 {value!r} is not a SHA-256 hex digest (64 hex digits)")
    return v


def filename_from_url(url: str) -> str:
    """A zip file name from the URL's last path segment (query strings such as ?dl=1 dropped)."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "download"
    return name if name.lower().endswith(".zip") else name + ".zip"


class _Hasher:
    """SHA-256 on a second thread, so that hashing overlaps receiving and writing.

    Hashing in line made downloads ~40% slower than curl; hashlib releases the GIL on large
    updates, and the bounded queue caps what is held in memory.
    """

    def __init__(self, h: hashlib._Hash | None = None) -> None:
        self._h = h or hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._h.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return self._h.hexdigest()


class _Part:
    """The `.part` file: bytes on disk, and a running SHA-256 over exactly those bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        start = hashlib.sha256()
        if path.is_file() and path.stat().st_size > 0:
            with open(path, "rb") as f:
                head = f.read(4)
            if head in _ZIP_MAGIC:
                # Hashed from disk once; from here on the hash follows the appended bytes.
                start = hash_file_into(start, path)
                self.offset = path.stat().st_size
                log.info(f"resuming {path.name} at {self.offset} bytes")
            else:
                log.warning(f"{path}: not the start of a zip; starting over")
                path.unlink()
        self.hasher = _Hasher(start)
        self.resumed_from = self.offset
        self.received = 0

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)
        self.hasher.close()
        self.hasher = _Hasher()
        self.offset = self.resumed_from = 0

    def append(self, f: IO[bytes], chunk: bytes) -> None:
        f.write(chunk)
        self.hasher.update(chunk)
        self.offset += len(chunk)
        self.received += len(chunk)


def _describe(e: Exception) -> str:
    """A short reason for a network error (requests' own embed whole connection-pool reprs)."""
    text = str(e)
    if isinstance(e, requests.ConnectTimeout):
        return "connect timed out"
    if isinstance(e, (requests.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        return "read timed out"
    if "Read timed out" in text:
        return "read timed out"
    if isinstance(e, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        return "connection dropped mid-transfer"
    for pattern, short in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host not found"),
        ("Temporary failure in name resolution", "host not found"),
        ("RemoteDisconnected", "connection closed without a response"),
        ("Connection reset", "connection reset"),
    ):
        if pattern in text:
            return short
    return f"connection failed ({type(e).__name__})"


def _status_text(resp: requests.Response) -> str:
    return f"HTTP {resp.status_code} {resp.reason or ''}".strip()


def _expected_total(resp: requests.Response, part: _Part) -> int | None:
    """Check the status against the `.part` and return the full file size, if the server said.

    A 200 to a Range request restarts the `.part` and keeps the body; 206 must start where
    the `.part` ends; 416 means the `.part` is complete, or is discarded.
    """
    status = resp.status_code
    length = resp.headers.get("Content-Length")
    if status == 200:
        if part.offset:
            log.info(f"{resp.url}: server ignored the Range request; starting over")
            part.reset()
        return int(length) if length and length.isdigit() else None
    if status == 206:
        content_range = resp.headers.get("Content-Range")
        m = _CONTENT_RANGE.match(content_range or "")
        if not m:
            raise _SourceFailed(
                "206 without a Content-Range"
                if content_range is None
                else f"206 with a bad Content-Range {content_range!r}"
            )
        start, end = int(m[1]), int(m[2])
        if start != part.offset:
            log.warning(f"{resp.url}: asked for bytes {part.offset}-, got {start}-; starting over")
            part.reset()
            raise _Restart
        if length is not None and int(length) != end - start + 1:
            raise _SourceFailed(f"206 with Content-Length {length} for range {start}-{end}")
        return int(m[3]) if m[3] != "*" else None
    if status == 416:
        m = _UNSATISFIED_RANGE.match(resp.headers.get("Content-Range", ""))
        if m and int(m[1]) == part.offset:
            return part.offset
        log.warning(f"{resp.url}: the .part does not fit the file on the server; starting over")
        part.reset()
        raise _Restart
    if status in (404, 410):
        raise _SourceFailed(_status_text(resp))
    if status == 429 or status >= 500:
        raise _Retry(_status_text(resp))
    raise _SourceFailed(_status_text(resp))


def _check_is_zip(resp: requests.Response, first: bytes, at_start: bool) -> None:
    """Refuse an HTML page (Dropbox's answer for dead or throttled links) or any non-zip."""
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype == "text/html" or (at_start and first.lstrip()[:1] == b"<"):
        raise _SourceFailed(
            f"an HTML page ({ctype or 'no Content-Type'}), not a zip: "
            "the link is dead or rate-limited"
        )
    if at_start and first[:4] not in _ZIP_MAGIC:
        raise _SourceFailed(f"not a zip ({ctype or 'no Content-Type'}, starts with {first[:8]!r})")


def _read(read: Callable[[int], bytes]) -> bytes:
    """The next chunk of the body; b"" at its end; _Retry for a network failure."""
    try:
        return read(CHUNK)
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as e:
        raise _Retry(_describe(e)) from e


def _transfer(
    session: requests.Session,
    url: str,
    part: _Part,
    timeout: tuple[float, float],
    bar: tqdm,
    on_progress: ProgressHook | None,
) -> None:
    """One request: append what the server sends to the `.part`, or raise why not."""
    headers = {"Accept-Encoding": "identity"}
    if part.offset:
        headers["Range"] = f"bytes={part.offset}-"
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as e:
        raise _Retry(_describe(e)) from e
    except requests.RequestException as e:
        raise _SourceFailed(f"bad request: {e}") from e
    with resp:
        total = _expected_total(resp, part)
        if resp.status_code == 416:
            return
        bar.reset(total)
        bar.update(part.offset)
        # read1 returns what has arrived: a dropped connection loses no received bytes, and
        # the bar moves smoothly. urllib3 1.x lacks it; read() waits for a full chunk.
        read = getattr(resp.raw, "read1", None) or resp.raw.read
        chunk = _read(read)
        _check_is_zip(resp, chunk, at_start=part.offset == 0)
        try:
            with open(part.path, "ab") as f:
                while chunk:
                    part.append(f, chunk)
                    bar.update(len(chunk))
                    if on_progress is not None:
                        on_progress(part.offset, total)
                    chunk = _read(read)
        except OSError as e:
            raise DownloadError(f"{part.path}: cannot write: {e.strerror or e}") from e
    if total is not None and part.offset != total:
        raise _Retry(f"connection closed at byte {part.offset} of {total}")


def _from_source(
    session: requests.Session,
    url: str,
    part: _Part,
    *,
    retries: int,
    backoff: float,
    max_backoff: float,
    timeout: tuple[float, float],
    bar: tqdm,
    on_progress: ProgressHook | None,
) -> None:
    """Get the whole file from one URL, retrying transient failures with bounded back-off."""
    failures = 0
    while True:
        before = part.offset
        try:
            _transfer(session, url, part, timeout, bar, on_progress)
            return
        except _Restart:
            continue
        except _Retry as e:
            # A dropped connection that delivered bytes is progress, not a strike.
            failures = 1 if part.offset > before else failures + 1
            if failures > retries:
                raise _SourceFailed(f"{e} (gave up after {retries} retries)") from None
            delay = min(max_backoff, backoff * 2 ** (failures - 1))
            log.warning(f"{url}: {e}; retry {failures}/{retries} in {delay:.1f} s")
            time.sleep(delay)


def download(
    urls: Sequence[str],
    path: Path,
    *,
    sha256: str | None = None,
    progress: bool | None = None,
    on_progress: ProgressHook | None = None,
    retries: int = RETRIES,
    backoff: float = BACKOFF,
    max_backoff: float = MAX_BACKOFF,
    timeout: tuple[float, float] = TIMEOUT,
    session: requests.Session | None = None,
) -> DownloadResult:
    """Download the first of `urls` that works to `path`, via `path.part`, and verify it.

    Raises DownloadError naming every URL tried and what it answered. A KeyboardInterrupt
    leaves the `.part` for the next call to resume.
    """
    if not urls:
        raise InputError("no URL to download from")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = _Part(path.with_name(path.name + ".part"))
    own_session = session is None
    session = session or _new_session()
    tried: list[tuple[str, str]] = []
    try:
        with tqdm(
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            miniters=1,
            desc=path.name,
            disable=None if progress is None else not progress,
        ) as bar:
            for url in urls:
                try:
                    _from_source(
                        session,
                        url,
                        part,
                        retries=retries,
                        backoff=backoff,
                        max_backoff=max_backoff,
                        timeout=timeout,
                        bar=bar,
                        on_progress=on_progress,
                    )
                except _SourceFailed as e:
                    log.warning(f"{url}: {e}")
                    tried.append((url, str(e)))
                    continue
                digest = part.hasher.hexdigest()
                if sha256 is not None and digest != sha256:
                    resumed = " (resumed)" if part.resumed_from else ""
                    part.reset()
                    tried.append(
                        (url, f"SHA-256 mismatch{resumed}: expected {sha256}, got {digest}")
                    )
                    log.warning(f"{url}: {tried[-1][1]}; the download was removed")
                    continue
                size = part.offset
                os.replace(part.path, path)
                return DownloadResult(
                    url, path, digest, size, part.resumed_from, part.received, tried
                )
    finally:
        part.hasher.close()
        if own_session:
            session.close()
    summary = "; ".join(f"{u} -> {e}" for u, e in tried)
    raise DownloadError(f"could not download {path.name}: {summary}")


def _new_session() -> requests.Session:
    s = requests.Session()
    s.headers["User-Agent"] = f"danbert-convert/{__version__}"
    return s


def _record_digest(zip_path: Path, digest: str) -> None:
    """Write NAME.zip.sha256 in sha256sum format, so `sha256sum -c` can check it too."""
    tmp = zip_path.with_name(zip_path.name + ".sha256.tmp")
    tmp.write_text(f"{digest}  {zip_path.name}\n")
    os.replace(tmp, zip_path.with_name(zip_path.name + ".sha256"))


def _recorded_digest(zip_path: Path) -> str | None:
    try:
        text = zip_path.with_name(zip_path.name + ".sha256").read_text()
    except OSError:
        return None
    digest = text.split(maxsplit=1)[0].lower() if text.strip() else ""
    return digest if _HEX64.match(digest) else None


def _verify_existing(zip_path: Path, expected: str | None) -> str:
    """Hash an existing zip and compare with the expected or recorded digest."""
    digest = sha256_file(zip_path)
    want = expected or _recorded_digest(zip_path)
    if want is not None and digest != want:
        raise DownloadError(
            f"{zip_path} exists but its SHA-256 is {digest}, expected {want}; "
            "delete it (or use --force) to download again"
        )
    return digest


def fetch(
    model: str | None = None,
    dest: Path = Path("."),
    *,
    urls: Sequence[str] = (),
    sha256: str | None = None,
    from_path: Path | None = None,
    force: bool = False,
    do_unpack: bool = True,
    progress: bool | None = None,
    on_progress: ProgressHook | None = None,
    retries: int = RETRIES,
    backoff: float = BACKOFF,
    max_backoff: float = MAX_BACKOFF,
    timeout: tuple[float, float] = TIMEOUT,
    max_total: int = MAX_TOTAL,
    max_ratio: float = MAX_RATIO,
) -> FetchResult:
    """Get a release into `dest` and return where its checkpoint folder is.

    `model` names a registry release (the default one if neither it nor `urls` is given);
    `urls` replace the registry's sources. `from_path` takes a local zip or unpacked folder
    instead of downloading (not both). An existing verified zip is not downloaded again.
    """
    if urls and from_path is not None:
        raise ValueError("urls and from_path exclude each other: download, or use a local copy")
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
    if zip_path.is_file() and not force:
        log.info(f"{zip_path} already downloaded; checking it")
        result.sha256 = _verify_existing(zip_path, expected)
        result.size = zip_path.stat().st_size
    else:
        d = download(
            sources,
            zip_path,
            sha256=expected,
            progress=progress,
            on_progress=on_progress,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            timeout=timeout,
        )
        result.source, result.sha256, result.size = d.url, d.sha256, d.size
        result.downloaded, result.resumed_from, result.received = True, d.resumed_from, d.received
        result.tried = d.tried
    _record_digest(zip_path, result.sha256)
    log.info(f"sha256 {result.sha256}  {zip_path}")
    if do_unpack:
        u = unpack(
            zip_path, dest, force=force, progress=progress, max_total=max_total, max_ratio=max_ratio
        )
        result.checkpoint_dir, result.unpacked = u.checkpoint_dir, u.unpacked
    return result


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
    if src.is_dir():
        ckpt = locate_checkpoint_dir(src)
        return FetchResult(name, str(src), None, None, 0, False, ckpt, False)
    if not src.is_file():
        raise InputError(f"{src}: no such file or folder")
    digest = sha256_file(src)
    if expected is not None and digest != expected:
        raise DownloadError(f"{src}: SHA-256 mismatch: expected {expected}, got {digest}")
    log.info(f"sha256 {digest}  {src}")
    u = unpack(src, dest, force=force, progress=progress, max_total=max_total, max_ratio=max_ratio)
    return FetchResult(
        name, str(src), src, digest, src.stat().st_size, False, u.checkpoint_dir, u.unpacked
    )

"""Download a release zip over a hostile network, then unpack it.

Bytes stream into `NAME.zip.part`, hashed as they arrive. Where the `.part` came from (URL,
ETag or Last-Modified, size) is recorded in `NAME.zip.part.json` when it begins; a later run
resumes it with a Range request made conditional by If-Range, and starts over when the server
answers with the whole file or a different one. Only a complete zip whose SHA-256 checks out
is renamed to `NAME.zip`, and its digest is recorded beside it in `NAME.zip.sha256`
(sha256sum format). One fetch at a time works on a NAME.zip: the others wait on
`NAME.zip.lock`, then check and reuse what it left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import ssl
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from filelock import FileLock, Timeout
from tqdm import tqdm

from danbert_convert import __version__
from danbert_convert._fs import BackgroundHasher, StrPath, hash_file_into, sha256_file
from danbert_convert.defaults import RETRIES, TIMEOUT
from danbert_convert.errors import DownloadError, InputError, one_line
from danbert_convert.models import DEFAULT_MODEL, Release, get_release
from danbert_convert.unpack import (
    MAX_RATIO,
    MAX_TOTAL,
    ZipCorruptError,
    locate_checkpoint_dir,
    unpack,
)

log = logging.getLogger("danbert_convert")

RESOLVE_RETRIES = 1
"""Retries after "host not found": a name that did not resolve rarely resolves a second later."""
TLS_RETRIES = 1
"""Retries after a failed TLS handshake; a certificate that is not trusted is not retried."""
MAX_RESTARTS = 3
"""Times one source may make us discard the `.part` (a changed file) before we give up on it."""
BACKOFF = 1.0
MAX_BACKOFF = 30.0
CHUNK = 1 << 20
LOCK_POLL = 0.1

ProgressHook = Callable[[int, "int | None"], None]
"""Called after every chunk with (bytes on disk, total or None)."""

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_MAX_RECORD = 64 << 10
"""Bytes read at most from the small records kept beside the zip (.part.json, .sha256, ...)."""
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")
_NAME_RESOLUTION_ERROR: type[BaseException] | tuple[()] = getattr(
    urllib3.exceptions, "NameResolutionError", ()
)
_UNRESOLVED_TEXTS = (
    "Name or service not known",
    "Temporary failure in name resolution",
    "nodename nor servname provided",
    "No address associated with hostname",
    "getaddrinfo failed",
)


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

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        for k in ("zip_path", "checkpoint_dir"):
            d[k] = None if d[k] is None else str(d[k])
        d["tried"] = [{"url": u, "error": e} for u, e in self.tried]
        return d


class _SourceFailed(Exception):
    """This source cannot give us the file; try the next one."""

    def __init__(self, message: str, elsewhere: bool = False) -> None:
        super().__init__(message)
        self.elsewhere = elsewhere
        """The download never got going here (no network, DNS, TLS, an HTTP error, a dead
        link's page, a connection that kept failing): a copy from elsewhere may do."""


class _Retry(Exception):
    """A transient failure: wait, then ask the same source again."""

    def __init__(self, message: str, elsewhere: bool = False, limit: int | None = None) -> None:
        super().__init__(message)
        self.elsewhere = elsewhere
        self.limit = limit
        """At most this many retries for this kind of failure (None: the caller's)."""


class _Restart(Exception):
    """The `.part` does not belong to the file the server now has: discard it, ask from 0."""


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


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


@dataclass
class _Origin:
    """Where a `.part` came from: recorded when it begins, checked whenever it is resumed."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    size: int | None = None

    @classmethod
    def of(cls, url: str, resp: requests.Response, size: int | None) -> _Origin:
        return cls(url, resp.headers.get("ETag"), resp.headers.get("Last-Modified"), size)

    @classmethod
    def load(cls, path: Path) -> _Origin | None:
        try:
            with open(path, "rb") as f:
                text = f.read(_MAX_RECORD + 1)
            if len(text) > _MAX_RECORD:
                return None
            d = json.loads(text.decode("utf-8"))
            origin = cls(d["url"], d.get("etag"), d.get("last_modified"), d.get("size"))
        # RecursionError: deeply nested brackets; AttributeError: not an object.
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return None
        texts = (origin.url, origin.etag or "", origin.last_modified or "")
        ok = all(isinstance(v, str) for v in texts) and isinstance(origin.size, (int, type(None)))
        return origin if ok else None

    def if_range(self) -> str | None:
        """The validator for If-Range: a strong ETag, else Last-Modified (a weak ETag never
        matches an If-Range, RFC 9110 13.1.5)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def changed(self, resp: requests.Response, size: int | None) -> str | None:
        """Why `resp` is not about the file this `.part` began with, or None if nothing says so.

        Catches servers that honour Range but ignore If-Range.
        """
        etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
        if self.etag and etag and etag.removeprefix("W/") != self.etag.removeprefix("W/"):
            return f"its ETag was {self.etag}, now {etag}"
        if self.last_modified and modified and modified != self.last_modified:
            return f"it was last modified {self.last_modified}, now {modified}"
        if self.size is not None and size is not None and size != self.size:
            return f"its size was {self.size} bytes, now {size}"
        return None


class _Part:
    """The `.part` file: bytes on disk, a running SHA-256 over exactly those bytes, and the
    record of where they came from (`.part.json`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta_path = path.with_name(path.name + ".json")
        self.origin: _Origin | None = None
        self.offset = 0
        start = hashlib.sha256()
        if path.is_file() and path.stat().st_size > 0:
            with open(path, "rb") as f:
                head = f.read(4)
            origin = _Origin.load(self.meta_path)
            if head not in _ZIP_MAGIC:
                log.warning(f"{path}: not the start of a zip; starting over")
            elif origin is None:
                # Without a record, nothing says these bytes are the file we are asking for.
                log.warning(
                    f"{path}: no record of where it came from ({self.meta_path.name}); "
                    "starting over"
                )
            else:
                # Hashed from disk once; from here on the hash follows the appended bytes.
                start = hash_file_into(start, path)
                self.offset = path.stat().st_size
                self.origin = origin
                log.info(f"resuming {path.name} at {self.offset} bytes")
        if not self.offset:
            self._discard()
        self.hasher = BackgroundHasher(start)
        self.resumed_from = self.offset
        self.received = 0

    def _discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)

    def reset(self) -> None:
        self._discard()
        self.hasher.close()
        self.hasher = BackgroundHasher()
        self.offset = self.resumed_from = 0
        self.origin = None

    def begin(self, origin: _Origin) -> None:
        """Record where the `.part` comes from before its first byte is written."""
        tmp = self.meta_path.with_name(self.meta_path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(origin)) + "\n", encoding="utf-8")
        os.replace(tmp, self.meta_path)
        self.origin = origin

    def finish(self, path: Path) -> None:
        """Rename the complete `.part` to `path`; its record is no longer needed."""
        os.replace(self.path, path)
        self.meta_path.unlink(missing_ok=True)

    def append(self, f: IO[bytes], chunk: bytes) -> None:
        f.write(chunk)
        self.hasher.update(chunk)
        self.offset += len(chunk)
        self.received += len(chunk)


def _causes(e: BaseException) -> Iterator[BaseException]:
    """`e` and every exception behind it, each once."""
    seen: set[int] = set()
    stack: list[object] = [e]
    while stack:
        x = stack.pop()
        if not isinstance(x, BaseException) or id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        # urllib3 keeps the cause of a MaxRetryError in `reason`.
        stack += [x.__cause__, x.__context__, getattr(x, "reason", None)]


def _unresolved(e: BaseException) -> bool:
    """Whether a connection error is a failure to resolve the host name."""
    for x in _causes(e):
        if isinstance(x, socket.gaierror) or (
            _NAME_RESOLUTION_ERROR and isinstance(x, _NAME_RESOLUTION_ERROR)
        ):
            return True
    return any(t in str(e) for t in _UNRESOLVED_TEXTS)


def _tls_failure(e: BaseException) -> tuple[str, bool] | None:
    """(what went wrong, whether the certificate was refused) for a TLS error; else None."""
    for x in _causes(e):
        if isinstance(x, ssl.SSLCertVerificationError):
            why = x.verify_message or x.reason or "certificate verify failed"
            return f"TLS certificate not trusted ({why})", True
    for x in _causes(e):
        if isinstance(x, ssl.SSLError) and not isinstance(x, requests.exceptions.SSLError):
            why = (x.reason or type(x).__name__).replace("_", " ").lower()
            return f"TLS handshake failed ({why})", False
    return None


def _describe(e: Exception) -> str:
    """A short reason for a network error (requests' own embed whole connection-pool reprs)."""
    text = str(e)
    if _unresolved(e):
        return "host not found"
    if (tls := _tls_failure(e)) is not None:
        return tls[0]
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
        ("RemoteDisconnected", "connection closed without a response"),
        ("Connection reset", "connection reset"),
    ):
        if pattern in text:
            return short
    return f"connection failed ({type(e).__name__})"


def _status_text(resp: requests.Response) -> str:
    return f"HTTP {resp.status_code} {resp.reason or ''}".strip()


def _accept(
    resp: requests.Response, url: str, part: _Part, conditional: bool
) -> tuple[int | None, int | None]:
    """Check the status against the `.part`; return (size of the whole file, bytes this
    response carries), each None where the server did not say.

    A 200 to a Range request restarts the `.part` and keeps the body; a 206 must continue the
    `.part`'s file from where it ends; a 416 means the `.part` is complete.
    """
    status = resp.status_code
    header = resp.headers.get("Content-Length")
    length = int(header) if header is not None and header.isdigit() else None
    if status == 200:
        if part.offset:
            what = (
                f"the file changed since {part.path.name} began (If-Range not satisfied)"
                if conditional
                else "the server ignored the Range request"
            )
            log.warning(f"{url}: {what}; starting over from byte 0")
            part.reset()
        return length, length
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
        total = int(m[3]) if m[3] != "*" else None
        if end < start or (total is not None and end >= total):
            raise _SourceFailed(f"206 with a bad Content-Range {content_range!r}")
        if start != part.offset:
            raise _Restart(f"asked for bytes {part.offset}-, got {start}-")
        if part.origin is not None and (why := part.origin.changed(resp, total)):
            raise _Restart(f"the file changed since {part.path.name} began ({why})")
        if length is not None and length != end - start + 1:
            raise _SourceFailed(f"206 with Content-Length {length} for range {start}-{end}")
        return total, end - start + 1
    if status == 416:
        m = _UNSATISFIED_RANGE.match(resp.headers.get("Content-Range", ""))
        size = int(m[1]) if m else None
        why = part.origin.changed(resp, size) if part.origin is not None else None
        if part.offset and size == part.offset and why is None:
            return size, 0
        raise _Restart(f"{part.path.name} does not fit the file on the server ({why or status})")
    if status in (404, 410):
        raise _SourceFailed(_status_text(resp), elsewhere=True)
    if status == 429 or status >= 500:
        raise _Retry(_status_text(resp), elsewhere=True)
    raise _SourceFailed(_status_text(resp), elsewhere=400 <= status < 500)


def _check_is_zip(resp: requests.Response, first: bytes, at_start: bool) -> None:
    """Refuse an HTML page (Dropbox's answer for dead or throttled links) or any non-zip."""
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype == "text/html" or (at_start and first.lstrip()[:1] == b"<"):
        raise _SourceFailed(
            f"an HTML page ({ctype or 'no Content-Type'}), not a zip: "
            "the link is dead or rate-limited",
            elsewhere=True,
        )
    if at_start and first[:4] not in _ZIP_MAGIC:
        raise _SourceFailed(f"not a zip ({ctype or 'no Content-Type'}, starts with {first[:8]!r})")


def _read(read: Callable[[int], bytes]) -> bytes:
    """The next chunk of the body; b"" at its end; _Retry for a network failure."""
    try:
        return read(CHUNK)
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as e:
        raise _Retry(_describe(e), elsewhere=True) from e


def _head(chunk: bytes, read: Callable[[int], bytes]) -> bytes:
    """Read on until the body's first 4 non-blank bytes are in hand, however the server
    split them (the zip and HTML checks look at them); stop at the body's end."""
    while chunk and len(chunk.lstrip()) < 4 and len(chunk) < 4096:
        more = _read(read)
        if not more:
            break
        chunk += more
    return chunk


def _transfer(
    session: requests.Session,
    url: str,
    part: _Part,
    timeout: tuple[float, float],
    bar: tqdm,
    on_progress: ProgressHook | None,
    max_size: int = MAX_TOTAL,
) -> bool:
    """One request: append what the server sends to the `.part`.

    True once the file is complete; False when a 206 ended where it said it would, short of
    the file's end (ask for the rest at once); otherwise raises why not.
    """
    headers = {"Accept-Encoding": "identity"}
    validator = None
    if part.offset and part.origin is not None:
        validator = part.origin.if_range()
        if validator is None and part.origin.url != url:
            # With no validator to send, only the URL that began the `.part` may continue it.
            log.warning(
                f"{url}: {part.path.name} began at {part.origin.url}, which gave no ETag or "
                "Last-Modified to check it against; starting over from byte 0"
            )
            part.reset()
    if part.offset:
        headers["Range"] = f"bytes={part.offset}-"
        if validator is not None:
            headers["If-Range"] = validator
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as e:
        limit = RESOLVE_RETRIES if _unresolved(e) else None
        if (tls := _tls_failure(e)) is not None:
            limit = 0 if tls[1] else TLS_RETRIES
        raise _Retry(_describe(e), elsewhere=True, limit=limit) from e
    except requests.RequestException as e:
        raise _SourceFailed(f"bad request: {e}") from e
    with resp:
        total, length = _accept(resp, url, part, conditional="If-Range" in headers)
        if resp.status_code == 416:
            return True
        if total is not None and total > max_size:
            part.reset()
            raise _SourceFailed(f"the file is {total} bytes, over the limit of {max_size}")
        begun = part.offset
        bar.reset(total)
        bar.update(begun)
        # read1 returns what has arrived: a dropped connection loses no received bytes, and
        # the bar moves smoothly. urllib3 1.x lacks it; read() waits for a full chunk.
        read = getattr(resp.raw, "read1", None) or resp.raw.read
        chunk = _read(read)
        if begun == 0:
            chunk = _head(chunk, read)
        _check_is_zip(resp, chunk, at_start=begun == 0)
        try:
            if begun == 0:
                part.begin(_Origin.of(url, resp, total))
            with open(part.path, "ab") as f:
                while chunk:
                    if part.offset + len(chunk) > max_size:
                        # A body without an end (no Content-Length) would fill the disk.
                        part.reset()
                        raise _SourceFailed(
                            f"the server sent more than {max_size} bytes, the limit; refusing it"
                        )
                    part.append(f, chunk)
                    bar.update(len(chunk))
                    if on_progress is not None:
                        on_progress(part.offset, total)
                    chunk = _read(read)
        except OSError as e:
            raise DownloadError(f"{part.path}: cannot write: {e.strerror or e}") from e
    got = part.offset - begun
    if (length is not None and got > length) or (total is not None and part.offset > total):
        announced = f"{length} bytes" if length is not None else f"a {total}-byte file"
        part.reset()
        raise _SourceFailed(f"the server sent {got} bytes for {announced}")
    if length is not None and got < length:
        raise _Retry(f"connection closed at byte {part.offset} of {total or '?'}", elsewhere=True)
    if total is not None and part.offset < total:
        if resp.status_code == 206:
            return False
        raise _Retry(f"connection closed at byte {part.offset} of {total}", elsewhere=True)
    return True


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
    max_size: int = MAX_TOTAL,
) -> None:
    """Get the whole file from one URL, retrying transient failures with bounded back-off."""
    failures = restarts = 0
    while True:
        before = part.offset
        try:
            if _transfer(session, url, part, timeout, bar, on_progress, max_size):
                return
        except _Restart as e:
            part.reset()
            restarts += 1
            if restarts > MAX_RESTARTS:
                raise _SourceFailed(f"{e} (gave up after {MAX_RESTARTS} restarts)") from None
            log.warning(f"{url}: {e}; starting over from byte 0")
        except _Retry as e:
            # A dropped connection that delivered bytes is progress, not a strike.
            failures = 1 if part.offset > before else failures + 1
            limit = retries if e.limit is None else min(retries, e.limit)
            if failures > limit:
                gave_up = f"gave up after {_plural(limit, 'retry', 'retries')}"
                raise _SourceFailed(f"{e} ({gave_up})", elsewhere=e.elsewhere) from None
            delay = min(max_backoff, backoff * 2 ** (failures - 1))
            log.warning(f"{url}: {e}; retry {failures}/{limit} in {delay:.1f} s")
            time.sleep(delay)


def _not_a_whole_zip(path: Path) -> str | None:
    """Why `path` is not a complete zip (its central directory does not read), or None.

    The one check that catches a server whose Content-Length is shorter than the file: HTTP
    then ends the body early and cleanly, and the cut-off tail holds the central directory.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as e:
        return one_line(e)
    return None


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
    max_size: int = MAX_TOTAL,
) -> DownloadResult:
    """Download the first of `urls` that works to `path`, via `path.part`, and verify it.

    Raises DownloadError naming every URL tried and what it answered. A KeyboardInterrupt
    leaves the `.part` for the next call to resume. Takes no lock: `fetch` does.
    """
    if not urls:
        raise InputError("no URL to download from")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = _Part(path.with_name(path.name + ".part"))
    own_session = session is None
    session = session or _new_session()
    tried: list[tuple[str, str]] = []
    stuck: list[str] = []  # sources where the download never got going
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
                        max_size=max_size,
                    )
                except _SourceFailed as e:
                    log.warning(f"{url}: {e}")
                    tried.append((url, str(e)))
                    if e.elsewhere:
                        stuck.append(url)
                    continue
                digest = part.hasher.hexdigest()
                size = part.offset
                why = _not_a_whole_zip(part.path)
                if why is None and sha256 is not None and digest != sha256:
                    resumed = " (resumed)" if part.resumed_from else ""
                    why = f"SHA-256 mismatch{resumed}: expected {sha256}, got {digest}"
                elif why is not None:
                    why = f"the {size} bytes received are not a whole zip ({why})"
                if why is not None:
                    part.reset()
                    tried.append((url, why))
                    log.warning(f"{url}: {why}; the download was removed")
                    continue
                _forget(path)
                part.finish(path)
                return DownloadResult(
                    url, path, digest, size, part.resumed_from, part.received, tried
                )
    finally:
        part.hasher.close()
        if own_session:
            session.close()
    summary = "; ".join(f"{u} -> {e}" for u, e in tried)
    hint = ""
    if stuck:
        url = stuck[0]
        hint = (
            f"; to get it another way, download {url} elsewhere (a browser, another machine) "
            "and use --from FILE.zip, or give a mirror with --url MIRROR"
        )
    raise DownloadError(f"could not download {path.name}: {summary}{hint}")


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
    _forget(path)
    os.replace(part, path)
    _sidecar(part, ".json").unlink(missing_ok=True)  # an older download's record
    log.info(f"{path.name}: copied from the package's own data (no download)")
    return DownloadResult(str(src), path, digest, size, 0, 0, [])


def _new_session() -> requests.Session:
    s = requests.Session()
    s.headers["User-Agent"] = f"danbert-convert/{__version__}"
    return s


def _sidecar(zip_path: Path, suffix: str) -> Path:
    return zip_path.with_name(zip_path.name + suffix)


def _record_digest(zip_path: Path, digest: str) -> None:
    """Write NAME.zip.sha256 in sha256sum format, so `sha256sum -c` can check it too."""
    tmp = _sidecar(zip_path, ".sha256.tmp")
    tmp.write_text(f"{digest}  {zip_path.name}\n")
    os.replace(tmp, _sidecar(zip_path, ".sha256"))


def _read_record(path: Path) -> str | None:
    """A small text file we wrote beside the zip; None if missing, unreadable, too big or not
    UTF-8 (a damaged record is no record)."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_RECORD + 1)
        return data.decode("utf-8") if len(data) <= _MAX_RECORD else None
    except (OSError, ValueError):
        return None


def _recorded_digest(zip_path: Path) -> str | None:
    text = _read_record(_sidecar(zip_path, ".sha256"))
    if text is None:
        return None
    digest = text.split(maxsplit=1)[0].lower() if text.strip() else ""
    return digest if _HEX64.match(digest) else None


def _distrust(zip_path: Path, digest: str, reason: str) -> None:
    """Mark NAME.zip as failed to unpack (NAME.zip.untrusted: its digest and why); it is no
    longer a verified download, so its recorded digest goes."""
    reason = reason.removeprefix(f"{zip_path}: ")
    tmp = _sidecar(zip_path, ".untrusted.tmp")
    tmp.write_text(f"{digest}  {reason}\n", encoding="utf-8")
    os.replace(tmp, _sidecar(zip_path, ".untrusted"))
    _sidecar(zip_path, ".sha256").unlink(missing_ok=True)


def _forget(zip_path: Path) -> None:
    """Drop what is recorded about NAME.zip (digest, distrust) just before it is replaced."""
    for suffix in (".sha256", ".untrusted"):
        _sidecar(zip_path, suffix).unlink(missing_ok=True)


def _verify_existing(zip_path: Path, expected: str | None) -> str:
    """Hash an existing zip and compare with the expected or recorded digest; refuse one that
    failed to unpack before."""
    digest = sha256_file(zip_path)
    marker = _sidecar(zip_path, ".untrusted")
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
    lock_path, pid_path = _sidecar(zip_path, ".lock"), _sidecar(zip_path, ".lock.pid")
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
    retries: int = RETRIES,
    backoff: float = BACKOFF,
    max_backoff: float = MAX_BACKOFF,
    timeout: float | tuple[float, float] = TIMEOUT,
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
    - `from_path`: a local zip (checked, unpacked into `dest`) or unpacked folder (used where
      it is) instead of downloading; excludes `urls`.
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
    timeout = _timeouts(timeout)
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
        if force and fresh and not _sidecar(zip_path, ".untrusted").exists():
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
                retries=retries,
                backoff=backoff,
                max_backoff=max_backoff,
                timeout=timeout,
                max_size=max_total,
            )
            result.source, result.sha256, result.size = d.url, d.sha256, d.size
            result.downloaded, result.resumed_from = True, d.resumed_from
            result.received, result.tried = d.received, d.tried
        _record_digest(zip_path, result.sha256)
        log.info(f"sha256 {result.sha256}  {zip_path}")
        if do_unpack:
            try:
                u = unpack(
                    zip_path,
                    dest,
                    force=force,
                    progress=progress,
                    max_total=max_total,
                    max_ratio=max_ratio,
                )
            except ZipCorruptError as e:
                _distrust(zip_path, result.sha256, str(e))
                raise DownloadError(
                    f"{e}; {zip_path.name} will not be trusted again: "
                    "use --force to download it again"
                ) from None
            result.checkpoint_dir, result.unpacked = u.checkpoint_dir, u.unpacked
    return result


def _timeouts(timeout: float | tuple[float, float]) -> tuple[float, float]:
    """(connect, read) seconds: a single number is the read timeout, as the CLI's --timeout."""
    if isinstance(timeout, tuple):
        return timeout
    return (min(TIMEOUT[0], timeout), timeout)


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
    with _new_dirs(dest):
        u = unpack(
            src, dest, force=force, progress=progress, max_total=max_total, max_ratio=max_ratio
        )
    return FetchResult(
        name, str(src), src, digest, src.stat().st_size, False, u.checkpoint_dir, u.unpacked
    )

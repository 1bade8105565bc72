"""HTTP transfer of a release archive (a zip or a tar.gz; "zip" below stands for both) over
a hostile network, with resume and bounded retries.

Bytes stream into `NAME.zip.part`, hashed as they arrive. Where the `.part` came from (URL,
ETag or Last-Modified, size) is recorded in `NAME.zip.part.json` when it begins; a later run
resumes it with a Range request made conditional by If-Range, and starts over when the server
answers with the whole file or a different one. Only a complete zip whose SHA-256 checks out
is renamed to `NAME.zip`. Locking, the registry and unpacking are stages/fetch.py's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Literal

import requests
import urllib3
from tqdm import tqdm

from danbert_convert import __version__
from danbert_convert._fs import BackgroundHasher, hash_file_into
from danbert_convert.defaults import RETRIES, TIMEOUT
from danbert_convert.errors import DownloadError, InputError
from danbert_convert.releases.archive import MAX_TOTAL, looks_like_archive, why_not_whole

log = logging.getLogger("danbert_convert")

MAX_RESTARTS = 3
"""Times one source may make us discard the `.part` (a changed file) before we give up on it."""
CHUNK = 1 << 20

FailureKind = Literal["dns", "tls", "certificate"]
"""A failure with a retry limit of its own (see `RetryPolicy.limit`)."""

ProgressHook = Callable[[int, "int | None"], None]
"""Called after every chunk with (bytes on disk, total or None)."""

MAX_RECORD = 64 << 10
"""Bytes read at most from the small records kept beside the zip (.part.json, .sha256, ...)."""
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


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one source is tried before the next: every retry setting in one place.

    Callers change a field with `dataclasses.replace(DEFAULT_RETRY, retries=0)`.
    """

    retries: int = RETRIES
    """Retries per source after a failure that made no progress; progress resets the count."""
    backoff: float = 1.0
    """Seconds before the first retry; each further one waits twice as long as the last."""
    max_backoff: float = 30.0
    """The longest wait between two retries, in seconds."""
    timeout: tuple[float, float] = TIMEOUT
    """Seconds to connect, and to wait for the next bytes of the body."""
    dns_retries: int = 1
    """Retries after "host not found": a name that did not resolve rarely resolves a second
    later. At most `retries`."""
    tls_retries: int = 1
    """Retries after a failed TLS handshake (a certificate that is not trusted is never
    retried). At most `retries`."""

    def delay(self, failure_number: int) -> float:
        """Seconds to wait after the `failure_number`-th failure in a row (1 for the first)."""
        return min(self.max_backoff, self.backoff * 2 ** (failure_number - 1))

    def limit(self, kind: FailureKind | None) -> int:
        """How many retries a failure of this kind gets: "dns", "tls", "certificate" (none),
        or None for any other transient failure."""
        per_kind = {"dns": self.dns_retries, "tls": self.tls_retries, "certificate": 0}
        return self.retries if kind is None else min(self.retries, per_kind[kind])


DEFAULT_RETRY = RetryPolicy()


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


class _SourceFailed(Exception):
    """This source cannot give us the file; try the next one."""

    def __init__(self, message: str, elsewhere: bool = False) -> None:
        super().__init__(message)
        self.elsewhere = elsewhere
        """The download never got going here (no network, DNS, TLS, an HTTP error, a dead
        link's page, a connection that kept failing): a copy from elsewhere may do."""


class _Retry(Exception):
    """A transient failure: wait, then ask the same source again."""

    def __init__(
        self, message: str, elsewhere: bool = False, kind: FailureKind | None = None
    ) -> None:
        super().__init__(message)
        self.elsewhere = elsewhere
        self.kind = kind
        """The kind of failure, for `RetryPolicy.limit` (None: an ordinary one)."""


class _Restart(Exception):
    """The `.part` does not belong to the file the server now has: discard it, ask from 0."""


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
                text = f.read(MAX_RECORD + 1)
            if len(text) > MAX_RECORD:
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
                head = f.read(512)
            origin = _Origin.load(self.meta_path)
            if not looks_like_archive(head):
                log.warning(f"{path}: not the start of a zip or tar archive; starting over")
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
    """Refuse an HTML page (Dropbox's answer for dead or throttled links) or anything but a
    zip or tar(.gz) (a plain tar only when the first chunk holds its 262-byte signature)."""
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype == "text/html" or (at_start and first.lstrip()[:1] == b"<"):
        raise _SourceFailed(
            f"an HTML page ({ctype or 'no Content-Type'}), not a zip: "
            "the link is dead or rate-limited",
            elsewhere=True,
        )
    if at_start and not looks_like_archive(first):
        raise _SourceFailed(
            f"not a zip or tar.gz ({ctype or 'no Content-Type'}, starts with {first[:8]!r})"
        )


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
        kind: FailureKind | None = "dns" if _unresolved(e) else None
        if (tls := _tls_failure(e)) is not None:
            kind = "certificate" if tls[1] else "tls"
        raise _Retry(_describe(e), elsewhere=True, kind=kind) from e
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
    retry: RetryPolicy,
    bar: tqdm,
    on_progress: ProgressHook | None,
    max_size: int = MAX_TOTAL,
) -> None:
    """Get the whole file from one URL, retrying transient failures with bounded back-off."""
    failures = restarts = 0
    while True:
        before = part.offset
        try:
            if _transfer(session, url, part, retry.timeout, bar, on_progress, max_size):
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
            limit = retry.limit(e.kind)
            if failures > limit:
                gave_up = f"gave up after {_plural(limit, 'retry', 'retries')}"
                raise _SourceFailed(f"{e} ({gave_up})", elsewhere=e.elsewhere) from None
            delay = retry.delay(failures)
            log.warning(f"{url}: {e}; retry {failures}/{limit} in {delay:.1f} s")
            time.sleep(delay)


def download(
    urls: Sequence[str],
    path: Path,
    *,
    sha256: str | None = None,
    progress: bool | None = None,
    on_progress: ProgressHook | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
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
                        retry=retry,
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
                # A Content-Length shorter than the file ends the body early and cleanly:
                # the cut-off tail holds a zip's central directory, a gzip's trailer.
                why = why_not_whole(part.path)
                if why is None and sha256 is not None and digest != sha256:
                    resumed = " (resumed)" if part.resumed_from else ""
                    why = f"SHA-256 mismatch{resumed}: expected {sha256}, got {digest}"
                elif why is not None:
                    why = f"the {size} bytes received are {why}"
                if why is not None:
                    part.reset()
                    tried.append((url, why))
                    log.warning(f"{url}: {why}; the download was removed")
                    continue
                forget(path)
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


def _new_session() -> requests.Session:
    s = requests.Session()
    s.headers["User-Agent"] = f"danbert-convert/{__version__}"
    return s


def sidecar(zip_path: Path, suffix: str) -> Path:
    """A record kept beside NAME.zip: NAME.zip + `suffix`."""
    return zip_path.with_name(zip_path.name + suffix)


def forget(zip_path: Path) -> None:
    """Drop what is recorded about NAME.zip (digest, distrust) just before it is replaced."""
    for suffix in (".sha256", ".untrusted"):
        sidecar(zip_path, suffix).unlink(missing_ok=True)

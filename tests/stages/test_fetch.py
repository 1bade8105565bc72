"""Downloading against a real, misbehaving HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner
from httpserver import Behaviour, Server
from zips import zip_folder

from danbert_convert.cli import cli
from danbert_convert.errors import DownloadError, InputError
from danbert_convert.releases import http
from danbert_convert.releases.http import download
from danbert_convert.stages import fetch as fetch_mod
from danbert_convert.stages.fetch import fetch, filename_from_url

FAST = {"backoff": 0.001, "max_backoff": 0.01, "timeout": (2.0, 2.0)}
NAME = "danish_bert_uncased_v2"
HTML = b"<!DOCTYPE html><html><head><title>Dropbox - Error</title></head></html>"


pytestmark = pytest.mark.usefixtures("local_network")


@pytest.fixture(scope="session")
def release_zip(full_release: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The tiny TF-written release zipped like the Danish one, with macOS junk."""
    z = tmp_path_factory.mktemp("zip") / f"{NAME}.zip"
    return zip_folder(full_release, z, NAME, junk=True).read_bytes()


@pytest.fixture(scope="session")
def other_zip(full_release: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A different release zip: what a server sends after the file was replaced."""
    z = tmp_path_factory.mktemp("zip") / "other.zip"
    return zip_folder(full_release, z, "other_release").read_bytes()


@pytest.fixture(scope="session")
def corrupt_zip(release_zip: bytes) -> tuple[bytes, str]:
    """The release zip with one byte of its largest entry's data flipped (central directory
    intact), and that entry's name."""
    with zipfile.ZipFile(io.BytesIO(release_zip)) as zf:
        info = max(zf.infolist(), key=lambda i: i.compress_size)
    head = info.header_offset
    name_len, extra_len = struct.unpack("<HH", release_zip[head + 26 : head + 30])
    at = head + 30 + name_len + extra_len + info.compress_size // 2
    data = bytearray(release_zip)
    data[at] ^= 0xFF
    return bytes(data), info.filename


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as s:
        yield s


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # The CLI turns propagation off for its own handler; attach caplog's directly.
    logger = logging.getLogger("danbert_convert")
    logger.addHandler(caplog.handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(old)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ranges(server: Server, path: str) -> list[str | None]:
    return [r.headers.get("Range") for r in server.requests_to(path, wait=0)]


def leave_part(
    zip_path: Path,
    data: bytes,
    url: str,
    etag: str | None = None,
    last_modified: str | None = None,
    size: int | None = None,
) -> None:
    """A `.part` as an interrupted fetch leaves it: the bytes, and where they came from."""
    zip_path.with_name(zip_path.name + ".part").write_bytes(data)
    origin = {"url": url, "etag": etag, "last_modified": last_modified, "size": size}
    zip_path.with_name(zip_path.name + ".part.json").write_text(json.dumps(origin))


def hint(url: str) -> str:
    """What every download error ends with when the download never got going (no network,
    DNS, TLS, an HTTP error, a dead link's page): how to get the file another way."""
    return (
        f"; to get it another way, download {url} elsewhere (a browser, another machine) "
        "and use --from FILE.zip, or give a mirror with --url MIRROR"
    )


def test_plain_download(server: Server, release_zip: bytes, tmp_path: Path) -> None:
    url = server.route("/r.zip", Behaviour(body=release_zip))
    r = fetch(dest=tmp_path, urls=[url], **FAST)
    assert r.zip_path == tmp_path / "r.zip"
    assert r.zip_path.read_bytes() == release_zip
    assert r.sha256 == sha(release_zip) and r.size == len(release_zip)
    assert (r.downloaded, r.resumed_from, r.received) == (True, 0, len(release_zip))
    assert (tmp_path / "r.zip.sha256").read_text() == f"{sha(release_zip)}  r.zip\n"
    assert r.checkpoint_dir == tmp_path / NAME
    assert (r.checkpoint_dir / "bert_config.json").is_file()
    assert not list(r.checkpoint_dir.glob("._*"))
    # The lock file stays (empty), as filelock intends; its pid file goes with the lock.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        NAME,
        "r.zip",
        "r.zip.lock",
        "r.zip.sha256",
    ]
    assert (tmp_path / "r.zip.lock").stat().st_size == 0
    (rec,) = server.requests_to("/r.zip")
    assert rec.headers.get("Range") is None
    assert rec.headers["Accept-Encoding"] == "identity"
    assert rec.headers["User-Agent"].startswith("danbert-convert/")


def test_registry_name_gives_the_file_name(server: Server, release_zip: bytes, tmp_path: Path):
    url = server.route("/dl", Behaviour(body=release_zip))
    r = fetch("danish-bert-uncased-v2", tmp_path, urls=[url], do_unpack=False, **FAST)
    assert r.zip_path == tmp_path / f"{NAME}.zip" and r.model == "danish-bert-uncased-v2"


def test_broken_release_warns(
    server: Server, release_zip: bytes, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    url = server.route("/dl", Behaviour(body=release_zip))
    fetch("norwegian-bert-uncased", tmp_path, urls=[url], do_unpack=False, **FAST)
    assert "norwegian-bert-uncased: Reported broken upstream" in logs.text


def test_dropped_connection_resumes_with_range(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    n = len(release_zip) // 3
    url = server.route(
        "/r.zip", Behaviour(body=release_zip, drop_after=n), Behaviour(body=release_zip)
    )
    r = fetch(dest=tmp_path, urls=[url], **FAST)
    assert r.zip_path.read_bytes() == release_zip and r.sha256 == sha(release_zip)
    first, second = server.requests_to("/r.zip")
    assert first.sent == n
    assert second.headers["Range"] == f"bytes={n}-"
    assert (second.status, second.sent) == (206, len(release_zip) - n)
    assert r.received == len(release_zip)


def test_resume_in_a_later_run_rehashes_the_part(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    n = len(release_zip) // 2
    url = server.route(
        "/r.zip", Behaviour(body=release_zip, drop_after=n), Behaviour(body=release_zip)
    )
    with pytest.raises(DownloadError, match="connection dropped mid-transfer"):
        fetch(dest=tmp_path, urls=[url], retries=0, **FAST)
    assert (tmp_path / "r.zip.part").read_bytes() == release_zip[:n]
    assert not (tmp_path / "r.zip").exists()
    r = fetch(dest=tmp_path, urls=[url], **FAST)
    assert ranges(server, "/r.zip") == [None, f"bytes={n}-"]
    assert server.requests_to("/r.zip")[1].sent == len(release_zip) - n
    assert (r.resumed_from, r.received) == (n, len(release_zip) - n)
    assert r.sha256 == sha(release_zip) and not (tmp_path / "r.zip.part").exists()


def test_server_ignoring_range_restarts_cleanly(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    url = server.route("/r.zip", Behaviour(body=release_zip, honour_range=False))
    leave_part(tmp_path / "r.zip", release_zip[:1000], url)
    r = fetch(dest=tmp_path, urls=[url], **FAST)
    (rec,) = server.requests_to("/r.zip")
    assert (rec.headers["Range"], rec.status) == ("bytes=1000-", 200)
    assert r.zip_path.read_bytes() == release_zip
    assert (r.resumed_from, r.received) == (0, len(release_zip))


def test_complete_part_answered_416(server: Server, release_zip: bytes, tmp_path: Path) -> None:
    url = server.route("/r.zip", Behaviour(body=release_zip))
    leave_part(tmp_path / "r.zip", release_zip, url)
    r = fetch(dest=tmp_path, urls=[url], **FAST)
    (rec,) = server.requests_to("/r.zip")
    assert (rec.status, rec.sent) == (416, 0)
    assert r.sha256 == sha(release_zip) and r.received == 0


def test_oversized_part_answered_416_starts_over(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    url = server.route("/r.zip", Behaviour(body=release_zip))
    leave_part(tmp_path / "r.zip", release_zip + b"extra", url)
    r = fetch(dest=tmp_path, urls=[url], **FAST)
    assert ranges(server, "/r.zip") == [f"bytes={len(release_zip) + 5}-", None]
    assert r.zip_path.read_bytes() == release_zip


def test_part_that_is_not_a_zip_is_discarded(
    server: Server, release_zip: bytes, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "r.zip.part").write_bytes(HTML)
    url = server.route("/r.zip", Behaviour(body=release_zip))
    fetch(dest=tmp_path, urls=[url], do_unpack=False, **FAST)
    assert ranges(server, "/r.zip") == [None]
    assert "r.zip.part: not the start of a zip or tar archive; starting over" in logs.text


def test_wrong_content_range_starts_over(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    size = len(release_zip)
    wrong = Behaviour(
        body=release_zip, status=206, headers={"Content-Range": f"bytes 0-{size - 1}/{size}"}
    )
    url = server.route("/r.zip", wrong, Behaviour(body=release_zip))
    leave_part(tmp_path / "r.zip", release_zip[:1000], url)
    r = fetch(dest=tmp_path, urls=[url], **FAST)
    assert ranges(server, "/r.zip") == ["bytes=1000-", None]
    assert r.zip_path.read_bytes() == release_zip


def test_bad_content_range_header(server: Server, release_zip: bytes, tmp_path: Path) -> None:
    url = server.route("/r.zip", Behaviour(body=release_zip, status=206))
    leave_part(tmp_path / "r.zip", release_zip[:1000], url)
    with pytest.raises(DownloadError, match=r"r\.zip -> 206 without a Content-Range$"):
        fetch(dest=tmp_path, urls=[url], **FAST)
    bad = Behaviour(body=release_zip, status=206, headers={"Content-Range": "bytes 1000-"})
    url = server.route("/r.zip", bad)
    leave_part(tmp_path / "r.zip", release_zip[:1000], url)
    with pytest.raises(
        DownloadError, match=r"r\.zip -> 206 with a bad Content-Range 'bytes 1000-'$"
    ):
        fetch(dest=tmp_path, urls=[url], **FAST)


def test_500_then_200(
    server: Server, release_zip: bytes, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    url = server.route("/r.zip", Behaviour(status=500, body=b"oops"), Behaviour(body=release_zip))
    r = fetch(dest=tmp_path, urls=[url], **FAST)
    assert [x.status for x in server.requests_to("/r.zip")] == [500, 200]
    assert r.sha256 == sha(release_zip)
    assert f"{url}: HTTP 500 Internal Server Error; retry 1/5" in logs.text


def test_retries_are_bounded_with_growing_backoff(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(http.time, "sleep", sleeps.append)
    url = server.route("/r.zip", Behaviour(status=503, body=b"busy"))
    with pytest.raises(DownloadError) as e:
        fetch(dest=tmp_path, urls=[url], retries=4, backoff=1.0, max_backoff=5.0)
    assert str(e.value) == (
        f"could not download r.zip: {url} -> HTTP 503 Service Unavailable (gave up after 4 retries)"
        + hint(url)
    )
    assert len(server.requests_to("/r.zip")) == 5
    assert sleeps == [1.0, 2.0, 4.0, 5.0]


def test_404_then_a_working_second_source(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    dead = server.url("/gone.zip")
    good = server.route("/r.zip", Behaviour(body=release_zip))
    r = fetch("danish-bert-uncased-v2", tmp_path, urls=[dead, good], **FAST)
    assert r.source == good and r.tried == [(dead, "HTTP 404 Not Found")]
    assert len(server.requests_to("/gone.zip")) == 1  # a 404 is not retried
    assert r.to_dict()["tried"] == [{"url": dead, "error": "HTTP 404 Not Found"}]


def test_every_source_failing_names_each(server: Server, tmp_path: Path) -> None:
    a = server.url("/gone.zip")
    b = server.route("/old.zip", Behaviour(status=410, body=b""))
    c = server.route("/page", Behaviour(body=HTML, content_type="text/html; charset=utf-8"))
    with pytest.raises(DownloadError) as e:
        fetch("danish-bert-uncased-v2", tmp_path, urls=[a, b, c], **FAST)
    assert str(e.value) == (
        f"could not download {NAME}.zip: {a} -> HTTP 404 Not Found; {b} -> HTTP 410 Gone; "
        f"{c} -> an HTML page (text/html), not a zip: the link is dead or rate-limited" + hint(a)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{NAME}.zip.lock"]


def test_html_page_without_html_content_type(server: Server, tmp_path: Path) -> None:
    url = server.route("/r.zip", Behaviour(body=b"\n  " + HTML, content_type="application/binary"))
    with pytest.raises(DownloadError, match="an HTML page \\(application/binary\\), not a zip"):
        fetch(dest=tmp_path, urls=[url], **FAST)
    assert [p.name for p in tmp_path.iterdir()] == ["r.zip.lock"]


def test_other_non_zip_body(server: Server, tmp_path: Path) -> None:
    url = server.route("/r.zip", Behaviour(body=b"BZh91AY&SY bzip2", content_type=""))
    with pytest.raises(
        DownloadError, match=r"not a zip or tar\.gz \(no Content-Type, starts with b'BZh91AY&'"
    ) as e:
        fetch(dest=tmp_path, urls=[url], **FAST)
    # The server answered with a file: another copy of the link would be the same one.
    assert "--from" not in str(e.value)
    assert [p.name for p in tmp_path.iterdir()] == ["r.zip.lock"]


def test_wrong_sha256_removes_the_download(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    url = server.route("/r.zip", Behaviour(body=release_zip))
    with pytest.raises(DownloadError) as e:
        fetch(dest=tmp_path, urls=[url], sha256="AB" * 32, **FAST)
    assert str(e.value) == (
        f"could not download r.zip: {url} -> SHA-256 mismatch: "
        f"expected {'ab' * 32}, got {sha(release_zip)}"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["r.zip.lock"]


def test_right_sha256_is_accepted(server: Server, release_zip: bytes, tmp_path: Path) -> None:
    url = server.route("/r.zip", Behaviour(body=release_zip))
    r = fetch(dest=tmp_path, urls=[url], sha256=sha(release_zip).upper(), **FAST)
    assert r.sha256 == sha(release_zip)


def test_malformed_sha256(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"--sha256 'abc' is not a SHA-256 hex digest"):
        fetch(dest=tmp_path, urls=["http://127.0.0.1:9/x.zip"], sha256="abc")


def test_read_timeout_then_resume(server: Server, release_zip: bytes, tmp_path: Path) -> None:
    slow = Behaviour(body=release_zip, stall_after=1000, stall_seconds=2.0)
    url = server.route("/r.zip", slow, Behaviour(body=release_zip))
    t = time.monotonic()
    r = fetch(dest=tmp_path, urls=[url], backoff=0.001, timeout=(2.0, 0.3))
    assert time.monotonic() - t < 2.0
    assert ranges(server, "/r.zip") == [None, "bytes=1000-"]
    assert r.sha256 == sha(release_zip)


def test_read_timeout_gives_up(server: Server, release_zip: bytes, tmp_path: Path) -> None:
    url = server.route("/r.zip", Behaviour(body=release_zip, stall_after=0, stall_seconds=1.0))
    with pytest.raises(DownloadError) as e:
        fetch(dest=tmp_path, urls=[url], retries=1, backoff=0.001, timeout=(2.0, 0.2))
    assert str(e.value) == (
        f"could not download r.zip: {url} -> read timed out (gave up after 1 retry){hint(url)}"
    )


def test_connection_refused_names_what_to_do_and_removes_the_new_dest(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/r.zip"
    dest = tmp_path / "new" / "dest"
    with pytest.raises(DownloadError) as e:
        fetch(dest=dest, urls=[url], **FAST)
    assert str(e.value) == (
        f"could not download r.zip: {url} -> connection refused (gave up after 5 retries)"
        + hint(url)
    )
    # Both folders were made by this fetch, and it failed: neither is left.
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DownloadError, match=r"connection refused \(gave up after 0 retries\);"):
        fetch(dest=tmp_path, urls=[url], retries=0, **FAST)
    # A --dest that was there before stays (with the lock file).
    assert [p.name for p in tmp_path.iterdir()] == ["r.zip.lock"]


def test_a_new_dest_that_holds_a_partial_download_is_kept(
    server: Server, release_zip: bytes, corrupt_zip: tuple[bytes, str], tmp_path: Path
) -> None:
    url = server.route("/r.zip", Behaviour(body=release_zip, drop_after=1000))
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="connection dropped mid-transfer"):
        fetch(dest=dest, urls=[url], retries=0, **FAST)
    assert sorted(p.name for p in dest.iterdir()) == ["r.zip.lock", "r.zip.part", "r.zip.part.json"]
    # --from a zip that fails to unpack: the new folder it was to go into is removed.
    bad = tmp_path / "bad.zip"
    bad.write_bytes(corrupt_zip[0])
    with pytest.raises(InputError, match="is corrupt or truncated"):
        fetch(dest=tmp_path / "new", from_path=bad)
    assert not (tmp_path / "new").exists()


def test_unresolvable_host_is_retried_once(tmp_path: Path) -> None:
    """A name under the reserved .invalid TLD fails at resolution, without any network."""
    url = "http://danbert-test.invalid/x.zip"
    dest = tmp_path / "dest"
    t = time.monotonic()
    code, out, err = run("fetch", "--url", url, "--dest", str(dest))
    assert time.monotonic() - t < 10  # 1 retry after 1 s, not 5 (31 s)
    assert (code, out) == (5, "")
    assert err == (
        f"warning: {url}: host not found; retry 1/1 in 1.0 s\n"
        f"warning: {url}: host not found (gave up after 1 retry)\n"
        f"error: could not download x.zip: {url} -> host not found (gave up after 1 retry)"
        f"{hint(url)}\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(tls_ca: trustme.CA) -> Iterator[Server]:
    """An HTTPS server whose certificate a CA of the test's own signed: no client trusts it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(context)
    with Server(tls=context) as s:
        yield s


def test_untrusted_certificate_says_what_to_do_and_is_not_retried(
    tls_server: Server,
    tls_ca: trustme.CA,
    release_zip: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = tls_server.route("/r.zip", Behaviour(body=release_zip))
    code, out, err = run("-q", "fetch", "--url", url, "--dest", str(tmp_path))
    assert (code, out) == (5, "")
    assert err.splitlines()[-1] == (
        f"error: could not download r.zip: {url} -> TLS certificate not trusted (unable to get "
        f"local issuer certificate) (gave up after 0 retries){hint(url)}"
    )
    assert tls_server.records == []  # no request was sent over a connection not trusted
    # What the README advises behind a proxy that inspects TLS: trust its CA certificate.
    with tls_ca.cert_pem.tempfile() as ca_file:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_file)
        assert fetch(dest=tmp_path, urls=[url], **FAST).sha256 == sha(release_zip)


def test_tls_handshake_failure_is_retried_once_and_says_what_to_do(
    server: Server, tmp_path: Path
) -> None:
    """https:// to a server that speaks plain HTTP: the handshake fails."""
    server.route("/r.zip", Behaviour(body=b"PK\x03\x04"))
    url = server.url("/r.zip").replace("http://", "https://")
    with pytest.raises(DownloadError) as e:
        fetch(dest=tmp_path, urls=[url], **FAST)
    assert str(e.value) == (
        f"could not download r.zip: {url} -> TLS handshake failed (wrong version number) "
        f"(gave up after 1 retry){hint(url)}"
    )


@pytest.mark.parametrize(
    ("status", "reason"), [(401, "Unauthorized"), (403, "Forbidden"), (404, "Not Found")]
)
def test_http_4xx_says_what_to_do(server: Server, tmp_path: Path, status: int, reason: str) -> None:
    url = server.route("/r.zip", Behaviour(status=status, body=b"no", content_type="text/plain"))
    code, out, err = run("-q", "fetch", "--url", url, "--dest", str(tmp_path))
    assert (code, out) == (5, "")
    assert err.splitlines()[-1] == (
        f"error: could not download r.zip: {url} -> HTTP {status} {reason}{hint(url)}"
    )
    assert len(server.requests_to("/r.zip")) == 1  # a 4xx is not retried


def test_ctrl_c_keeps_the_part_then_resumes(
    server: Server, release_zip: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "CHUNK", 4096)
    url = server.route("/r.zip", Behaviour(body=release_zip))

    def interrupt(done: int, total: int | None) -> None:
        if done >= 3 * 4096:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch(dest=tmp_path, urls=[url], on_progress=interrupt, **FAST)
    kept = (tmp_path / "r.zip.part").stat().st_size
    assert 0 < kept < len(release_zip)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "r.zip.lock",
        "r.zip.part",
        "r.zip.part.json",
    ]
    r = fetch(dest=tmp_path, urls=[url], **FAST)
    assert ranges(server, "/r.zip") == [None, f"bytes={kept}-"]
    assert server.requests_to("/r.zip")[1].sent == len(release_zip) - kept
    assert r.sha256 == sha(release_zip) and r.resumed_from == kept


def test_second_run_downloads_nothing(server: Server, release_zip: bytes, tmp_path: Path) -> None:
    url = server.route("/r.zip", Behaviour(body=release_zip))
    first = fetch(dest=tmp_path, urls=[url], **FAST)
    again = fetch(dest=tmp_path, urls=[url], **FAST)
    assert len(server.records) == 1
    assert (again.downloaded, again.unpacked) == (False, False)
    assert again.sha256 == first.sha256 and again.checkpoint_dir == first.checkpoint_dir
    forced = fetch(dest=tmp_path, urls=[url], force=True, **FAST)
    assert len(server.records) == 2 and forced.downloaded and forced.unpacked


def test_existing_zip_that_changed_is_not_trusted(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    url = server.route("/r.zip", Behaviour(body=release_zip))
    fetch(dest=tmp_path, urls=[url], do_unpack=False, **FAST)
    (tmp_path / "r.zip").write_bytes(release_zip[:-1] + b"!")
    with pytest.raises(DownloadError) as e:
        fetch(dest=tmp_path, urls=[url], **FAST)
    now = sha(release_zip[:-1] + b"!")
    assert str(e.value) == (
        f"{tmp_path / 'r.zip'} exists but its SHA-256 is {now}, expected {sha(release_zip)}; "
        "delete it (or use --force) to download again"
    )
    assert len(server.records) == 1


def test_from_local_zip(release_zip: bytes, tmp_path: Path) -> None:
    z = tmp_path / "mine.zip"
    z.write_bytes(release_zip)
    r = fetch(dest=tmp_path / "out", from_path=z)
    assert r.checkpoint_dir == tmp_path / "out" / NAME and r.sha256 == sha(release_zip)
    assert (r.downloaded, r.source) == (False, str(z))
    with pytest.raises(DownloadError, match=rf"mine\.zip: SHA-256 mismatch: expected {'0' * 64}"):
        fetch(dest=tmp_path / "out2", from_path=z, sha256="0" * 64)
    assert not (tmp_path / "out2").exists()


def test_from_folder_is_used_in_place(full_release: Path, tmp_path: Path) -> None:
    r = fetch(dest=tmp_path, from_path=full_release)
    assert r.checkpoint_dir == full_release and r.zip_path is None
    assert list(tmp_path.iterdir()) == []


def test_from_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothing: no such file or folder"):
        fetch(dest=tmp_path, from_path=tmp_path / "nothing")


def test_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(
        InputError, match=r"unknown model 'danish' \(known: danish-bert-uncased-v2,"
    ):
        fetch("danish", tmp_path)


def test_download_needs_a_url(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no URL to download from"):
        download([], tmp_path / "x.zip")


def test_filename_from_url() -> None:
    assert filename_from_url("https://www.dropbox.com/s/x/danish.zip?dl=1") == "danish.zip"
    assert filename_from_url("http://h/a%20b") == "a_b.zip"
    assert filename_from_url("http://h/../..") == "download.zip"


# The command line, in-process.


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_cli_fetch_prints_the_checkpoint_folder(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    url = server.route("/r.zip", Behaviour(body=release_zip))
    code, out, err = run("-q", "fetch", "--url", url, "--dest", str(tmp_path))
    assert (code, out, err) == (0, f"{tmp_path / NAME}\n", "")
    code, out, _ = run("fetch", "--url", url, "--dest", str(tmp_path), "--json")
    d = json.loads(out)
    assert code == 0 and d["sha256"] == sha(release_zip) and d["downloaded"] is False
    assert d["checkpoint_dir"] == str(tmp_path / NAME) and d["zip_path"] == str(tmp_path / "r.zip")


def test_cli_download_error_is_one_line_exit_5(server: Server, tmp_path: Path) -> None:
    url = server.route("/r.zip", Behaviour(body=HTML, content_type="text/html"))
    code, out, err = run("-q", "fetch", "--url", url, "--dest", str(tmp_path))
    assert code == 5 and out == ""
    assert err == (
        f"warning: {url}: an HTML page (text/html), not a zip: the link is dead or rate-limited\n"
        f"error: could not download r.zip: {url} -> an HTML page (text/html), not a zip: "
        f"the link is dead or rate-limited{hint(url)}\n"
    )


def test_cli_input_error_exit_3(tmp_path: Path) -> None:
    code, _, err = run("fetch", "--from", str(tmp_path / "nothing"))
    assert (code, err) == (3, f"error: {tmp_path / 'nothing'}: no such file or folder\n")


def test_cli_models() -> None:
    code, out, _ = run("models", "--json")
    doc = json.loads(out)
    rows = doc["models"]
    assert code == 0 and doc["ok"] is True
    assert [r["name"] for r in rows if r["default"]] == ["danish-bert-uncased-v2"]
    v2 = rows[0]
    assert v2["urls"] == [
        "https://www.dropbox.com/s/19cjaoqvv2jicq9/danish_bert_uncased_v2.zip?dl=1"
    ]
    code, out, _ = run("models")
    assert code == 0 and out.splitlines()[1].split()[:3] == ["*", "danish-bert-uncased-v2", "da"]
    assert "BROKEN" in out


def test_cli_ctrl_c_exits_130_and_resumes(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    """A real SIGINT to a real `danbert fetch` process stalled mid-transfer."""
    url = server.route(
        "/r.zip",
        Behaviour(body=release_zip, stall_after=5000, stall_seconds=30),
        Behaviour(body=release_zip),
    )
    cmd = [sys.executable, "-m", "danbert_convert", "fetch", "--url", url, "--dest", str(tmp_path)]
    env = {**os.environ, "NO_PROXY": "*"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    part = tmp_path / "r.zip.part"
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size == 5000):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.decode().endswith(
        f"warning: the partial download in {tmp_path} is kept; run the same command to resume\n"
        "interrupted\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "r.zip.lock",
        "r.zip.part",
        "r.zip.part.json",
    ]
    code, out2, _ = run("-q", "fetch", "--url", url, "--dest", str(tmp_path))
    assert (code, out2) == (0, f"{tmp_path / NAME}\n")
    assert ranges(server, "/r.zip") == [None, "bytes=5000-"]


# Several fetches into one --dest at once: one downloads, the others wait and reuse its zip.


def fetch_cmd(url: str, dest: Path) -> list[str]:
    return [sys.executable, "-m", "danbert_convert", "fetch", "--url", url, "--dest", str(dest)]


def wait_until(ok: Callable[[], bool], procs: list[subprocess.Popen[bytes]], what: str) -> None:
    deadline = time.monotonic() + 60
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        for p in procs:
            assert p.poll() is None, f"pid {p.pid} exited early with {p.returncode}"
        time.sleep(0.05)


def size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else -1


@pytest.mark.parametrize("with_sha256", [False, True], ids=["no-sha256", "sha256"])
def test_three_fetches_at_once_download_once(
    server: Server, release_zip: bytes, tmp_path: Path, with_sha256: bool
) -> None:
    """Three real processes; the server holds the first download at 5000 bytes until the
    other two say they are waiting."""
    gate = threading.Event()
    url = server.route(
        "/r.zip",
        Behaviour(body=release_zip, stall_after=5000, gate=gate),
        Behaviour(body=release_zip),
    )
    dest = tmp_path / "dest"
    cmd = fetch_cmd(url, dest) + (["--sha256", sha(release_zip)] if with_sha256 else [])
    env = {**os.environ, "NO_PROXY": "*"}
    errs = [tmp_path / f"stderr{i}.txt" for i in range(3)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for path in errs:
            with open(path, "wb") as err:
                procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env))

        def two_wait_on_one_download() -> bool:
            waiting = sum("waiting for it" in p.read_text() for p in errs)
            return waiting == 2 and size_of(dest / "r.zip.part") == 5000

        wait_until(two_wait_on_one_download, procs, "two fetches wait on one download")
    finally:
        gate.set()
    outs = [p.communicate(timeout=60)[0].decode() for p in procs]
    texts = [p.read_text() for p in errs]
    assert [p.returncode for p in procs] == [0, 0, 0], texts
    assert outs == [f"{dest / NAME}\n"] * 3
    assert len(server.requests_to("/r.zip")) == 1
    assert (dest / "r.zip").read_bytes() == release_zip
    assert (dest / "r.zip.sha256").read_text() == f"{sha(release_zip)}  r.zip\n"
    assert sorted(p.name for p in dest.iterdir()) == [NAME, "r.zip", "r.zip.lock", "r.zip.sha256"]
    (downloader,) = [p for p, t in zip(procs, texts, strict=True) if "waiting" not in t]
    for p, text in zip(procs, texts, strict=True):
        if p is not downloader:
            assert (
                f"warning: another fetch is downloading r.zip into {dest} "
                f"(pid {downloader.pid}); waiting for it\n"
            ) in text
            assert f"{dest / 'r.zip'} already downloaded; checking it\n" in text


def test_a_waiting_fetch_takes_over_when_the_downloader_dies(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    gate = threading.Event()
    etag = {"ETag": '"v1"'}
    url = server.route(
        "/r.zip",
        Behaviour(body=release_zip, stall_after=5000, gate=gate, headers=etag),
        Behaviour(body=release_zip, headers=etag),
    )
    env = {**os.environ, "NO_PROXY": "*"}
    err = tmp_path / "stderr.txt"
    try:
        first = subprocess.Popen(fetch_cmd(url, tmp_path), stderr=subprocess.DEVNULL, env=env)
        wait_until(lambda: size_of(tmp_path / "r.zip.part") == 5000, [first], "5000 bytes")
        with open(err, "wb") as f:
            second = subprocess.Popen(
                fetch_cmd(url, tmp_path), stdout=subprocess.PIPE, stderr=f, env=env
            )
        wait_until(lambda: "waiting for it" in err.read_text(), [first, second], "it waits")
        first.kill()
        first.wait()
        out, _ = second.communicate(timeout=60)
    finally:
        gate.set()
    text = err.read_text()
    assert second.returncode == 0, text
    assert out.decode() == f"{tmp_path / NAME}\n"
    assert f"(pid {first.pid}); waiting for it\n" in text
    assert "resuming r.zip.part at 5000 bytes\n" in text
    later = server.requests_to("/r.zip", wait=0)[1]
    assert (later.headers["Range"], later.headers["If-Range"]) == ("bytes=5000-", '"v1"')
    assert (tmp_path / "r.zip").read_bytes() == release_zip
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        NAME,
        "r.zip",
        "r.zip.lock",
        "r.zip.sha256",
        "stderr.txt",
    ]


def test_force_waits_and_reuses_what_the_other_fetch_downloaded(
    server: Server, release_zip: bytes, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    """Two threads: a lock taken with another file descriptor excludes within a process too."""
    gate = threading.Event()
    url = server.route(
        "/r.zip",
        Behaviour(body=release_zip, stall_after=5000, gate=gate),
        Behaviour(body=release_zip),
    )
    results: dict[str, object] = {}

    def run_fetch(key: str, **kwargs: object) -> None:
        try:
            results[key] = fetch(dest=tmp_path, urls=[url], **FAST, **kwargs)  # type: ignore[arg-type]
        except BaseException as e:
            results[key] = e

    first = threading.Thread(target=run_fetch, args=("first",))
    forced = threading.Thread(target=run_fetch, args=("forced",), kwargs={"force": True})
    try:
        first.start()
        wait_until(lambda: size_of(tmp_path / "r.zip.part") == 5000, [], "5000 bytes")
        forced.start()
        wait_until(lambda: "waiting for it" in logs.text, [], "the forced fetch waits")
    finally:
        gate.set()
        first.join(30)
        forced.join(30)
    r = results["forced"]
    assert isinstance(r, fetch_mod.FetchResult), r
    assert (r.downloaded, r.sha256) == (False, sha(release_zip))
    assert len(server.requests_to("/r.zip")) == 1
    assert "was just downloaded by the fetch we waited for; using it" in logs.text


# Resuming only the file the `.part` began with.


@pytest.mark.parametrize(
    "before, after, if_range",
    [
        ({"ETag": '"a"'}, {"ETag": '"b"'}, '"a"'),
        (
            {"ETag": 'W/"a"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"},
            {"ETag": 'W/"b"', "Last-Modified": "Tue, 02 Jan 2024 00:00:00 GMT"},
            "Mon, 01 Jan 2024 00:00:00 GMT",  # a weak ETag never goes in If-Range
        ),
    ],
    ids=["etag", "last-modified"],
)
def test_resume_of_a_changed_file_starts_over(
    server: Server,
    release_zip: bytes,
    other_zip: bytes,
    tmp_path: Path,
    logs: pytest.LogCaptureFixture,
    before: dict[str, str],
    after: dict[str, str],
    if_range: str,
) -> None:
    n = 1000
    url = server.route(
        "/r.zip",
        Behaviour(body=release_zip, drop_after=n, headers=before),
        Behaviour(body=other_zip, headers=after),
    )
    with pytest.raises(DownloadError, match="connection dropped mid-transfer"):
        fetch(dest=tmp_path, urls=[url], retries=0, **FAST)
    assert json.loads((tmp_path / "r.zip.part.json").read_text()) == {
        "url": url,
        "etag": before.get("ETag"),
        "last_modified": before.get("Last-Modified"),
        "size": len(release_zip),
    }
    r = fetch(dest=tmp_path, urls=[url], **FAST)
    later = server.requests_to("/r.zip")[1]
    assert (later.headers["Range"], later.headers["If-Range"]) == (f"bytes={n}-", if_range)
    assert later.status == 200
    assert (tmp_path / "r.zip").read_bytes() == other_zip and r.sha256 == sha(other_zip)
    assert (r.resumed_from, r.received) == (0, len(other_zip))
    assert r.checkpoint_dir == tmp_path / "other_release"
    assert (
        f"{url}: the file changed since r.zip.part began (If-Range not satisfied); "
        "starting over from byte 0"
    ) in logs.text
    assert not (tmp_path / "r.zip.part.json").exists()


@pytest.mark.parametrize(
    "before, after, if_range",
    [('"a"', '"b"', '"a"'), ('W/"a"', 'W/"b"', None)],
    ids=["strong", "weak"],
)
def test_server_ignoring_if_range_is_caught_by_the_etag(
    server: Server,
    release_zip: bytes,
    other_zip: bytes,
    tmp_path: Path,
    logs: pytest.LogCaptureFixture,
    before: str,
    after: str,
    if_range: str | None,
) -> None:
    n = 1000
    url = server.route(
        "/r.zip",
        Behaviour(body=release_zip, drop_after=n, headers={"ETag": before}),
        Behaviour(body=other_zip, headers={"ETag": after}, honour_if_range=False),
    )
    with pytest.raises(DownloadError):
        fetch(dest=tmp_path, urls=[url], retries=0, **FAST)
    r = fetch(dest=tmp_path, urls=[url], **FAST)
    assert ranges(server, "/r.zip") == [None, f"bytes={n}-", None]
    assert server.requests_to("/r.zip")[1].headers.get("If-Range") == if_range
    assert (tmp_path / "r.zip").read_bytes() == other_zip and r.sha256 == sha(other_zip)
    assert (
        f"{url}: the file changed since r.zip.part began (its ETag was {before}, now {after}); "
        "starting over from byte 0"
    ) in logs.text


def test_part_without_a_record_starts_over(
    server: Server, release_zip: bytes, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "r.zip.part").write_bytes(release_zip[:1000])
    url = server.route("/r.zip", Behaviour(body=release_zip))
    r = fetch(dest=tmp_path, urls=[url], do_unpack=False, **FAST)
    assert ranges(server, "/r.zip") == [None]
    assert r.sha256 == sha(release_zip)
    assert "r.zip.part: no record of where it came from (r.zip.part.json); starting over" in (
        logs.text
    )


def test_without_a_validator_only_the_same_url_resumes(
    server: Server, release_zip: bytes, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    n = 1000
    a = server.route("/a.zip", Behaviour(body=release_zip, drop_after=n))
    b = server.route("/b.zip", Behaviour(body=release_zip))
    with pytest.raises(DownloadError):
        fetch("danish-bert-uncased-v2", tmp_path, urls=[a], retries=0, do_unpack=False, **FAST)
    r = fetch("danish-bert-uncased-v2", tmp_path, urls=[b], do_unpack=False, **FAST)
    assert ranges(server, "/b.zip") == [None]
    assert (r.resumed_from, r.sha256) == (0, sha(release_zip))
    assert (
        f"{b}: {NAME}.zip.part began at {a}, which gave no ETag or Last-Modified to check it "
        "against; starting over from byte 0"
    ) in logs.text


def test_content_length_shorter_than_the_body_keeps_nothing(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    """HTTP ends the body at the announced length, cleanly; the zip's tail is missing."""
    url = server.route("/r.zip", Behaviour(body=release_zip, length_delta=-100))
    code, out, err = run("-q", "fetch", "--url", url, "--dest", str(tmp_path))
    assert (code, out) == (5, "")
    n = len(release_zip) - 100
    assert err.splitlines()[-1].startswith(
        f"error: could not download r.zip: {url} -> the {n} bytes received are not a whole zip ("
    )
    assert [p.name for p in tmp_path.iterdir()] == ["r.zip.lock"]


def test_body_that_only_starts_like_a_zip_keeps_nothing(server: Server, tmp_path: Path) -> None:
    url = server.route("/r.zip", Behaviour(body=b"PK\x03\x04 and then nothing"))
    with pytest.raises(DownloadError) as e:
        fetch(dest=tmp_path, urls=[url], **FAST)
    assert str(e.value).startswith(
        f"could not download r.zip: {url} -> the 21 bytes received are not a whole zip ("
    )
    assert [p.name for p in tmp_path.iterdir()] == ["r.zip.lock"]


def test_zip_that_fails_to_unpack_is_not_trusted_next_time(
    server: Server, release_zip: bytes, corrupt_zip: tuple[bytes, str], tmp_path: Path
) -> None:
    bad, entry = corrupt_zip
    zip_path = tmp_path / "r.zip"
    url = server.route("/r.zip", Behaviour(body=bad))
    code, out, err = run("-q", "fetch", "--url", url, "--dest", str(tmp_path))
    assert (code, out) == (5, "")
    assert err.startswith(f"error: {zip_path}: entry {entry!r} is corrupt or truncated: ")
    assert err.endswith("; r.zip will not be trusted again: use --force to download it again\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zip", "r.zip.lock", "r.zip.untrusted"]
    assert (tmp_path / "r.zip.untrusted").read_text().startswith(f"{sha(bad)}  entry {entry!r}")

    code, out, err = run("-q", "fetch", "--url", url, "--dest", str(tmp_path))
    assert (code, out) == (5, "")
    assert err.startswith(
        f"error: {zip_path} did not unpack in an earlier run (entry {entry!r} is corrupt or "
        "truncated: "
    )
    assert err.endswith("); it is not trusted: use --force to download it again\n")
    assert len(server.requests_to("/r.zip")) == 1

    # --force whose download fails leaves the zip and what is recorded about it as they were.
    server.route("/r.zip", Behaviour(status=404, body=b"gone", content_type="text/plain"))
    code, _, _ = run("-q", "fetch", "--url", url, "--dest", str(tmp_path), "--force")
    assert code == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zip", "r.zip.lock", "r.zip.untrusted"]
    server.route("/r.zip", Behaviour(body=release_zip))  # the server has a good copy now
    code, out, _ = run("-q", "fetch", "--url", url, "--dest", str(tmp_path), "--force")
    assert (code, out) == (0, f"{tmp_path / NAME}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        NAME,
        "r.zip",
        "r.zip.lock",
        "r.zip.sha256",
    ]
    assert (tmp_path / "r.zip.sha256").read_text() == f"{sha(release_zip)}  r.zip\n"


# The zip signature, however the server splits it.


@pytest.mark.parametrize("first", [1, 2, 3])
def test_zip_signature_split_across_reads(
    server: Server, release_zip: bytes, tmp_path: Path, first: int
) -> None:
    url = server.route("/r.zip", Behaviour(body=release_zip, stall_after=first, stall_seconds=0.3))
    r = fetch(dest=tmp_path, urls=[url], do_unpack=False, **FAST)
    assert (tmp_path / "r.zip").read_bytes() == release_zip and r.sha256 == sha(release_zip)


def test_html_split_across_reads_is_still_html(server: Server, tmp_path: Path) -> None:
    body = b"\n  " + HTML
    url = server.route(
        "/r.zip", Behaviour(body=body, content_type="", stall_after=2, stall_seconds=0.3)
    )
    with pytest.raises(DownloadError, match=r"r\.zip -> an HTML page \(no Content-Type\)"):
        fetch(dest=tmp_path, urls=[url], **FAST)


# A download that ends cleanly before the announced end is never complete.


def test_206_that_stops_short_is_continued_not_kept(
    server: Server, release_zip: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(http.time, "sleep", sleeps.append)
    n, size = 1000, len(release_zip)
    k = (size - n) // 3 + 1
    etag = {"ETag": '"v"'}
    url = server.route(
        "/r.zip",
        Behaviour(body=release_zip, drop_after=n, headers=etag),
        Behaviour(body=release_zip, max_range=k, headers=etag),
    )
    r = fetch(dest=tmp_path, urls=[url], do_unpack=False, **FAST)
    assert ranges(server, "/r.zip") == [None] + [f"bytes={n + i * k}-" for i in range(3)]
    recs = server.requests_to("/r.zip")
    assert [x.status for x in recs] == [200, 206, 206, 206]
    assert [x.sent for x in recs] == [n, k, k, size - n - 2 * k]
    assert (tmp_path / "r.zip").read_bytes() == release_zip and r.sha256 == sha(release_zip)
    assert len(sleeps) == 1  # after the drop; a short 206 is followed up at once


def test_body_shorter_than_content_length_is_never_complete(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    """The server announces 100 bytes more than it sends, then closes the connection."""
    url = server.route("/r.zip", Behaviour(body=release_zip, length_delta=100))
    code, _, err = run("-q", "fetch", "--url", url, "--dest", str(tmp_path))
    assert code == 5
    size = len(release_zip)
    assert err.splitlines()[-1] == (
        f"error: could not download r.zip: {url} -> r.zip.part does not fit the file on the "
        f"server (its size was {size + 100} bytes, now {size}) (gave up after 3 restarts)"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["r.zip.lock"]
    url = server.route(
        "/r.zip", Behaviour(body=release_zip, length_delta=100), Behaviour(body=release_zip)
    )
    r = fetch(dest=tmp_path, urls=[url], do_unpack=False, **FAST)
    assert (tmp_path / "r.zip").read_bytes() == release_zip and r.sha256 == sha(release_zip)

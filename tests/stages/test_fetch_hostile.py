"""Review of issue 10: a server without an end, and damaged records beside the zip."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from httpserver import Behaviour, Server
from zips import zip_folder

NAME = "danish_bert_uncased_v2"


pytestmark = pytest.mark.usefixtures("local_network")


@pytest.fixture(scope="session")
def release_zip(full_release: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    z = tmp_path_factory.mktemp("zip") / f"{NAME}.zip"
    return zip_folder(full_release, z, NAME).read_bytes()


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as s:
        yield s


def run(*args: str) -> tuple[int, str, str]:
    """The real `danbert` in a subprocess (tracebacks and exit codes as a user sees them)."""
    p = subprocess.run(
        [sys.executable, "-m", "danbert_convert", *args], capture_output=True, text=True
    )
    return p.returncode, p.stdout, p.stderr


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_body_without_length_over_the_limit_is_refused(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    """No Content-Length and no end in sight: once past the size cap, stop and keep nothing
    (it filled 58 GB of disk before)."""
    from danbert_convert.errors import DownloadError
    from danbert_convert.stages.fetch import fetch

    url = server.route("/r.zip", Behaviour(body=release_zip, no_length=True))
    limit = len(release_zip) // 2
    with pytest.raises(DownloadError) as e:
        fetch(dest=tmp_path, urls=[url], max_total=limit, backoff=0.001, retries=0)
    assert str(e.value) == (
        f"could not download r.zip: {url} -> the server sent more than {limit} bytes, the "
        "limit; refusing it"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zip.lock"]
    # Under the limit the same server works: the body ends when the connection closes.
    r = fetch(dest=tmp_path, urls=[url], do_unpack=False, backoff=0.001)
    assert (tmp_path / "r.zip").read_bytes() == release_zip and r.sha256 == sha(release_zip)


def test_announced_size_over_the_limit_is_refused_before_the_body(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    from danbert_convert.errors import DownloadError
    from danbert_convert.stages.fetch import fetch

    url = server.route("/r.zip", Behaviour(body=release_zip))
    limit = len(release_zip) - 1
    with pytest.raises(DownloadError) as e:
        fetch(dest=tmp_path, urls=[url], max_total=limit, backoff=0.001, retries=0)
    assert str(e.value) == (
        f"could not download r.zip: {url} -> the file is {len(release_zip)} bytes, over the "
        f"limit of {limit}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zip.lock"]


GARBAGE = b"\xff\xfe\x00 not text\n"


@pytest.mark.parametrize("record", [".sha256", ".untrusted"])
def test_damaged_record_beside_the_zip_is_one_line(
    server: Server, release_zip: bytes, tmp_path: Path, record: str
) -> None:
    """A .sha256 or .untrusted that is not UTF-8 gave a UnicodeDecodeError traceback."""
    url = server.route("/r.zip", Behaviour(body=release_zip))
    args = ("-q", "fetch", "--url", url, "--dest", str(tmp_path), "--no-unpack", "--json")
    assert run(*args)[0] == 0
    (tmp_path / f"r.zip{record}").write_bytes(GARBAGE)
    code, out, err = run(*args)
    if record == ".sha256":
        # A damaged digest record is no record: the zip is re-hashed and the record rewritten.
        assert (code, err) == (0, "")
        assert json.loads(out)["sha256"] == sha(release_zip)
        assert (tmp_path / "r.zip.sha256").read_text() == f"{sha(release_zip)}  r.zip\n"
    else:
        # A damaged distrust marker still means: not trusted.
        assert code == 5
        assert err == (
            f"error: {tmp_path / 'r.zip'} did not unpack in an earlier run (r.zip.untrusted is "
            "unreadable); it is not trusted: use --force to download it again\n"
        )
        assert json.loads(out) == {"ok": False, "error": err[len("error: ") : -1], "exit_code": 5}
        assert (tmp_path / "r.zip").read_bytes() == release_zip
    assert len(server.requests_to("/r.zip")) == 1


@pytest.mark.parametrize(
    "record",
    [
        b"[" * 100_000 + b"]" * 100_000,  # RecursionError in json
        b"\xff\xfe",
        b'"a string"',
        b"[1, 2]",
        b'{"url": 5}',
        b'{"url": "x", "size": "big"}',
        b'{"url": "x", "etag": ' + b'"' + b"e" * (1 << 20) + b'"}',  # too big to read
    ],
    ids=["deep", "binary", "string", "list", "url-int", "size-str", "huge"],
)
def test_damaged_part_record_starts_over(
    server: Server, release_zip: bytes, tmp_path: Path, record: bytes
) -> None:
    url = server.route("/r.zip", Behaviour(body=release_zip))
    (tmp_path / "r.zip.part").write_bytes(release_zip[:1000])
    (tmp_path / "r.zip.part.json").write_bytes(record)
    code, out, err = run("-q", "fetch", "--url", url, "--dest", str(tmp_path), "--no-unpack")
    assert (code, out) == (0, f"{tmp_path / 'r.zip'}\n")
    assert err == (
        f"warning: {tmp_path / 'r.zip.part'}: no record of where it came from "
        "(r.zip.part.json); starting over\n"
    )
    assert (tmp_path / "r.zip").read_bytes() == release_zip
    assert (tmp_path / "r.zip.sha256").read_text() == f"{sha(release_zip)}  r.zip\n"
    assert [r.headers.get("Range") for r in server.requests_to("/r.zip")] == [None]

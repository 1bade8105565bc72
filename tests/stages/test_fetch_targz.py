"""Fetching tar.gz releases (ALBERT's) from a real local HTTP server and with --from."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from httpserver import Behaviour, Server
from zips import albert_like_folder, make_tar, member, tar_folder

from danbert_convert.errors import DownloadError
from danbert_convert.stages.fetch import fetch, filename_from_url

FAST = {"backoff": 0.001, "max_backoff": 0.01, "timeout": (2.0, 2.0)}
NAME = "albert_base_v2.tar.gz"
TGZ = "application/x-gzip"

pytestmark = pytest.mark.usefixtures("local_network")


@pytest.fixture(scope="session")
def albert_tgz(full_release: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A TF-written checkpoint in ALBERT's tarball layout, as albert_base_v2.tar.gz."""
    root = tmp_path_factory.mktemp("albert")
    folder = albert_like_folder(full_release, root / "albert_base")
    return tar_folder(folder, root / NAME, "albert_base").read_bytes()


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as s:
        yield s


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(*args: str) -> tuple[int, str, str]:
    """The real `danbert` in a subprocess (tracebacks and exit codes as a user sees them)."""
    p = subprocess.run(
        [sys.executable, "-m", "danbert_convert", *args], capture_output=True, text=True
    )
    return p.returncode, p.stdout, p.stderr


def test_download_unpack_and_reuse(server: Server, albert_tgz: bytes, tmp_path: Path) -> None:
    url = server.route(f"/{NAME}", Behaviour(body=albert_tgz, content_type=TGZ))
    r = fetch(dest=tmp_path, urls=[url], **FAST)
    top = tmp_path / "albert_base"
    assert (r.checkpoint_dir, r.unpacked, r.downloaded) == (top, True, True)
    assert (r.vocab, r.spm_model) == (None, top / "30k-clean.model")
    assert r.zip_path == tmp_path / NAME and r.sha256 == sha(albert_tgz)
    assert (tmp_path / f"{NAME}.sha256").read_text() == f"{sha(albert_tgz)}  {NAME}\n"
    assert (top / "model.ckpt-best.index").is_file() and (top / "variables").is_dir()
    again = fetch(dest=tmp_path, urls=[url], **FAST)
    assert (again.downloaded, again.unpacked, again.checkpoint_dir) == (False, False, top)
    assert len(server.requests_to(f"/{NAME}")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "albert_base",
        NAME,
        f"{NAME}.lock",
        f"{NAME}.sha256",
    ]


def test_interrupted_tar_gz_resumes_in_a_later_run(
    server: Server, albert_tgz: bytes, tmp_path: Path
) -> None:
    """The kept `.part` starts with gzip's signature, not a zip's: it is resumed."""
    n = len(albert_tgz) // 3
    url = server.route(
        f"/{NAME}",
        Behaviour(body=albert_tgz, content_type=TGZ, drop_after=n, headers={"ETag": '"v1"'}),
        Behaviour(body=albert_tgz, content_type=TGZ, headers={"ETag": '"v1"'}),
    )
    with pytest.raises(DownloadError):
        fetch(dest=tmp_path, urls=[url], **{**FAST, "retries": 0})
    assert (tmp_path / f"{NAME}.part").stat().st_size == n
    r = fetch(dest=tmp_path, urls=[url], **FAST)
    assert r.resumed_from == n and r.sha256 == sha(albert_tgz)
    assert server.requests_to(f"/{NAME}")[-1].headers["Range"] == f"bytes={n}-"
    assert r.spm_model == tmp_path / "albert_base" / "30k-clean.model"


def test_complete_gzip_with_a_bad_crc_is_not_kept(
    server: Server, albert_tgz: bytes, tmp_path: Path
) -> None:
    bad = bytearray(albert_tgz)
    bad[-8] ^= 0xFF  # the CRC32 in gzip's trailer
    url = server.route(f"/{NAME}", Behaviour(body=bytes(bad), content_type=TGZ))
    with pytest.raises(DownloadError) as e:
        fetch(dest=tmp_path, urls=[url], **FAST)
    assert str(e.value).startswith(
        f"could not download {NAME}: {url} -> the {len(bad)} bytes received are not a whole "
        "gzip (CRC check failed"
    )
    assert [p.name for p in tmp_path.iterdir()] == [f"{NAME}.lock"]


def test_content_length_shorter_than_the_body_keeps_nothing(
    server: Server, albert_tgz: bytes, tmp_path: Path
) -> None:
    """HTTP ends the body early and cleanly: the gzip's trailer is missing."""
    url = server.route(f"/{NAME}", Behaviour(body=albert_tgz, length_delta=-100))
    with pytest.raises(DownloadError) as e:
        fetch(dest=tmp_path, urls=[url], **FAST)
    n = len(albert_tgz) - 100
    assert str(e.value).startswith(
        f"could not download {NAME}: {url} -> the {n} bytes received are not a whole gzip ("
    )
    assert [p.name for p in tmp_path.iterdir()] == [f"{NAME}.lock"]


def test_damaged_tar_in_a_whole_gzip_is_not_trusted_until_force(
    server: Server, albert_tgz: bytes, tmp_path: Path
) -> None:
    """A whole gzip holding a tar cut short: kept (it is what the server has), marked
    untrusted when it fails to unpack, refused until --force downloads a good copy."""
    tar = gzip.decompress(albert_tgz)
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        last = tf.getmembers()[-1]
    bad = gzip.compress(tar[: last.offset])
    url = server.route(f"/{NAME}", Behaviour(body=bad, content_type=TGZ))
    code, out, err = run("-q", "fetch", "--url", url, "--dest", str(tmp_path))
    assert (code, out) == (5, "")
    assert err.startswith(f"error: {tmp_path / NAME}: damaged or truncated at byte ")
    assert err.endswith(f"; {NAME} will not be trusted again: use --force to download it again\n")
    assert len(err.splitlines()) == 1
    assert (tmp_path / f"{NAME}.untrusted").is_file()
    assert not (tmp_path / "albert_base").exists()

    code, _, err = run("-q", "fetch", "--url", url, "--dest", str(tmp_path))
    assert code == 5 and "did not unpack in an earlier run" in err
    assert len(server.requests_to(f"/{NAME}")) == 1

    server.route(f"/{NAME}", Behaviour(body=albert_tgz, content_type=TGZ))
    code, out, _ = run("-q", "fetch", "--url", url, "--dest", str(tmp_path), "--force")
    assert (code, out) == (0, f"{tmp_path / 'albert_base'}\n")
    assert not (tmp_path / f"{NAME}.untrusted").exists()


def test_cli_from_a_tar_gz(albert_tgz: bytes, tmp_path: Path) -> None:
    src = tmp_path / NAME
    src.write_bytes(albert_tgz)
    code, out, err = run("-q", "fetch", "--from", str(src), "--dest", str(tmp_path / "w"))
    assert (code, out, err) == (0, f"{tmp_path / 'w' / 'albert_base'}\n", "")
    code, out, _ = run("fetch", "--from", str(src), "--dest", str(tmp_path / "w"), "--json")
    d = json.loads(out)
    assert code == 0 and d["unpacked"] is False and d["sha256"] == sha(albert_tgz)
    assert d["spm_model"] == str(tmp_path / "w" / "albert_base" / "30k-clean.model")
    assert d["vocab"] is None


def test_from_a_tar_gz_named_zip_goes_by_its_bytes(
    albert_tgz: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "albert_base_v2.zip"
    src.write_bytes(albert_tgz)
    r = fetch(dest=tmp_path / "w", from_path=src)
    assert r.checkpoint_dir == tmp_path / "w" / "albert_base"
    assert f"{src}: named like a zip, but its bytes are a tar; unpacking it so" in caplog.text


def test_cli_from_a_hostile_tar_gz_is_one_line_exit_3(tmp_path: Path) -> None:
    src = make_tar(
        tmp_path / "evil.tar.gz",
        [
            member("rel/bert_config.json", b"{}"),
            member("rel/l", type=tarfile.SYMTYPE, linkname="/"),
        ],
    )
    code, out, err = run("-q", "fetch", "--from", str(src), "--dest", str(tmp_path / "w"))
    assert (code, out) == (3, "")
    assert err == f"error: {src}: entry 'rel/l' is a symbolic link; refusing it\n"
    assert not (tmp_path / "w").exists()


def test_filename_from_url_keeps_tar_names() -> None:
    base = "https://storage.googleapis.com/albert_models"
    assert filename_from_url(f"{base}/albert_base_v2.tar.gz") == "albert_base_v2.tar.gz"
    assert filename_from_url("http://h/x.tgz?dl=1") == "x.tgz"
    assert filename_from_url("http://h/x.tar") == "x.tar"
    assert filename_from_url("http://h/x.gz") == "x.gz.zip"

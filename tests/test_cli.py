"""The CLI's contract: Ctrl-C at any moment, JSON on every outcome, usage errors as such."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from httpserver import Behaviour, Server

from danbert_convert.cli import cli
from danbert_convert.stages.fetch import fetch
from danbert_convert.writer import MANIFEST_NAME

pytestmark = pytest.mark.usefixtures("local_network")

DANBERT = [sys.executable, "-m", "danbert_convert"]
SHA = "ab" * 32


def run(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args])


def json_error(stdout: str) -> dict:
    """stdout must be exactly one JSON object."""
    return json.loads(stdout)


def wait_for_our_code(proc: subprocess.Popen) -> None:
    """Wait until the child runs our code: it has loaded an extension module (json's, first).

    Before that the interpreter itself is starting up (site, encodings), where no Python
    program can catch a SIGINT. Without /proc, a fixed 0.1 s stands in.
    """
    maps = Path(f"/proc/{proc.pid}/maps")
    if not maps.exists():
        time.sleep(0.1)
        return
    deadline = time.monotonic() + 30
    while not any(s in maps.read_text() for s in ("lib-dynload", "site-packages")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.001)


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_ctrl_c_at_any_moment_is_130_and_one_line(full_release, tmp_path):
    """A real SIGINT to a real `danbert convert`, from its first imports to its last write."""
    outcomes = set()
    # None: the signal comes after the run ended (however long a loaded machine takes).
    for i, delay in enumerate([0, 0.03, 0.1, 0.2, 0.35, 0.5, 0.8, 1.2, None]):
        out = tmp_path / f"out{i}"
        proc = subprocess.Popen(
            [*DANBERT, "convert", str(full_release), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_our_code(proc)
        if delay is None:
            proc.wait(timeout=120)
        else:
            time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        outcomes.add(proc.returncode)
        for bad in ("Traceback", "Aborted!", "KeyboardInterrupt", "Exception ignored"):
            assert bad not in stderr, (delay, stderr)
        if proc.returncode == 130:
            assert stderr.splitlines()[-1] == "interrupted", (delay, stderr)
            assert stdout == ""
            assert not out.exists()
        else:
            assert proc.returncode == 0, (delay, stderr)
            assert (out / MANIFEST_NAME).is_file()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".out{i}.")] == []
    assert outcomes == {0, 130}, outcomes  # the signals landed while it ran, and after


def test_json_failures_print_a_json_object(full_release, tmp_path):
    """--json: every failure is {"error", "exit_code"} on stdout; stderr keeps its one line."""
    missing = tmp_path / "missing"
    cases = [
        (["inspect", missing, "--json"], 3, f"{missing}.index: checkpoint index not found"),
        (["verify", missing, "--json"], 3, f"{missing}: not a folder"),
        (["fetch", "--from", missing, "--dest", tmp_path / "w", "--json"], 3,
         f"{missing}: no such file or folder"),
        (["fetch", "--json", "--sha256", "xyz"], 2,
         "Invalid value for '--sha256': 'xyz' is not a SHA-256 hex digest (64 hex digits)"),
        (["fetch", "--url", "http://127.0.0.1:9/r.zip", "--from", full_release, "--json"], 2,
         "--url and --from exclude each other: download, or use a local copy"),
        (["inspect", "--json", full_release, "--no-such-option"], 2, None),
    ]  # fmt: skip
    for args, code, message in cases:
        r = run(*args)
        assert r.exit_code == code, (args, r.output)
        got = json_error(r.stdout)
        if message is None:  # click's own wording, which varies between its versions
            message = got["error"]
            assert "No such option" in message and "--no-such-option" in message
        assert got == {"error": message, "exit_code": code}, args
        assert r.stderr.splitlines()[-1] in (f"error: {message}", f"Error: {message}")
        assert "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_json_success_is_unchanged(full_release):
    r = run("inspect", full_release, "--json")
    assert r.exit_code == 0 and "error" not in json.loads(r.stdout)


def test_verify_json_failure_is_one_document(full_release, tmp_path):
    out = tmp_path / "out"
    assert run("convert", full_release, out).exit_code == 0
    config = out / "config.json"
    config.write_text(config.read_text().replace('"gelu"', '"relu"'))
    r = run("verify", out, "--json")
    assert r.exit_code == 6, r.output
    report = json.loads(r.stdout)  # one document: the report, which carries the error
    assert report["ok"] is False and report["exit_code"] == 6
    assert report["error"] == f"{out}: failed checks: parity"
    assert [c["status"] for c in report["checks"] if c["name"] == "parity"] == ["fail"]
    assert r.stderr.splitlines()[-1] == f"error: {out}: failed checks: parity"


@pytest.mark.parametrize("value", ["xyz", SHA[:-1], SHA + "0", "g" * 64, ""])
@pytest.mark.parametrize("command", ["fetch", "all"])
def test_malformed_sha256_is_a_usage_error(tmp_path, command, value):
    r = run(command, "--sha256", value, "--dest", tmp_path / "w", "--url", "http://127.0.0.1:9/")
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '--sha256': {value!r} is not a SHA-256 hex digest" in r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "w").exists()


def test_well_formed_sha256_is_normalised(full_release, tmp_path):
    """Upper case and surrounding blanks are fine, as fetch.check_sha256 allows."""
    zip_path = tmp_path / "r.zip"
    from zips import zip_folder

    zip_folder(full_release, zip_path, top="release")
    from danbert_convert._fs import sha256_file

    digest = sha256_file(zip_path)
    r = run("fetch", "--from", zip_path, "--dest", tmp_path / "w", "--sha256", f" {digest.upper()}")
    assert r.exit_code == 0, r.output
    r = run("fetch", "--from", zip_path, "--dest", tmp_path / "w2", "--sha256", SHA, "--json")
    assert r.exit_code == 5, r.output
    assert json_error(r.stdout)["exit_code"] == 5


@pytest.mark.parametrize("command", ["fetch", "all"])
def test_url_with_from_is_refused(full_release, tmp_path, command):
    url = "http://127.0.0.1:9/r.zip"
    r = run(command, "--url", url, "--from", full_release, "--dest", tmp_path / "w")
    assert r.exit_code == 2, r.output
    assert r.stderr.splitlines()[-1] == (
        "Error: --url and --from exclude each other: download, or use a local copy"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_fetch_api_refuses_urls_with_from_path(full_release, tmp_path):
    with pytest.raises(ValueError, match="urls and from_path exclude each other"):
        fetch(dest=tmp_path / "w", urls=["http://127.0.0.1:9/r.zip"], from_path=full_release)
    assert not (tmp_path / "w").exists()


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_fetch_json_interrupted(tmp_path):
    """Ctrl-C is an outcome too: with --json it is {"error": "interrupted", "exit_code": 130}."""
    with Server() as server:
        url = server.route("/r.zip", Behaviour(body=b"PK\x03\x04" + bytes(20000),
                                               stall_after=5000, stall_seconds=30))  # fmt: skip
        cmd = [*DANBERT, "fetch", "--url", url, "--dest", str(tmp_path), "--json"]
        env = {**os.environ, "NO_PROXY": "*"}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        part = tmp_path / "r.zip.part"
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size == 5000):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert json.loads(out) == {"error": "interrupted", "exit_code": 130}
    assert err.decode().splitlines()[-1] == "interrupted"


HEAVY = ("numpy", "requests", "tqdm", "tokenizers", "torch", "transformers", "tensorflow",
         "danbert_convert.stages.fetch", "danbert_convert.stages.convert",
         "danbert_convert.checkpoint", "danbert_convert.stages.verify",
         "danbert_convert.stages.workflow")  # fmt: skip


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["models"], ["convert", "--help"]])
def test_commands_that_do_no_work_import_no_stage(args):
    """Start-up stays fast by construction: each command imports its stage when it runs."""
    script = (
        "import sys\n"
        "from danbert_convert.__main__ import main\n"
        f"sys.argv = ['danbert', *{args!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"

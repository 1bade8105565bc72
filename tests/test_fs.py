"""Output folders: their mode, leftovers of killed runs, interrupted swaps, symlink loops."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tfckpt import TINY_CONFIG, bert_variables
from zips import zip_folder

from danbert_convert.cli import cli
from danbert_convert.output.manifest import MANIFEST_NAME

DANBERT = [sys.executable, "-m", "danbert_convert"]
# Big enough (34 MB of weights, written twice with --format both) that a conversion is
# still running when the test sees its temporary folder.
BIG = {
    **TINY_CONFIG,
    "hidden_size": 256,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "num_hidden_layers": 4,
    "vocab_size": 20000,
    "max_position_embeddings": 512,
}


def run(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args])


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def modes(root: Path) -> dict[str, int]:
    """Permission bits of `root` and everything in it, by path relative to `root`'s parent."""
    paths = [root, *root.rglob("*")]
    return {str(p.relative_to(root.parent)): stat.S_IMODE(p.stat().st_mode) for p in paths}


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["022", "077"])
def test_new_folders_get_the_mode_mkdir_gives(full_release, tmp_path, umask):
    """convert's OUT and fetch's unpacked folder: 0o777 less the umask, not mkdtemp's 0o700."""
    zip_path = zip_folder(full_release, tmp_path / "r.zip", top="release")
    jobs = [
        ["convert", str(full_release), str(tmp_path / "out")],
        ["fetch", "--from", str(zip_path), "--dest", str(tmp_path / "work")],
    ]
    for args in jobs:
        # The child's umask only: the test process's stays as it was.
        r = subprocess.run([*DANBERT, "-q", *args], capture_output=True, text=True, umask=umask)
        assert r.returncode == 0, r.stderr
    dirs, files = 0o777 & ~umask, 0o666 & ~umask
    for root in (tmp_path / "out", tmp_path / "work" / "release"):
        got = modes(root)
        want = {p: dirs if (root.parent / p).is_dir() else files for p in got}
        assert got == want
        assert len(got) > 3
    assert siblings(tmp_path / "work") == ["release"]


def test_sigkill_leftovers_are_removed_by_the_next_run(release, tmp_path):
    src = release("big", cfg=BIG, variables=bert_variables(BIG))
    out = tmp_path / "out"
    cmd = [*DANBERT, "convert", str(src), str(out), "--format", "both"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    partial: Path | None = None
    while partial is None:
        assert proc.poll() is None, "the conversion ended before the test could kill it"
        assert time.monotonic() < deadline
        # Mid-write: the temporary folder holds files.
        partial = next((p for p in tmp_path.glob(".out.partial-*") if any(p.iterdir())), None)
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    assert partial.name.startswith(f".out.partial-{proc.pid}-")
    assert siblings(tmp_path) == [partial.name]  # the leftover the issue reports

    # Not ours to remove: a live process's folder, names not in our pattern, another OUT's.
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        keep = [
            f".out.partial-{live.pid}-0123abcd",
            f".out.old-{live.pid}-0123abcd",
            ".out.partial-x1y2z3ab",  # tempfile's names, before pids were recorded
            f".out.partial-{proc.pid}-notours",
            f".out2.partial-{proc.pid}-0123abcd",
        ]
        for name in keep:
            (tmp_path / name).mkdir()
            (tmp_path / name / "f").write_text("x")
        r = run("convert", src, out)
        assert r.exit_code == 0, r.output
        assert f"removed {partial}, left by an interrupted run (pid {proc.pid})\n" in r.stderr
        assert siblings(tmp_path) == sorted(["out", *keep])
        assert all((tmp_path / name / "f").read_text() == "x" for name in keep)
        assert (out / MANIFEST_NAME).is_file()
    finally:
        live.kill()
        live.wait()


def test_ctrl_c_while_removing_the_old_copy_is_not_a_failure(full_release, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run("convert", full_release, out).exit_code == 0
    assert not (out / "pytorch_model.bin").exists()

    def interrupted(path, *args, **kwargs):
        # Part of the old copy is gone when Ctrl-C lands, as in the report.
        next(Path(path).iterdir()).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", interrupted)
    r = run("convert", full_release, out, "--force", "--format", "both")
    monkeypatch.undo()
    assert r.exit_code == 0, r.output
    [old] = tmp_path.glob(".out.old-*")
    assert old.name.startswith(f".out.old-{os.getpid()}-")
    assert r.stderr.splitlines()[-1] == (
        f"warning: {out} is complete, but removing the previous copy {old} failed "
        f"(interrupted); the next run that writes {out} removes it"
    )
    assert r.stdout.startswith(f"{out}: BertForPreTraining, ")
    assert (out / "pytorch_model.bin").is_file()  # the new conversion is in place
    assert siblings(tmp_path) == sorted(["out", old.name])

    # The next run (here the same, still living process) removes what it left.
    r = run("convert", full_release, out, "--force")
    assert r.exit_code == 0, r.output
    assert f"removed {old}, left by an interrupted run (pid {os.getpid()})\n" in r.stderr
    assert siblings(tmp_path) == ["out"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_ctrl_c_between_the_two_renames_finishes_the_swap(full_release, tmp_path, monkeypatch):
    """A real SIGINT right after OUT moved aside: the new OUT still goes in, then success."""
    out = tmp_path / "out"
    assert run("convert", full_release, out).exit_code == 0
    real_replace = os.replace

    def replace(src, dst):
        real_replace(src, dst)
        if Path(dst).name.startswith(".out.old-"):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace)
    r = run("convert", full_release, out, "--force", "--format", "both")
    monkeypatch.undo()
    assert r.exit_code == 0, r.output
    assert f"warning: interrupted after {out} was complete; it is kept\n" in r.stderr
    assert (out / "pytorch_model.bin").is_file()
    assert siblings(tmp_path) == ["out"]
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C works again afterwards
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)


def test_stale_old_copy_is_kept_while_out_is_missing(full_release, tmp_path):
    """A run killed between the two renames leaves OUT only in its `.old-` copy."""
    out, pid = tmp_path / "out", dead_pid()
    old = tmp_path / f".out.old-{pid}-0123abcd"
    old.mkdir()
    (old / "config.json").write_text("{}")
    r = run("convert", full_release, out)
    assert r.exit_code == 0, r.output
    assert f"warning: {old} may be the previous {out} (a run was stopped replacing it)\n" in (
        r.stderr
    )
    assert siblings(tmp_path) == sorted(["out", old.name])
    r = run("convert", full_release, out, "--force")
    assert r.exit_code == 0, r.output
    assert siblings(tmp_path) == ["out"]


@pytest.fixture
def loop(tmp_path: Path) -> Path:
    """`loop` -> `loop2` -> `loop`."""
    (tmp_path / "loop").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop")
    return tmp_path / "loop"


def test_symlink_loop_as_src_or_out_is_one_line(full_release, tmp_path, loop):
    msg = f"{loop} is a symlink loop (too many levels of symbolic links)"
    cases = [
        (["convert", loop, tmp_path / "out"], 3, f"error: {msg}"),
        (["convert", full_release, loop], 4, f"error: {msg}"),
        (["convert", full_release, loop / "out"], 4, f"error: {loop / 'out'}: {msg}"),
        (["convert", full_release, loop / "a" / "b"], 4, f"error: {loop / 'a' / 'b'}: {msg}"),
        (["all", "--from", full_release, "--out", loop], 4, f"error: convert stage: {msg}"),
        (["all", "--from", loop, "--out", tmp_path / "out"], 3, None),
    ]
    zip_path = zip_folder(full_release, tmp_path / "r.zip", top="release")
    cases.append(
        (["fetch", "--from", zip_path, "--dest", loop], 4, f"error: {loop / 'release'}: {msg}")
    )
    for args, code, line in cases:
        r = run(*args)
        assert r.exit_code == code, (args, r.output)
        last = r.stderr.splitlines()[-1]
        assert "Traceback" not in r.output and "RuntimeError" not in r.output
        if line is not None:
            assert last == line, args
        else:
            assert last.startswith("error: fetch stage: ") and str(loop) in last
        assert siblings(tmp_path) == sorted(["loop", "loop2", "r.zip"]), args


def test_dangling_symlink_as_out_is_refused(full_release, tmp_path):
    (tmp_path / "out").symlink_to("gone")
    r = run("convert", full_release, tmp_path / "out")
    assert r.exit_code == 4, r.output
    want = f"error: {tmp_path / 'out'} is a symlink to gone, which is missing"
    assert r.stderr.splitlines()[-1] == want
    assert siblings(tmp_path) == ["out"]


def test_a_live_runs_folder_is_left_alone(full_release, tmp_path):
    """A run writing OUT keeps its hands off the temporary folder of a run still going."""
    from danbert_convert._fs import atomic_dir

    out = tmp_path / "out"
    # The other run is this very process, mid-write.
    with atomic_dir(out, force=True) as tmp:
        (tmp / "half").write_text("x")
        r = run("convert", full_release, out)
        assert r.exit_code == 0, r.output
        assert (tmp / "half").read_text() == "x"
        assert "removed" not in r.stderr
    assert siblings(tmp_path) == ["out"]


# --- the weight file's writer: writing and hashing on threads of their own -------------------


def test_pipelined_writer_writes_and_hashes_in_order(tmp_path):
    import hashlib

    from danbert_convert._fs import pipelined_writer

    rng = np.random.default_rng(1)
    parts = [rng.bytes(int(n)) for n in rng.integers(0, 3 << 20, size=40)]
    path = tmp_path / "w.bin"
    with pipelined_writer(path) as f:
        for p in parts:
            f.write(memoryview(p))
        digest = f.close()
    data = path.read_bytes()
    assert data == b"".join(parts)
    assert digest == hashlib.sha256(data).hexdigest()
    assert not [t for t in threading.enumerate() if t.name in ("write", "sha256")]


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_pipelined_writer_failure_surfaces_in_the_caller_and_stops_both_threads(tmp_path):
    # The kernel refuses bytes past RLIMIT_FSIZE as a full disk would; run in a child so the
    # limit binds nothing else.
    script = (
        "import resource, signal, sys, threading\n"
        "from pathlib import Path\n"
        "from danbert_convert._fs import pipelined_writer\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))\n"
        "written = 0\n"
        "try:\n"
        "    with pipelined_writer(Path(sys.argv[1])) as f:\n"
        "        for _ in range(100):\n"
        "            f.write(bytes(256 << 10))\n"
        "            written += 1\n"
        "except OSError as e:\n"
        "    print(written, e.filename, e.errno)\n"
        "print(sorted(t.name for t in threading.enumerate()))\n"
    )
    path = tmp_path / "w.bin"
    r = subprocess.run([sys.executable, "-c", script, str(path)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    raised, threads = r.stdout.strip().splitlines()
    count, filename, errno_ = raised.split()
    # The error reaches the caller within a few buffers of the one that failed (the queues
    # hold two), not after all 100, and names the file.
    assert int(count) < 10 and filename == str(path) and int(errno_) == 27
    assert threads == "['MainThread']"


def test_pipelined_writer_interrupted_stops_its_threads_before_the_file_closes(tmp_path):
    from danbert_convert._fs import pipelined_writer

    path = tmp_path / "w.bin"
    with pytest.raises(KeyboardInterrupt), pipelined_writer(path) as f:
        for i in range(20):
            f.write(bytes(1 << 20))
            if i == 5:
                raise KeyboardInterrupt
    assert not [t for t in threading.enumerate() if t.name in ("write", "sha256")]
    size = path.stat().st_size
    time.sleep(0.2)
    assert path.stat().st_size == size <= 6 << 20  # nothing was written after the interrupt


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_worker_threads_leave_ctrl_c_to_the_main_thread() -> None:
    """A SIGINT the kernel gave a worker would leave the main thread blocked in a socket read
    (fetch's hasher runs beside the download) until its timeout: workers block it."""
    from danbert_convert._fs import Worker

    masks: list[set[signal.Signals]] = []
    w: Worker[int] = Worker(
        lambda _: masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, [])), "t"
    )
    w.put(0)
    w.close()
    assert {signal.SIGINT, signal.SIGTERM} <= masks[0]
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # the caller's own

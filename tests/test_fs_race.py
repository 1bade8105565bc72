"""Review of issue 10: runs racing for one output folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from zips import zip_folder

from danbert_convert._fs import atomic_dir
from danbert_convert.errors import OutputExistsError

DANBERT = [sys.executable, "-m", "danbert_convert"]


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_out_written_by_another_run_meanwhile_is_not_replaced_without_force(tmp_path):
    """Two runs without --force both found OUT missing; the one that finished second
    replaced the first's OUT (a check, then a rename that replaced whatever was there)."""
    out = tmp_path / "out"
    with pytest.raises(OutputExistsError) as e, atomic_dir(out) as tmp:
        (tmp / "mine").write_text("second run")
        out.mkdir()  # the other run finished first
        (out / "theirs").write_text("first run")
    assert str(e.value) == (
        f"{out} exists and is not empty (another run wrote it meanwhile; use --force to replace it)"
    )
    assert sorted(p.name for p in out.iterdir()) == ["theirs"]
    assert siblings(tmp_path) == []

    # An empty folder that appeared meanwhile is no one's work: it is replaced.
    out2 = tmp_path / "out2"
    with atomic_dir(out2) as tmp:
        (tmp / "mine").write_text("x")
        out2.mkdir()
    assert sorted(p.name for p in out2.iterdir()) == ["mine"]
    # With force the other run's folder is replaced, as asked.
    with atomic_dir(out, force=True) as tmp:
        (tmp / "mine").write_text("x")
    assert sorted(p.name for p in out.iterdir()) == ["mine"]
    assert siblings(tmp_path) == []


def test_a_file_put_at_out_meanwhile_is_refused(tmp_path):
    out = tmp_path / "out"
    with (
        pytest.raises(OutputExistsError, match=r"out exists and is not a folder$"),
        atomic_dir(out) as tmp,
    ):
        (tmp / "mine").write_text("x")
        out.write_text("someone's file")
    assert out.read_text() == "someone's file" and siblings(tmp_path) == []


def test_concurrent_conversions_without_force_leave_one_out(full_release, tmp_path):
    """Four `danbert convert` into one new OUT at once: each either wrote OUT or was refused
    with exit 4, and OUT is one complete conversion, with no temporary sibling left."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [*DANBERT, "-q", "convert", str(full_release), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate() for p in procs]
    results = [(p.returncode, *o) for p, o in zip(procs, outputs, strict=True)]
    for code, _, err in results:
        assert code in (0, 4), err
        assert "Traceback" not in err
        if code == 4:
            assert err.splitlines()[-1].startswith(f"error: {out} exists and is not empty ")
    assert sum(code == 0 for code, _, _ in results) >= 1
    assert "model.safetensors" in os.listdir(out) and siblings(tmp_path) == []


def test_two_unpacks_of_one_zip_at_once_both_succeed(full_release, tmp_path):
    """`fetch --from ZIP` takes no lock; the unpack that finishes second uses the first's."""
    z = zip_folder(full_release, tmp_path / "r.zip", "rel")
    dest = tmp_path / "dest"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [*DANBERT, "-q", "fetch", "--from", str(z), "--dest", str(dest)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    for p in procs:
        out, err = p.communicate()
        assert (p.returncode, out, err) == (0, f"{dest / 'rel'}\n", "")
    assert siblings(dest) == []

"""Review of issue 10: Ctrl-C at any moment of start-up, with --json: one JSON document."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.parametrize("delay", [0.15, 0.3, 0.5])
def test_ctrl_c_during_start_up_with_json_prints_one_json_document(tmp_path, delay):
    """Ctrl-C while the CLI imports gave "interrupted" and 130 with nothing on stdout (and,
    in the first tens of milliseconds, a KeyboardInterrupt traceback from `import signal`)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = ["fetch", "--url", "http://127.0.0.1:9/x.zip", "--dest", str(tmp_path / "d")]
    p = subprocess.Popen(
        [sys.executable, "-m", "danbert_convert", *args, "--retries", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    # Either interrupted, or (on a fast machine) already failed to connect to the closed port.
    assert p.returncode in (130, 5), err
    assert "Traceback" not in err
    assert json.loads(out)["exit_code"] == p.returncode
    if p.returncode == 130:
        assert err.splitlines()[-1] == "interrupted"
        assert json.loads(out) == {"ok": False, "error": "interrupted", "exit_code": 130}

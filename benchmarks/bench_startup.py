"""Start-up time of the commands that do no work: `danbert --help`, `--version`, `models`.

Prints the median and the spread of wall time over fresh processes, next to the bare
interpreter's, so that a heavy import slipped into the CLI shows. Goal: at most 0.2 s each.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 15
GOAL = 0.2


def wall(cmd: list[str]) -> list[float]:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    danbert = shutil.which("danbert", path=str(Path(sys.executable).parent)) or "danbert"
    rows = [("python -c pass (floor)", [sys.executable, "-c", "pass"])]
    rows += [(f"danbert {a}", [danbert, a]) for a in ("--help", "--version", "models")]
    print(f"{RUNS} fresh processes each; Python {sys.version.split()[0]}")
    print(f"{'command':<26}{'median s':>9}{'min s':>8}{'max s':>8}")
    for name, cmd in rows:
        wall(cmd[:1] + cmd[1:])  # warm the page cache
        t = wall(cmd)
        flag = "" if name.startswith("python") or statistics.median(t) <= GOAL else "  over goal"
        print(f"{name:<26}{statistics.median(t):>9.3f}{min(t):>8.3f}{max(t):>8.3f}{flag}")


if __name__ == "__main__":
    main()

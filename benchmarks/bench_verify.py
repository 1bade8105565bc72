"""Benchmark: `danbert verify` on a BERT-base checkpoint shaped like the Danish release.

    .venv/bin/python benchmarks/bench_verify.py [--cache DIR] [--repeat N]

Reuses (or first writes) the checkpoint of bench_convert.py, converts it once, then runs
`python -m danbert_convert verify OUT --against SRC --json` (the package this interpreter
imports) in a fresh subprocess and prints its wall time (interpreter start, imports and every
model load included) and peak RSS. Goal: <= 15 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_convert import generate, run_child  # noqa: E402

GOAL_SECONDS = 15.0
# The package as this interpreter imports it (PYTHONPATH=src for a worktree), not the venv's
# `danbert` script, which runs whatever tree the venv was installed from.
CLI = (sys.executable, "-m", "danbert_convert")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=HERE / ".cache")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    src = generate(args.cache / "bert-base")
    out = args.cache / "bert-base-converted"
    if not (out / "danbert-manifest.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([*CLI, "-q", "convert", str(src), str(out)], check=True)
    argv = [*CLI, "-q", "verify", str(out), "--against", str(src), "--json"]
    runs = []
    for _ in range(args.repeat):
        r = run_child(argv)
        runs.append(r)
    best = min(runs, key=lambda r: r["wall"])
    print(f"checkpoint: {src} (BERT-base, vocab 32000, 12 layers)")
    for check in json.loads(best["stdout"])["checks"]:
        print(f"  {check['name']:<10} {check['status']:<5} {check['figure']}")
    print(f"danbert verify: {best['wall']:.2f} s wall, {best['rss'] / 1e6:.0f} MB peak RSS "
          f"(best of {len(runs)}; goal <= {GOAL_SECONDS:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()

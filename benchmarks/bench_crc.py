"""Benchmark: CRC-32C over the weights of a BERT-base checkpoint, as the native reader checks them.

    .venv/bin/python benchmarks/bench_crc.py [--cache DIR] [--repeat N]

Reads every model weight (not the Adam slots) of the bench_convert.py checkpoint into memory
once, then times the CRC of each tensor's bytes with each implementation installed: the
reader's own `bundle.crc32c` (google-crc32c), google-crc32c's C extension called directly,
and the LGPL `crc32c` package it replaced (if still installed). Every CRC is checked against
the one the .index stores. Prints the best of N runs per implementation, in GB/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_convert import generate  # noqa: E402

from danbert_convert.families.bert import skip_reason  # noqa: E402
from danbert_convert.readers import bundle  # noqa: E402


def load(prefix: Path) -> list[tuple[str, np.ndarray, int]]:
    """(name, raw bytes, stored masked CRC) of every weight, read without checking."""
    reader = bundle.BundleReader(prefix)
    out = []
    for name in reader.variables():
        if skip_reason(name) is not None:
            continue
        e = reader.entry(name)
        buf = np.empty(e.size, dtype=np.uint8)
        reader._read_into(reader._fd(e.shard_id, name), buf, e.offset, reader.data_path(0), name)
        out.append((name, buf, e.crc32c))
    reader.close()
    return out


def implementations() -> dict[str, Callable[[np.ndarray], int]]:
    impls: dict[str, Callable[[np.ndarray], int]] = {
        f"bundle.crc32c (google-crc32c, {bundle.CRC_IMPLEMENTATION})": bundle.crc32c,
    }
    import google_crc32c

    impls[f"google_crc32c.value ({google_crc32c.implementation})"] = google_crc32c.value
    try:
        import crc32c  # the LGPL package, until it is uninstalled
    except ImportError:
        pass
    else:
        impls["crc32c.crc32c (ICRAR, LGPL)"] = crc32c.crc32c
    return impls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=HERE / ".cache")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    src = generate(args.cache / "bert-base")
    tensors = load(src / "bert_model.ckpt")
    total = sum(buf.nbytes for _, buf, _ in tensors)
    print(f"{len(tensors)} weight tensors, {total / 1e6:.1f} MB, in memory")
    for label, fn in implementations().items():
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            crcs = [fn(buf) for _, buf, _ in tensors]
            best = min(best, time.perf_counter() - start)
        bad = [n for (n, _, want), got in zip(tensors, crcs, strict=True)
               if bundle.mask_crc(got) != want]  # fmt: skip
        verdict = "all match the index" if not bad else f"{len(bad)} MISMATCH, e.g. {bad[0]}"
        print(f"{label:<45} {best * 1e3:7.1f} ms  {total / best / 1e9:5.1f} GB/s  {verdict}")


if __name__ == "__main__":
    main()

"""Download throughput of `danbert fetch` beside curl's, and what a resume re-sends.

Serves a 1 GiB file (a stored zip of random bytes, made once in benchmarks/.cache)
from a local threaded HTTP server that answers with sendfile, then in the same run:
  - curl -o FILE, and our `download()` (which also hashes with SHA-256 as it writes),
    alternated, each `--runs` times; best and median MB/s;
  - a resume: the server drops the connection half-way, a second call resumes it; the bytes
    the server sent beyond the file's size are the bytes re-sent.

Usage: .venv/bin/python benchmarks/bench_fetch.py [--size-mib 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from httpserver import Behaviour, Server  # noqa: E402

from danbert_convert.errors import DownloadError  # noqa: E402
from danbert_convert.releases.http import DEFAULT_RETRY, download  # noqa: E402

CACHE = HERE / ".cache" / "fetch"


def source_file(payload: int) -> Path:
    """A stored zip of one `payload`-byte random entry (download() checks it is a whole zip)."""
    path = CACHE / f"zip-{payload}.zip"
    if path.is_file() and zipfile.is_zipfile(path):
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with (
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf,
        zf.open("data.bin", "w", force_zip64=payload > (1 << 31)) as f,
    ):
        left = payload
        while left:
            n = min(left, 64 << 20)
            f.write(os.urandom(n))
            left -= n
    os.replace(tmp, path)
    return path


def time_curl(url: str, out: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-o", str(out), url], check=True)
    return time.perf_counter() - t


def time_ours(url: str, out: Path) -> float:
    t = time.perf_counter()
    download([url], out, progress=False)
    return time.perf_counter() - t


def clean(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)
        for suffix in (".part", ".part.json"):
            p.with_name(p.name + suffix).unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("curl") is None:
        sys.exit("curl is not installed (apt-get install -y curl)")
    src = source_file(args.size_mib << 20)
    size = src.stat().st_size
    out_curl, out_ours = CACHE / "curl.out", CACHE / "ours.zip"
    print(f"source: {src} ({size / 1e9:.2f} GB); {os.cpu_count()} CPUs")

    with Server() as server:
        url = server.route("/f.zip", Behaviour(file=src))
        clean(out_curl, out_ours)
        time_curl(url, out_curl)  # warm the page cache with the source
        clean(out_curl)
        curl_s: list[float] = []
        ours_s: list[float] = []
        for _ in range(args.runs):
            curl_s.append(time_curl(url, out_curl))
            assert out_curl.stat().st_size == size
            clean(out_curl)
            ours_s.append(time_ours(url, out_ours))
            assert out_ours.stat().st_size == size
            clean(out_ours)

        def mbps(seconds: float) -> float:
            return size / seconds / 1e6

        for name, runs in (("curl", curl_s), ("danbert fetch", ours_s)):
            each = ", ".join(f"{mbps(s):.0f}" for s in runs)
            print(
                f"{name:>14}: best {mbps(min(runs)):6.0f} MB/s, median "
                f"{mbps(statistics.median(runs)):6.0f} MB/s  (runs: {each})"
            )
        ratio = min(curl_s) / min(ours_s)
        med_ratio = statistics.median(curl_s) / statistics.median(ours_s)
        print(f"{'ours / curl':>14}: {ratio:.2f}x best, {med_ratio:.2f}x median (goal >= 0.9x)")

        # Resume: the first call gives up when the connection drops half-way, the second
        # call (a new run, as after Ctrl-C) resumes the .part from disk.
        half = size // 2
        rpath = "/resume.zip"
        rurl = server.route(rpath, Behaviour(file=src, drop_after=half), Behaviour(file=src))
        try:
            download([rurl], out_ours, progress=False, retry=replace(DEFAULT_RETRY, retries=0))
        except DownloadError as e:
            print(f"first call: {e}")
        kept = out_ours.with_name(out_ours.name + ".part").stat().st_size
        t = time.perf_counter()
        r = download([rurl], out_ours, progress=False)
        resume_s = time.perf_counter() - t
        sent = sum(rec.sent for rec in server.requests_to(rpath))
        ranges = [rec.headers.get("Range") for rec in server.requests_to(rpath)]
        print(
            f"resume: {kept} bytes on disk, requests {ranges}, server sent {sent} bytes "
            f"for a {size}-byte file: re-sent {sent - size} bytes; "
            f"second call {resume_s:.2f} s (includes hashing the {kept}-byte .part)"
        )
        assert r.size == size and r.resumed_from == kept
        clean(out_ours, out_curl)


if __name__ == "__main__":
    main()

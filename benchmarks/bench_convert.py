"""Benchmark: reading a BERT-base checkpoint shaped like the Danish release, four ways.

    .venv/bin/python benchmarks/bench_convert.py [--cache DIR] [--repeat N]

The first run writes the checkpoint with TensorFlow (vocab 32000, 12 layers, hidden 768,
intermediate 3072, 512 positions, Adam slots and global_step: about 1.33 GB of data, 445 MB
of weights; random float32 values) under benchmarks/.cache/ and reuses it afterwards.

Then, each in a fresh subprocess, with the data file already in the page cache (the first
measurement would otherwise pay for the disk alone; --cold evicts it before every run):
  (a) copy: the byte range of every weight tensor from the data file into one output file,
      the I/O floor of any converter;
  (b) the TensorFlow reader reading every weight tensor;
  (c) the native reader (danbert_convert.tfbundle) reading every weight tensor;
  (d) `danbert convert SRC OUT`.
Wall time is measured around the whole subprocess (interpreter start and imports included);
`inner` is the time the child measured around its own work. Peak RSS is the child's
ru_maxrss from wait4. With --repeat N each is run N times and the best wall time is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent

CONFIG = {
    "attention_probs_dropout_prob": 0.1,
    "directionality": "bidi",
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pooler_fc_size": 768,
    "pooler_num_attention_heads": 12,
    "pooler_num_fc_layers": 3,
    "pooler_size_per_head": 128,
    "pooler_type": "first_token_transform",
    "type_vocab_size": 2,
    "vocab_size": 32000,
}
VOCAB_LINES = 31748


def weight_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """The variables of Google-BERT's run_pretraining.py for `cfg`, by name."""
    H, inter, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "bert/embeddings/word_embeddings": (V, H),
        "bert/embeddings/token_type_embeddings": (cfg["type_vocab_size"], H),
        "bert/embeddings/position_embeddings": (cfg["max_position_embeddings"], H),
        "bert/embeddings/LayerNorm/gamma": (H,),
        "bert/embeddings/LayerNorm/beta": (H,),
    }

    def dense(prefix: str, n_in: int, n_out: int) -> None:
        shapes[f"{prefix}/kernel"] = (n_in, n_out)
        shapes[f"{prefix}/bias"] = (n_out,)

    def ln(prefix: str) -> None:
        shapes[f"{prefix}/LayerNorm/gamma"] = (H,)
        shapes[f"{prefix}/LayerNorm/beta"] = (H,)

    for i in range(cfg["num_hidden_layers"]):
        p = f"bert/encoder/layer_{i}"
        for part in ("query", "key", "value"):
            dense(f"{p}/attention/self/{part}", H, H)
        dense(f"{p}/attention/output/dense", H, H)
        ln(f"{p}/attention/output")
        dense(f"{p}/intermediate/dense", H, inter)
        dense(f"{p}/output/dense", inter, H)
        ln(f"{p}/output")
    dense("bert/pooler/dense", H, H)
    dense("cls/predictions/transform/dense", H, H)
    ln("cls/predictions/transform")
    shapes["cls/predictions/output_bias"] = (V,)
    shapes["cls/seq_relationship/output_weights"] = (2, H)
    shapes["cls/seq_relationship/output_bias"] = (2,)
    return shapes


def is_weight(name: str) -> bool:
    return not (name.endswith(("/adam_m", "/adam_v")) or name == "global_step")


def generate(folder: Path) -> Path:
    """Write the checkpoint folder once; a complete one is reused."""
    if (folder / "bert_model.ckpt.index").is_file():
        return folder
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    print(f"generating {folder} (once) ...", file=sys.stderr, flush=True)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tensors: dict[str, object] = {}
    for name, shape in weight_shapes(CONFIG).items():
        for suffix in ("", "/adam_m", "/adam_v"):
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
            tensors[name + suffix] = tf.constant(value)
    tensors["global_step"] = tf.constant(np.int64(1_000_000))
    names = sorted(tensors)  # tf.compat.v1 Saver passes them to SaveV2 sorted, too
    # SaveV2 is the op a tf.compat.v1 Saver runs; called eagerly it needs no graph, whose
    # protobuf could not hold 1.3 GB of initial values anyway.
    tf.raw_ops.SaveV2(
        prefix=str(tmp / "bert_model.ckpt"),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tensors[n] for n in names],
    )
    (tmp / "bert_config.json").write_text(json.dumps(CONFIG, indent=2))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list("abcdefghijklmnopqrstuvwxyzæøå0123456789.,!?-")
    words = [f"ord{i}" for i in range(VOCAB_LINES - len(specials) - 2 * len(letters))]
    vocab = specials + letters + [f"##{c}" for c in letters] + words
    assert len(vocab) == VOCAB_LINES
    (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (tmp / "checkpoint").write_text('model_checkpoint_path: "bert_model.ckpt"\n')
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


# --- the measured children ------------------------------------------------------------------


def child_copy(prefix: str, out: str) -> dict:
    from danbert_convert.tfbundle import BundleReader

    t = time.perf_counter()
    reader = BundleReader(Path(prefix))
    ranges = sorted(
        (e.offset, e.size)
        for name in reader.variables()
        if is_weight(name)
        for e in [reader.entry(name)]
    )
    buf = bytearray(8 << 20)
    view = memoryview(buf)
    total = 0
    with open(reader.data_path(0), "rb", buffering=0) as src, open(out, "wb") as dst:
        for offset, size in ranges:
            src.seek(offset)
            while size:
                n = src.readinto(view[: min(size, len(buf))])
                dst.write(view[:n])
                size -= n
                total += n
    return {"inner": time.perf_counter() - t, "bytes": total}


def child_read(prefix: str, reader_kind: str) -> dict:
    from danbert_convert.checkpoint import open_checkpoint

    t = time.perf_counter()
    reader = open_checkpoint(Path(prefix), reader_kind)
    total = 0
    for name in reader.variables():
        if is_weight(name):
            total += reader.read(name).nbytes  # each array is dropped before the next read
    reader.close()
    return {"inner": time.perf_counter() - t, "bytes": total}


def run_child(argv: list[str]) -> dict:
    """Run `argv`, returning wall seconds, peak RSS bytes and the JSON it printed, if any."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        # wait4 gives this child's own rusage; RUSAGE_CHILDREN would mix all children so far.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}):\n{stderr.decode()[-3000:]}")
    result = {"wall": wall, "rss": usage.ru_maxrss * 1024, "stdout": stdout.decode()}
    # (ru_maxrss is in KiB on Linux)
    lines = stdout.decode().strip().splitlines()
    if lines and lines[-1].startswith("{"):
        result.update(json.loads(lines[-1]))
    return result


def evict(folder: Path) -> None:
    """Drop these files' clean pages from the page cache (no other file is touched)."""
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=HERE / ".cache")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each; best wall time kept")
    ap.add_argument(
        "--cold",
        action="store_true",
        help="evict the checkpoint's files from the page cache before each run (fadvise)",
    )
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "generate":
            generate(Path(rest[0]))
            return
        result = child_copy(*rest) if kind == "copy" else child_read(rest[0], kind)
        print(json.dumps(result))
        return

    me = [sys.executable, str(Path(__file__).resolve()), "--child"]
    src = args.cache / "bert-base"
    if not (src / "bert_model.ckpt.index").is_file():
        # In a child: the writer's 3 GB would otherwise count in every later child's peak
        # RSS, since ru_maxrss survives fork and exec.
        subprocess.run([*me, "generate", str(src)], check=True)
    prefix = src / "bert_model.ckpt"
    data = Path(f"{prefix}.data-00000-of-00001")
    work = args.cache / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # Warm the page cache for every contender, through a small buffer: this process's peak
    # RSS would otherwise show up in every child's (ru_maxrss survives fork and exec).
    with open(data, "rb", buffering=0) as f:
        chunk = bytearray(1 << 20)
        while not args.cold and f.readinto(chunk):
            pass

    danbert = shutil.which("danbert", path=str(BIN)) or "danbert"
    cases = {
        "(a) copy weight bytes": me + ["copy", str(prefix), str(work / "copy.bin")],
        "(b) TensorFlow reader": me + ["tensorflow", str(prefix)],
        "(c) native reader": me + ["native", str(prefix)],
        "(d) danbert convert": [danbert, "-q", "convert", str(src), str(work / "out"), "--force"],
    }
    env_note = f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    cache = "cold: evicted before each run" if args.cold else "warm page cache"
    print(f"checkpoint: {src} ({data.stat().st_size / 1e9:.2f} GB data; {env_note}; {cache})")
    results: dict[str, dict] = {}
    for label, argv in cases.items():
        best: dict | None = None
        for _ in range(args.repeat):
            if args.cold:
                evict(src)
            try:
                r = run_child(argv)
            except (RuntimeError, FileNotFoundError) as e:
                r = {"error": str(e).strip().splitlines()[-1]}
                best = r
                break
            if best is None or r["wall"] < best["wall"]:
                best = r
        assert best is not None
        results[label] = best
    weight_bytes = results["(a) copy weight bytes"].get("bytes")
    floor = results["(a) copy weight bytes"].get("wall")
    print(f"weights: {weight_bytes / 1e6:.1f} MB" if weight_bytes else "weights: ?")
    print(f"{'':26} {'wall s':>7} {'inner s':>8} {'peak RSS MB':>12} {'× copy':>7} {'RSS/wt':>7}")
    for label, r in results.items():
        if "error" in r:
            print(f"{label:26} failed: {r['error']}")
            continue
        if r.get("bytes", weight_bytes) != weight_bytes:
            print(f"{label:26} read {r['bytes']} bytes, not {weight_bytes}")
            continue
        inner = f"{r['inner']:.2f}" if "inner" in r else "-"
        ratio = f"{r['wall'] / floor:.2f}" if floor else "-"
        rss_ratio = f"{r['rss'] / weight_bytes:.2f}" if weight_bytes else "-"
        print(
            f"{label:26} {r['wall']:7.2f} {inner:>8} {r['rss'] / 1e6:12.0f} {ratio:>7} "
            f"{rss_ratio:>7}"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark: converting a BERT-base checkpoint shaped like the Danish release, five ways.

    .venv/bin/python benchmarks/bench_convert.py [--repeat N] [--regime cache|fsync|both]
                                                 [--setup-legacy | --no-legacy] [--cache DIR]

The first run writes the checkpoint with TensorFlow (vocab 32000, 12 layers, hidden 768,
intermediate 3072, 512 positions, Adam slots and global_step: about 1.33 GB of data, 445 MB
of weights; random float32 values) under benchmarks/.cache/ and reuses it afterwards.

Contenders, each a fresh subprocess:
  (a) copy: the byte range of every weight tensor from the data file into one output file,
      in-process: the I/O floor of any converter;
  (b) the TensorFlow reader reading every weight tensor;
  (c) the native reader (danbert_convert.readers.bundle) reading every weight tensor;
  (d) `python -m danbert_convert -q convert SRC OUT --force`, with this tree's src/ first on
      PYTHONPATH, so the code measured is the code of the tree the script is in;
  (e) the legacy path users had: transformers 4.x `BertForPreTraining(config)`,
      `load_tf_weights_in_bert(model, config, ckpt)`, `torch.save(model.state_dict(), OUT)`.

Two regimes, each reported on its own:
  cache  the data file in the page cache, no fsync on either side;
  fsync  the same, but every writer makes its output durable inside the measured time: the
         copy fsyncs its file, (d) runs as `sh -c 'python -m danbert_convert ... &&
         find OUT -type f -exec sync -- {} +'`, (e) fsyncs its torch.save file. The readers
         (b), (c) write nothing and run in the cache regime only.
Within a regime the contenders run interleaved: round 1 runs each once, round 2 again, ...
(the order rotates by one each round), so that drift from the shared machine hits all alike.
Before every run, outside the measured time, the previous output is deleted, os.sync() lets
no earlier writeback overlap the run, and each round starts by reading the checkpoint's files
to keep them in the page cache. Wall time is taken around the whole subprocess (interpreter
start and imports included); peak RSS is the child's ru_maxrss from wait4 (for the sh
wrapper, the maximum over sh and its children). Reported: the median of N rounds (5 by
default) and the min-max of wall time; "x copy" is the median over rounds of the round's
ratio to (a), "legacy / convert" likewise per round, for peak RSS the ratio of medians.
The end of the output is a Markdown table, with the date, the machine and the versions,
ready to paste into the README.

The legacy contender needs transformers 4.x, which must not enter the project's venv (it
has transformers 5, which has no TensorFlow code). `--setup-legacy` (uses the network, once)
installs into benchmarks/.cache/legacy-site, with `pip install --no-deps --target`, only
the packages whose venv versions 4.x cannot use: transformers>=4.57,<5, huggingface_hub<1
and tokenizers<=0.23.0. The legacy child runs with that folder first on PYTHONPATH and takes
everything else (torch, TensorFlow, numpy, safetensors, ...) from the venv, so both paths
run on the same torch and TensorFlow. Without the folder, (e) is reported as not set up;
`--no-legacy` skips it (it takes about 20 s a run). Never run by tests or CI.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
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


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def child_copy(prefix: str, out: str, sync: str) -> dict:
    from danbert_convert.readers.bundle import BundleReader

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
        if sync == "fsync":
            os.fsync(dst.fileno())
    return {"inner": time.perf_counter() - t, "bytes": total}


def child_read(prefix: str, reader_kind: str) -> dict:
    from danbert_convert.readers.base import open_checkpoint

    t = time.perf_counter()
    reader = open_checkpoint(Path(prefix), reader_kind)
    total = 0
    for name in reader.variables():
        if is_weight(name):
            total += reader.read(name).nbytes  # each array is dropped before the next read
    reader.close()
    return {"inner": time.perf_counter() - t, "bytes": total}


def child_legacy(src: str, out: str, sync: str) -> dict:
    """transformers 4.x's convert_bert_original_tf_checkpoint_to_pytorch, step for step."""
    import torch
    import transformers
    from transformers import BertConfig, BertForPreTraining, load_tf_weights_in_bert

    if not transformers.__version__.startswith("4."):
        raise SystemExit(f"legacy child got transformers {transformers.__version__}, not 4.x")
    t = time.perf_counter()
    config = BertConfig.from_json_file(str(Path(src) / "bert_config.json"))
    model = BertForPreTraining(config)
    load_tf_weights_in_bert(model, config, str(Path(src) / "bert_model.ckpt"))
    torch.save(model.state_dict(), out)
    if sync == "fsync":
        fsync_file(out)
    return {"inner": time.perf_counter() - t}


def run_child(argv: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `argv`, returning wall seconds, peak RSS bytes and the JSON it printed, if any."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        # wait4 gives this child's own rusage (with its waited-for children's, for a shell);
        # RUSAGE_CHILDREN would mix all children so far.
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


def run_as_child(args: list[str]) -> None:
    kind, *rest = args
    if kind == "generate":
        generate(Path(rest[0]))
        return
    if kind == "copy":
        result = child_copy(*rest)
    elif kind == "legacy":
        result = child_legacy(*rest)
    else:
        result = child_read(rest[0], kind)
    print(json.dumps(result))


# --- the legacy environment -----------------------------------------------------------------

# Only what transformers 4.x cannot take from the venv (transformers 5 wants huggingface_hub
# >= 1 and tokenizers 0.23.x; 4.57 wants < 1 and <= 0.23.0). Everything else, numpy and torch
# above all, must come from the venv: a resolver run with --target would install its own
# numpy into the folder, shadowing the one torch and TensorFlow were built against.
LEGACY_REQUIREMENTS = (
    "transformers>=4.57,<5",
    "huggingface_hub>=0.34,<1",
    "tokenizers>=0.22,<=0.23.0",
)
LEGACY_CHECK = "from transformers import BertForPreTraining, load_tf_weights_in_bert"


def with_path(first: Path) -> dict[str, str]:
    """os.environ with `first` at the head of PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(first), env.get("PYTHONPATH")]))
    return env


def legacy_ready(site: Path) -> bool:
    return (site / "transformers").is_dir()


def setup_legacy(site: Path) -> None:
    """Install transformers 4.x into `site` (network), checked before it replaces any old one."""
    tmp = site.with_name(site.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"installing {', '.join(LEGACY_REQUIREMENTS)} into {site} ...", file=sys.stderr)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp)]
    subprocess.run([*pip, *LEGACY_REQUIREMENTS], check=True)
    env = {**with_path(tmp), "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", LEGACY_CHECK], env=env, check=True)
    shutil.rmtree(site, ignore_errors=True)
    tmp.rename(site)


# --- running the rounds ---------------------------------------------------------------------

REGIMES = {
    "cache": "data in the page cache, no fsync on either side",
    "fsync": "data in the page cache, fsync on both sides (every output file made durable)",
}
GOAL_VS_COPY = 1.5  # (d) / (a) wall, at most
GOAL_RSS = 1.25  # (d) peak RSS / weight bytes, at most
GOAL_LEGACY_WALL = 8.0  # (e) / (d) wall, at least
GOAL_LEGACY_RSS = 5.0  # (e) / (d) peak RSS, at least


@dataclass
class Contender:
    key: str
    label: str
    argv: list[str] | None  # None: not run, for the reason in `skip`
    env: dict[str, str] | None = None
    output: Path | None = None  # deleted before every run
    skip: str = ""
    runs: dict[int, dict] = field(default_factory=dict)  # round -> run_child's result
    error: str = ""


def contenders(regime: str, src: Path, work: Path, site: Path, legacy: str) -> list[Contender]:
    me = [sys.executable, str(Path(__file__).resolve()), "--child"]
    prefix = str(src / "bert_model.ckpt")
    tree = with_path(ROOT / "src")
    sync = "fsync" if regime == "fsync" else "nosync"
    out = work / "danbert-out"
    convert = [sys.executable, "-m", "danbert_convert", "-q", "convert", str(src), str(out)]
    if regime == "fsync":
        # sh's $0 $1 $2 are the interpreter, SRC and OUT.
        script = '"$0" -m danbert_convert -q convert "$1" "$2" --force'
        script += ' && find "$2" -type f -exec sync -- {} +'
        convert = ["sh", "-c", script, sys.executable, str(src), str(out)]
    else:
        convert.append("--force")
    found = [
        Contender(
            "a",
            "(a) copy weight bytes",
            [*me, "copy", prefix, str(work / "copy.bin"), sync],
            tree,
            work / "copy.bin",
        ),
        Contender("b", "(b) TensorFlow reader", [*me, "tensorflow", prefix], tree),
        Contender("c", "(c) native reader", [*me, "native", prefix], tree),
        Contender("d", "(d) danbert convert", convert, tree, out),
        Contender(
            "e",
            "(e) transformers 4.x + TF",
            [*me, "legacy", str(src), str(work / "legacy.bin"), sync],
            with_path(site),
            work / "legacy.bin",
        ),
    ]
    if regime == "fsync":  # the readers write nothing: the same as in the cache regime
        found = [c for c in found if c.key not in "bc"]
    if legacy:
        found[-1].argv = None
        found[-1].skip = legacy
    return found


def warm(src: Path) -> None:
    """Read the checkpoint's files into the page cache through a small buffer: this process's
    peak RSS would otherwise show up in every child's (ru_maxrss survives fork and exec)."""
    chunk = bytearray(1 << 20)
    for path in sorted(src.iterdir()):
        with open(path, "rb", buffering=0) as f:
            while f.readinto(chunk):
                pass


def remove(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def measure(regime: str, cases: list[Contender], src: Path, repeat: int) -> None:
    runnable = [c for c in cases if c.argv is not None]
    for r in range(repeat):
        warm(src)
        shift = r % max(len(runnable), 1)
        walls = []
        for c in runnable[shift:] + runnable[:shift]:
            if c.error:
                continue
            remove(c.output)
            os.sync()  # no earlier output's writeback may overlap this run
            assert c.argv is not None
            try:
                c.runs[r] = run_child(c.argv, c.env)
                walls.append(f"{c.key} {c.runs[r]['wall']:.2f}")
            except (RuntimeError, OSError) as e:
                c.error = str(e).strip().splitlines()[-1]
                walls.append(f"{c.key} failed")
            remove(c.output)
        print(f"  {regime} round {r + 1}/{repeat}: {', '.join(walls)} s", file=sys.stderr)


# --- reporting ------------------------------------------------------------------------------


@dataclass
class Figures:
    wall: float
    wall_min: float
    wall_max: float
    rss: float
    inner: float | None
    vs_copy: float | None


def figures(c: Contender, copy: Contender | None) -> Figures | None:
    if not c.runs:
        return None
    walls = [r["wall"] for r in c.runs.values()]
    inners = [r["inner"] for r in c.runs.values() if "inner" in r]
    return Figures(
        wall=statistics.median(walls),
        wall_min=min(walls),
        wall_max=max(walls),
        rss=statistics.median(r["rss"] for r in c.runs.values()),
        inner=statistics.median(inners) if inners else None,
        vs_copy=paired(c, copy) if copy is not None else None,
    )


def paired(x: Contender, y: Contender) -> float | None:
    """Median over the rounds both ran of x's wall time over y's, in that round."""
    rounds = sorted(set(x.runs) & set(y.runs))
    if not rounds:
        return None
    return statistics.median(x.runs[r]["wall"] / y.runs[r]["wall"] for r in rounds)


@dataclass
class Goal:
    name: str  # in Markdown
    value: float | None
    goal: float
    at_most: bool

    def text(self, markdown: bool = False) -> str:
        if self.value is None:
            return "-"
        met = self.value <= self.goal if self.at_most else self.value >= self.goal
        x = "×" if markdown else "x"
        op = ("≤" if self.at_most else "≥") if markdown else ("<=" if self.at_most else ">=")
        return f"{self.value:.2f}{x} ({op} {self.goal:g}{x}: {'met' if met else 'NOT met'})"


@dataclass
class Report:
    regime: str
    rows: list[tuple[Contender, Figures | None]]
    goals: list[Goal]


def report(regime: str, cases: list[Contender], weight_bytes: int | None) -> Report:
    by_key = {c.key: c for c in cases}
    copy = by_key["a"] if by_key["a"].runs else None
    rows = [(c, figures(c, copy)) for c in cases]
    fig = {c.key: f for c, f in rows}
    d, e = fig.get("d"), fig.get("e")
    rss_d = d.rss / weight_bytes if d and weight_bytes else None
    legacy_wall = paired(by_key["e"], by_key["d"]) if d and e else None
    legacy_rss = e.rss / d.rss if d and e else None
    convert = "`danbert convert`"
    goals = [
        Goal(f"{convert} ÷ copy, wall", d.vs_copy if d else None, GOAL_VS_COPY, True),
        Goal(f"{convert} peak RSS ÷ weight bytes", rss_d, GOAL_RSS, True),
        Goal(f"legacy ÷ {convert}, wall", legacy_wall, GOAL_LEGACY_WALL, False),
        Goal(f"legacy ÷ {convert}, peak RSS", legacy_rss, GOAL_LEGACY_RSS, False),
    ]
    return Report(regime, rows, goals)


def print_report(rep: Report, weight_bytes: int | None, repeat: int) -> None:
    print(f"\nregime {rep.regime}: {REGIMES[rep.regime]}")
    print(
        f"{'':27} {'wall s':>7} {'min-max':>11} {'inner s':>8} {'x copy':>7} "
        f"{'peak RSS MB':>12} {'x weights':>9}   (median of {repeat})"
    )
    for c, f in rep.rows:
        if f is None:
            why = c.error or c.skip or "no run"
            print(f"{c.label:27} {'failed: ' if c.error else ''}{why}")
            continue
        bytes_read = [r["bytes"] for r in c.runs.values() if "bytes" in r]
        if weight_bytes and any(b != weight_bytes for b in bytes_read):
            print(f"{c.label:27} read {bytes_read[0]} bytes, not {weight_bytes}")
            continue
        inner = f"{f.inner:.2f}" if f.inner is not None else "-"
        ratio = f"{f.vs_copy:.2f}" if f.vs_copy is not None else "-"
        rss = f"{f.rss / weight_bytes:.2f}" if weight_bytes else "-"
        spread = f"{f.wall_min:.2f}-{f.wall_max:.2f}"
        print(
            f"{c.label:27} {f.wall:7.2f} {spread:>11} {inner:>8} {ratio:>7} "
            f"{f.rss / 1e6:12.0f} {rss:>9}" + (f"   (failed later: {c.error})" if c.error else "")
        )
    for goal in rep.goals:
        name = goal.name.replace("`", "").replace("÷", "/")
        print(f"  {name:40} {goal.text()}")


def version(dist: str, path: Path | None = None) -> str:
    try:
        if path is None:
            return importlib.metadata.version(dist)
        return next(importlib.metadata.distributions(name=dist, path=[str(path)])).version
    except (importlib.metadata.PackageNotFoundError, StopIteration):
        return "-"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    ram = "? GiB"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores, {ram} RAM, {platform.system()} {platform.release()}"


def tree_code() -> tuple[str, str]:
    """Where the children import danbert_convert from, and this tree's commit."""
    probe = "import danbert_convert as d; print(d.__version__, d.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=with_path(ROOT / "src"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    git = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{out[0]} ({git or 'no git'})", str(Path(out[1]).parent)


def markdown(
    reports: list[Report],
    weight_bytes: int | None,
    data_bytes: int,
    repeat: int,
    code: str,
    site: Path,
) -> str:
    tf_dist = "tensorflow-cpu" if version("tensorflow-cpu") != "-" else "tensorflow"
    versions = ", ".join(
        [
            f"Python {platform.python_version()}",
            f"danbert-convert {code}",
            f"numpy {version('numpy')}",
            f"torch {version('torch')}",
            f"{tf_dist} {version(tf_dist)}",
            f"safetensors {version('safetensors')}",
            f"transformers {version('transformers', site)} (legacy path)",
        ]
    )
    weights = f"{weight_bytes / 1e6:.0f} MB" if weight_bytes else "?"
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {machine()}; {versions}.",
        f"Checkpoint: generated BERT-base (vocab 32000, 12 layers, Adam slots), "
        f"{data_bytes / 1e9:.2f} GB data, {weights} of weights. Median of {repeat} "
        "interleaved rounds; wall time of the whole subprocess, peak RSS from wait4.",
        "",
        "| Regime | Contender | Wall (s) | × copy | Peak RSS (MB) | × weight bytes |",
        "|---|---|--:|--:|--:|--:|",
    ]
    short = {
        "cache": "page cache, no fsync",
        "fsync": "fsync on both sides",
    }
    names = {
        "a": "copy the weight bytes (floor)",
        "b": "TensorFlow reader",
        "c": "native reader",
        "d": "`danbert convert`",
        "e": "transformers 4.x `load_tf_weights_in_bert` + `torch.save`",
    }
    for rep in reports:
        for c, f in rep.rows:
            if f is None:
                why = "failed" if c.error else (c.skip or "not measured").split(":")[0]
                lines.append(f"| {short[rep.regime]} | {names[c.key]} | {why} | | | |")
                continue
            ratio = f"{f.vs_copy:.2f}" if f.vs_copy is not None else "-"
            rss = f"{f.rss / weight_bytes:.2f}" if weight_bytes else "-"
            lines.append(
                f"| {short[rep.regime]} | {names[c.key]} | {f.wall:.2f} | {ratio} "
                f"| {f.rss / 1e6:.0f} | {rss} |"
            )
    lines += ["", "| Goal | " + " | ".join(short[r.regime] for r in reports) + " |"]
    lines.append("|---|" + "---|" * len(reports))
    for i, goal in enumerate(reports[0].goals):
        cells = [r.goals[i].text(markdown=True) for r in reports]
        lines.append(f"| {goal.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        run_as_child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=HERE / ".cache")
    ap.add_argument("--repeat", type=int, default=5, help="rounds per regime (default 5)")
    ap.add_argument("--regime", choices=["cache", "fsync", "both"], default="both")
    legacy = ap.add_mutually_exclusive_group()
    legacy.add_argument(
        "--setup-legacy",
        action="store_true",
        help="install transformers 4.x into CACHE/legacy-site first if missing (network)",
    )
    legacy.add_argument("--no-legacy", action="store_true", help="skip contender (e)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    src = args.cache / "bert-base"
    if not (src / "bert_model.ckpt.index").is_file():
        # In a child: the writer's 3 GB would otherwise count in every later child's peak
        # RSS, since ru_maxrss survives fork and exec.
        me = [sys.executable, str(Path(__file__).resolve()), "--child"]
        subprocess.run([*me, "generate", str(src)], check=True)
    data = src / "bert_model.ckpt.data-00000-of-00001"
    site = args.cache / "legacy-site"
    if args.setup_legacy and not legacy_ready(site):
        setup_legacy(site)
    legacy_skip = ""
    if args.no_legacy:
        legacy_skip = "skipped (--no-legacy)"
    elif not legacy_ready(site):
        legacy_skip = "not set up: run with --setup-legacy"
    work = args.cache / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    version_line, code_dir = tree_code()
    print(f"checkpoint: {src} ({data.stat().st_size / 1e9:.2f} GB data)")
    print(f"danbert_convert: {code_dir}, {version_line}")
    print(f"machine: {machine()} (shared: figures are noisy unless the machine is idle)")
    print(
        f"{args.repeat} rounds per regime, contenders interleaved; wall: the whole subprocess; "
        "peak RSS: ru_maxrss from wait4"
    )
    regimes = ["cache", "fsync"] if args.regime == "both" else [args.regime]
    reports = []
    weight_bytes: int | None = None
    for regime in regimes:
        print(f"regime {regime}: {REGIMES[regime]} ...", file=sys.stderr)
        cases = contenders(regime, src, work, site, legacy_skip)
        measure(regime, cases, src, args.repeat)
        copies = [r["bytes"] for r in cases[0].runs.values()]
        weight_bytes = weight_bytes or (copies[0] if copies else None)
        rep = report(regime, cases, weight_bytes)
        print_report(rep, weight_bytes, args.repeat)
        reports.append(rep)
    shutil.rmtree(work, ignore_errors=True)
    print(f"weights: {weight_bytes / 1e6:.1f} MB" if weight_bytes else "weights: ?")
    print("\n--- Markdown for the README ---\n")
    print(markdown(reports, weight_bytes, data.stat().st_size, args.repeat, version_line, site))


if __name__ == "__main__":
    main()

"""The verify stage: a converted folder loads cleanly and computes what the TF checkpoint computes.

Five checks, each pass/fail (or info/skip) with a figure: files, weights, tokenizer, parity
against a numpy forward pass over the TF variables (both sides in float64), and a fill-mask
smoke test.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from danbert_convert._fs import StrPath, leave_signals_to_main_thread, sha256_file
from danbert_convert.defaults import READERS, ReaderName
from danbert_convert.errors import InputError, VerifyError, one_line, with_article
from danbert_convert.families import (
    BY_NAME,
    FAMILIES,
    REFERENCES,
    ModelKind,
    load_source,
    locate_files,
    model_kind,
    open_source,
)
from danbert_convert.families.table import (
    REQUIRED_CONFIG_KEYS,
    TRANSPOSE,
    Architecture,
    check_sizes,
    fill,
)
from danbert_convert.families.transformer_reference import ACTIVATIONS
from danbert_convert.output import card
from danbert_convert.output.manifest import MANIFEST_NAME, source_paths
from danbert_convert.output.sentencepiece import SPM_FILE, spm_mismatches
from danbert_convert.output.tokenizer import TRANSLITERATION, Rule, never_produced, rule_for
from danbert_convert.output.tokenizer import _is_marker as is_marker
from danbert_convert.output.writer import BIN_NAME, WEIGHTS_NAME
from danbert_convert.readers.base import count_nonfinite, open_checkpoint
from danbert_convert.source import Source, read_json, read_vocab

log = logging.getLogger(__name__)

# Parity: each output, and each layer's hidden states, passes when
#   max |model - reference| <= PARITY_ATOL + PARITY_RTOL * max |reference|.
# Both sides run in float64 from the same float32 (or float16/bfloat16) values, which widen
# exactly, so the only honest difference is float64 rounding: measured at 4e-16 to 5e-15 of
# max |reference| on correct conversions, 1.5e-10 on a deliberately chaotic one (BERT-base
# with std-0.3 weights: saturated attention magnifies rounding a million-fold). Faults sit
# far above: a weight off by 0.05, a kernel left untransposed or swapped, gamma and beta
# swapped move outputs by 1e-5 to 1 of their scale. PARITY_RTOL is float32's resolution
# (2**-24 = 6e-8, rounded up): a model that differs at a level float32 could show fails.
# PARITY_ATOL only spares an output that is ~0 everywhere from demanding exact equality.
# benchmarks/parity_margins.py measures both margins.
PARITY_RTOL = 1e-7
PARITY_ATOL = 1e-10
FLOAT_DTYPES = ("float32", "float16", "bfloat16")
SMOKE_SENTENCES = (
    "Jeg bor i [MASK] og arbejder i København.",
    "København er Danmarks [MASK].",
    "Om sommeren bader børnene i [MASK].",
)
TOKENIZER_FILES = (
    "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
)  # fmt: skip
PASS, FAIL, INFO, SKIP = "pass", "fail", "info", "skip"


@dataclass
class Check:
    """One check's outcome."""

    name: str
    """"files", "weights", "tokenizer", "parity" or "fill-mask"."""
    status: str
    """"pass", "fail", "info" (informative, as fill-mask without `expect`) or "skip"."""
    figure: str = ""
    """The headline figure, e.g. "worst mlm 3.3e-16 <= 5.5e-08"."""
    detail: str = ""
    """What was checked, or what failed (one line)."""
    data: dict[str, Any] = field(default_factory=dict)
    """The numbers behind the figure (parity's differences, the tokenizer's counts)."""


@dataclass
class Report:
    """What `verify` found: every check, in the order run."""

    model: Path
    """The model folder verified."""
    checks: list[Check] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """The report back from its `to_dict()` form (as saved in danbert-verify.json)."""
        keys = ("name", "status", "figure", "detail", "data")
        checks = [Check(**{k: c[k] for k in keys if k in c}) for c in data.get("checks", [])]
        return cls(Path(data["model"]), checks)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def raise_if_failed(self) -> None:
        """VerifyError naming the failed checks, if any failed."""
        failed = [c.name for c in self.checks if c.status == FAIL]
        if failed:
            e = VerifyError(f"{self.model}: failed checks: {', '.join(failed)}")
            e.report = self
            raise e

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
        }

    def table(self) -> str:
        """The report as an aligned text table with one line per check."""
        rows = [(c.name, c.status.upper(), c.figure, c.detail) for c in self.checks]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True))
            + (f"  {r[3]}" if r[3] else "")
            for r in rows
        ]
        verdict = "all checks passed" if self.ok else "verification FAILED"
        return "\n".join([f"{self.model}:", *("  " + line.rstrip() for line in lines), verdict])


def danish_sample() -> list[str]:
    """The built-in Danish sample text, one sentence a line."""
    text = resources.files("danbert_convert").joinpath("data/danish_sample.txt").read_text("utf-8")
    return [line for line in text.splitlines() if line.strip()]


def read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e
    # Its readers (verify, `all`'s skip) take these shapes for granted.
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    for key in ("source", "settings", "outputs"):
        if not isinstance(data.get(key, {}), dict):
            raise InputError(f"{path}: {key!r} is not an object")
    source = data.get("source", {})
    for key in ("checkpoint", "config", "vocab"):
        value = source.get(key, "")
        # config is null when the source had none (ELECTRA releases ship none)
        if not isinstance(value, str) and not (key == "config" and value is None):
            raise InputError(f"{path}: source {key!r} is not a string")
    if not isinstance(source.get("root", ""), (str, type(None))):
        raise InputError(f"{path}: source 'root' is not a string")
    files = source.get("files", [])
    if not isinstance(files, list) or not all(
        isinstance(f, dict) and isinstance(f.get("path"), str) for f in files
    ):
        raise InputError(f"{path}: source 'files' is not a list of objects with a 'path'")
    if not isinstance(data.get("settings", {}).get("part", ""), (str, type(None))):
        raise InputError(f"{path}: settings 'part' is not a string")
    if type(data.get("schema_version", 1)) is not int:
        raise InputError(f"{path}: 'schema_version' is not an integer")
    return data


class _State:
    """What the checks load once and share, and the work begun for them on a second thread.

    Importing torch and transformers and loading the model keep one core busy for seconds;
    meanwhile a worker thread hashes the weight files and computes the parity reference
    (numpy, BLAS). The checks still decide everything, in their order: the files check waits
    for the digests, and parity uses the early reference only if it was computed on the
    inputs parity gives the model.
    """

    def __init__(self, out: Path, progress: bool | None = None) -> None:
        self.out = out
        self.progress = progress
        self.manifest = read_manifest(out)
        self.config: Any = None
        self.model: Any = None
        self.fast: Any = None
        self.digests: dict[str, Future[str]] = {}
        self.early: Future[_Early | None] | None = None
        self.waiting = threading.Event()  # parity waits for the worker, which may use all cores
        self._source: Source | None = None
        self._source_error: Exception | None = None
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None

    def start(self, against: Path | None, reader: str, config: Path | None = None) -> None:
        """Find the source; begin hashing the recorded weight files and the reference."""
        try:
            self._source = _find_source(self, against, config)
        except Exception as e:  # noqa: BLE001 - parity reports it, in its turn
            self._source_error = e
        self._pool = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="danbert-verify",
            initializer=leave_signals_to_main_thread,
        )
        for name in (self.manifest or {}).get("outputs", {}):
            if name in (WEIGHTS_NAME, BIN_NAME) and (self.out / name).is_file():
                self.digests[name] = self._pool.submit(sha256_file, self.out / name)
        if self._source is not None and reader != "tensorflow":  # TensorFlow: main thread only
            self.early = self._pool.submit(_early_reference, self, self._source, reader)

    def source(self) -> Source | None:
        """The source checkpoint for parity (None: none given or recorded), or its error."""
        if self._source_error is not None:
            raise self._source_error
        return self._source

    def stopped(self) -> bool:
        return self._stop.is_set()

    def step(self, message: str) -> None:
        """A progress line: INFO on the package's logger, unless progress is off."""
        if self.progress is not False:
            log.info("verify: %s", message)

    def close(self) -> None:
        """Stop the worker (the reference at its next variable) and wait for it."""
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def verify(
    out: StrPath,
    *,
    against: StrPath | None = None,
    config: StrPath | None = None,
    reader: ReaderName = "auto",
    expect: str | None = None,
    sentences: Sequence[str] | None = None,
    progress: bool | None = None,
    write_card: bool = False,
) -> Report:
    """Run every check on the model folder `out` that `convert` wrote, and report each one.

    - `against`: the source release folder for parity (default: the one recorded in the
      manifest; with neither, parity is skipped).
    - `config`: the source's config file, when it is not in the source folder (as given to
      convert's `config`: a TF2 checkpoint's params.yaml or bert_config.json, an ELECTRA
      --hparams file).
    - `reader`: how parity reads the checkpoint: "auto" or "native" (built in), "tensorflow".
    - `expect`: a token that must be among the first fill-mask sentence's top 5 (without it
      fill-mask is informative).
    - `sentences`: fill-mask sentences, one [MASK] each (default: built-in Danish ones).
    - `progress`: False logs no step lines; otherwise each step is an INFO record of the
      `danbert_convert` logger ("verify: [2/5] weights: ...").
    - `write_card`: (re)write the model card OUT/README.md with the result when every check
      passes; a README.md of the user's there is refused (OutputExistsError) before any check.

    A failed check does not raise: see `Report.ok` and `Report.raise_if_failed()`. Raises
    InputError when `out` is not a folder or its manifest is unreadable, ValueError for an
    unknown `reader`.
    """
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, not {reader!r}")
    out = Path(out)
    if not out.is_dir():
        raise InputError(f"{out}: not a folder")
    if isinstance(sentences, str):  # one sentence, not its characters
        sentences = (sentences,)
    if write_card:
        card.check_writable(out / card.CARD_NAME)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    st = _State(out, progress)
    report = Report(out)
    try:
        st.start(None if against is None else Path(against), reader,
                 None if config is None else Path(config))  # fmt: skip
        st.step(_source_line(st))
        if not {"torch", "transformers"} <= sys.modules.keys():
            st.step("importing torch and transformers")  # seconds: said before, not after
        import torch  # noqa: F401 - every check needs it; the worker runs meanwhile
        from transformers.utils import logging as hf_logging

        # Their load reports and bars would drown the table; our checks read the loading info.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            _run_checks(st, report, reader, expect, tuple(sentences or SMOKE_SENTENCES))
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
    finally:
        st.close()
    if write_card and report.ok:
        log.info("wrote the model card %s", card.write_card(out, report))
    elif write_card:
        log.warning("%s not written: verification failed", out / card.CARD_NAME)
    return report


def _source_line(st: _State) -> str:
    """The first step line: the folder, and the checkpoint parity will compare it with."""
    try:
        source = st.source()
    except Exception:  # noqa: BLE001 - parity reports it, in its turn
        return f"{st.out}: the source for parity cannot be read (parity will say why)"
    if source is None:
        return f"{st.out}: no source checkpoint, parity will be skipped"
    return f"{st.out} against {_shown(source.checkpoint)}"


def _shown(path: Path) -> Path:
    """A path as a person reads it: without `..` (the manifest's source is relative to OUT),
    relative to the current folder when inside it."""
    try:
        path = path.resolve()
        return path.relative_to(Path.cwd().resolve())
    except (OSError, RuntimeError, ValueError):  # a symlink loop; outside the current folder
        return path


def _run_checks(
    st: _State,
    report: Report,
    reader: str,
    expect: str | None,
    sentences: tuple[str, ...],
) -> None:
    # Each check with its step line, said as it begins (some depend on what the checks
    # before found): where the seconds go.
    steps: tuple[tuple[str, Callable[[], str], Callable[[_State], Check]], ...] = (
        ("files", lambda: "config.json, the weight files' SHA-256 and sizes",
         _check_files),
        ("weights", lambda: f"loading {_class_name(st)} and AutoModel with transformers",
         _check_weights),
        ("tokenizer", lambda: "every whole word of vocab.txt through the fast and slow "
         "tokenizers", _check_tokenizer),
        ("parity", lambda: "the model against a numpy forward pass over the checkpoint, "
         "in float64", lambda s: _check_parity(s, reader)),
        ("fill-mask", lambda: f"{_plural(len(sentences), 'sentence')} through "
         "pipeline('fill-mask')", lambda s: _check_smoke(s, expect, sentences)),
    )  # fmt: skip
    for i, (name, what, step) in enumerate(steps, 1):
        st.step(f"[{i}/{len(steps)}] {name}: {what()}")
        start = time.perf_counter()
        try:
            check = step(st)
        except Exception as e:  # noqa: BLE001 - whatever a check trips on is its failure
            log.debug("%s raised", name, exc_info=True)
            check = Check(name, FAIL, type(e).__name__, one_line(e))
        log.debug("%s: %s %s %s (%.1f s)", check.name, check.status, check.figure,
                  check.detail, time.perf_counter() - start)  # fmt: skip
        report.checks.append(check)


def _class_name(st: _State) -> str:
    """The class config.json names, for the weights step's line."""
    names = getattr(st.config, "architectures", None) or ["the model"]
    return str(names[0])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _check_files(st: _State) -> Check:
    from transformers import AutoConfig

    # A SentencePiece tokenizer (ALBERT) has spiece.model where WordPiece has vocab.txt.
    files = [SPM_FILE if f == "vocab.txt" and (st.out / SPM_FILE).is_file() else f
             for f in ("config.json", *TOKENIZER_FILES)]  # fmt: skip
    missing = [f for f in files if not (st.out / f).is_file()]
    if not (st.out / WEIGHTS_NAME).is_file() and not (st.out / BIN_NAME).is_file():
        missing.append(WEIGHTS_NAME)
    if missing:
        return Check("files", FAIL, f"{len(missing)} missing", f"missing: {', '.join(missing)}")
    # transformers builds whatever config.json asks for (a label table of num_labels entries,
    # num_hidden_layers layers): an edited size must be caught against the weights first.
    if problem := _config_disagrees(st.out):
        return Check("files", FAIL, "config.json", problem)
    try:
        st.config = AutoConfig.from_pretrained(st.out)
    except (OSError, ValueError) as e:
        return Check("files", FAIL, "config.json", one_line(e))
    if st.config.model_type not in {f.model_type for f in FAMILIES}:
        return Check("files", FAIL, "config.json", f"model_type is {st.config.model_type!r}")
    if st.manifest:
        # Weights only: config.json and the tokenizer files are the user's to edit.
        for name, digest in st.manifest.get("outputs", {}).items():
            if name not in (WEIGHTS_NAME, BIN_NAME):
                continue
            if (st.out / name).is_file() and _digest(st, name) != digest:
                return Check(
                    "files", FAIL, name, f"{name} changed since conversion (SHA-256 differs)"
                )
    n = sum(1 for _ in st.out.iterdir())
    return Check("files", PASS, f"{n} files", f"config loads as {type(st.config).__name__}")


def _digest(st: _State, name: str) -> str:
    """SHA-256 of a weights file: the worker's, if it hashed it."""
    if name in st.digests:
        return st.digests[name].result()
    return sha256_file(st.out / name)


def _weight_shapes(out: Path) -> tuple[str, dict[str, tuple[int, ...]]]:
    """The weights file transformers loads and its tensors' shapes, from the header alone."""
    if (out / WEIGHTS_NAME).is_file():
        from safetensors import safe_open

        with safe_open(str(out / WEIGHTS_NAME), framework="pt") as f:
            keys = list(f.keys())
            return WEIGHTS_NAME, {k: tuple(f.get_slice(k).get_shape()) for k in keys}
    import torch

    state = torch.load(out / BIN_NAME, map_location="cpu", weights_only=True, mmap=True)
    return BIN_NAME, {k: tuple(v.shape) for k, v in state.items()}


def _config_disagrees(out: Path) -> str | None:
    """How config.json's sizes disagree with the weights' shapes, if they do (one line).

    Read as plain JSON and checked before transformers sees it, so that an edited size is a
    failed check rather than gigabytes of layers or labels.
    """
    try:
        config = read_config_json(out / "config.json")
    except InputError as e:
        return str(e)
    try:
        name, shapes = _weight_shapes(out)
    except Exception as e:  # noqa: BLE001 - safetensors and torch raise their own kinds
        weights = WEIGHTS_NAME if (out / WEIGHTS_NAME).is_file() else BIN_NAME
        return f"{weights}: cannot be read ({one_line(e)}), so config.json cannot be checked"

    def shape(suffix: str) -> tuple[str, tuple[int, ...]] | None:
        return next(((k, v) for k, v in shapes.items() if k.endswith(suffix)), None)

    layers = {
        int(k.split("encoder.layer.")[1].split(".")[0])
        for k in shapes
        if "encoder.layer." in k and k.split("encoder.layer.")[1].split(".")[0].isdigit()
    }
    expected: list[tuple[str, int, str]] = []  # (key, size in the weights, where it shows)
    if words := shape("embeddings.word_embeddings.weight"):
        # ELECTRA's embeddings have a width of their own; BERT's are the hidden size.
        width = "embedding_size" if "embedding_size" in config else "hidden_size"
        expected += [("vocab_size", words[1][0], words[0]), (width, words[1][-1], words[0])]
    for key, suffix in (
        ("max_position_embeddings", "embeddings.position_embeddings.weight"),
        ("type_vocab_size", "embeddings.token_type_embeddings.weight"),
        ("intermediate_size", "encoder.layer.0.intermediate.dense.weight"),
    ):
        if found := shape(suffix):
            expected.append((key, found[1][0], found[0]))
    if layers:
        expected.append(("num_hidden_layers", max(layers) + 1, "encoder.layer.N"))
    for key, size, where in expected:
        if config[key] != size:
            return f"config.json has {key} {config[key]}, {name} has {size} ({where})"
    labels = [(k, v) for k, v in (("num_labels", config.get("num_labels")),
                                  ("id2label", len(config.get("id2label") or {})))
              if v]  # fmt: skip
    head = shape("classifier.weight")
    largest = max((d for s in shapes.values() for d in s), default=1)
    for key, value in labels:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"config.json: {key} is {value!r}; it must be an integer"
        if head and value != head[1][0]:
            return f"config.json has {key} {value}, {name} has {head[1][0]} ({head[0]})"
        if not head and value > largest:
            return (f"config.json has {key} {value}, more than any size in {name} "
                    f"({largest}), which has no classifier")  # fmt: skip
    return None


def read_config_json(path: Path) -> dict:
    """A model folder's config.json, read as plain JSON and its sizes checked."""
    return check_sizes(read_json(path), path)


def _check_weights(st: _State) -> Check:
    if st.config is None:
        return Check("weights", SKIP, detail="no loadable config")
    import transformers

    arch = (st.config.architectures or ["(none)"])[0]
    cls = getattr(transformers, arch, None)
    try:
        model_kind(st.config.model_type, arch)
    except ValueError:
        cls = None
    if cls is None:
        return Check("weights", FAIL, arch, f"architectures names unknown class {arch!r}")
    # safetensors opens without pickle; a .bin is unpickled with weights_only=True.
    kwargs = {"use_safetensors": (st.out / WEIGHTS_NAME).is_file(), "weights_only": True}
    problems = []
    note = f"{arch} and AutoModel load cleanly"
    for load in (cls, transformers.AutoModel):
        try:
            model, info = load.from_pretrained(st.out, output_loading_info=True, **kwargs)
        except Exception as e:  # noqa: BLE001 - safetensors and torch raise their own kinds
            weights = WEIGHTS_NAME if kwargs["use_safetensors"] else BIN_NAME
            return Check("weights", FAIL, load.__name__, f"{weights}: {one_line(e)}")
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            keys = sorted(str(k) for k in info.get(kind) or [])
            if load is not cls and kind == "unexpected_keys":
                # The bare encoder leaves the task heads behind; only its own keys count.
                keys = [k for k in keys if k.startswith(f"{model.base_model_prefix}.")]
            if (load is not cls and kind == "missing_keys"
                    and getattr(st.model.base_model, "pooler", None) is None):  # fmt: skip
                # AutoModel always has a pooler; the class converted has none to give it.
                if any(k.startswith("pooler.") for k in keys):
                    note = (f"{arch} loads cleanly; AutoModel adds an untrained pooler "
                            f"({arch} has none)")  # fmt: skip
                keys = [k for k in keys if not k.startswith("pooler.")]
            if keys:
                problems.append(f"{load.__name__}: {kind.replace('_', ' ')}: {_first(keys)}")
        if load is cls:
            st.model = model.eval()
    # The loaders cast to the model's dtype, so an int32 tensor or a NaN is only seen in the file.
    for name in (WEIGHTS_NAME, BIN_NAME):
        if (st.out / name).is_file() and (bad := _scan_weights(st.out / name)):
            problems.append(f"{name}: {_first(bad)}")
    if problems:
        return Check("weights", FAIL, arch, "; ".join(problems))
    n = sum(p.numel() for p in st.model.parameters())
    size = f"{n / 1e6:.1f}M" if n >= 100_000 else str(n)
    return Check("weights", PASS, f"{size} params", note + "; every tensor floating point, finite")


def _weight_tensors(path: Path) -> Iterator[tuple[str, Any]]:
    """(name, torch tensor) of a weights file, one at a time for safetensors."""
    if path.name == WEIGHTS_NAME:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                yield key, f.get_tensor(key)
    else:
        import torch

        yield from torch.load(path, map_location="cpu", weights_only=True, mmap=True).items()


def _scan_weights(path: Path) -> list[str]:
    """Tensors of a weights file that are not float32/16/bf16, or hold NaN or infinity."""
    import torch

    problems = []
    try:
        for key, t in _weight_tensors(path):
            dtype = str(t.dtype).removeprefix("torch.")
            if dtype not in FLOAT_DTYPES:
                problems.append(f"{key} is {dtype}; weights must be float32, float16 or bfloat16")
                continue
            # A NaN or infinity makes the sum non-finite (so does overflow: then count).
            if not torch.isfinite(t.sum()) and (bad := int(t.numel() - torch.isfinite(t).sum())):
                problems.append(f"{key} has {bad} non-finite values (NaN or infinity)")
    except Exception as e:  # noqa: BLE001 - safetensors and torch raise their own kinds
        problems.append(f"cannot be read: {one_line(e)}")
    return problems


def _slow_tokenizer(out: Path) -> Any:
    try:  # transformers 5 keeps the pure-Python BERT tokenizer under this name
        from transformers.models.bert import BertTokenizerLegacy as Slow
    except ImportError:  # transformers 4
        from transformers import BertTokenizer as Slow  # type: ignore[assignment]
    return Slow.from_pretrained(out)


def _check_tokenizer(st: _State) -> Check:
    if st.config is None:
        return Check("tokenizer", SKIP, detail="no loadable config")
    if (st.out / SPM_FILE).is_file():
        return _check_spm_tokenizer(st)
    from transformers import AutoTokenizer

    try:
        st.fast = AutoTokenizer.from_pretrained(st.out)
        slow = _slow_tokenizer(st.out)
        vocab = read_vocab(st.out / "vocab.txt", int(st.config.vocab_size))
    except (OSError, ValueError, InputError) as e:
        return Check("tokenizer", FAIL, "", one_line(e))
    backend = st.fast.backend_tokenizer
    ids = {token: i for i, token in enumerate(vocab)}  # a repeated token: the last line wins
    rule = _expected_rule(st, vocab)
    lines = danish_sample()
    parts = [
        _vocab_ids(backend, ids),
        _whole_words(backend, ids, rule, never_produced(vocab, rule)),
        _normalisation(st, backend, vocab, rule),
        _fast_equals_slow(st.fast, slow, lines, rule),
        _casing_recorded(st, slow),
    ]
    tokens = [t for line in lines for t in st.fast.tokenize(line)]
    unk = tokens.count(st.fast.unk_token) / max(len(tokens), 1)
    size, vocab_size = len(st.fast), st.config.vocab_size
    figure = f"unk {unk:.1%}, {size} tokens / vocab_size {vocab_size}"
    problems = [p for part in parts for p in part.problems]
    pair = st.fast(lines[0], lines[1])
    if 1 not in pair.get("token_type_ids", []):
        # BERT's second segment needs type 1; a tokenizer_config.json naming another class
        # gives a generic tokenizer without it.
        problems.append(f"a sentence pair gets no token_type_ids of 1 from "
                        f"{type(st.fast).__name__} (tokenizer_config.json's tokenizer_class is "
                        f"{_tokenizer_class(st.out)!r})")  # fmt: skip
    if size > vocab_size:
        problems.append("the tokenizer has ids the model has no row for")
    data = {"uncased": rule.lowercase, "rule": rule.describe(), "unknown_rate": unk,
            "tokens": size, "vocab_size": vocab_size}  # fmt: skip
    for part in parts:
        data.update(part.data)
    if problems:
        return Check("tokenizer", FAIL, figure, "; ".join(problems), data)
    return Check("tokenizer", PASS, figure, "; ".join(p.note for p in parts if p.note), data)


SPM_TEXTS = (
    "Ægteparret købte 1,000 æbler i Århus; 10,000,000 kr. for en idé?",
    "The café's  naïve   résumé costs €3.50 (about £3) -- \"quoted\" and 'single'.",
    "ΟΔΟΣ ΚΑΙ ΚΟΣΜΟΣ",  # a word-final capital sigma lowercases to ς
)


def _check_spm_tokenizer(st: _State) -> Check:
    """A SentencePiece folder (ALBERT): tokenizer.json gives the ids SentencePiece gives after
    ALBERT's own preprocessing (the source's model, else the folder's spiece.model)."""
    from transformers import AutoTokenizer

    settings = (st.manifest or {}).get("settings", {})
    lowercase = settings.get("lowercase", True) is not False
    keep_accents = settings.get("strip_accents") is False
    try:
        source = st.source()
    except InputError:
        source = None
    model = source.vocab_path if source and source.tokenizer == "sentencepiece" else None
    lines = [*danish_sample(), *SPM_TEXTS]
    try:
        st.fast = AutoTokenizer.from_pretrained(st.out)
        problems = spm_mismatches(st.out, model or st.out / SPM_FILE, lines,
                                  lowercase=lowercase, keep_accents=keep_accents)  # fmt: skip
    except (OSError, ValueError, InputError) as e:
        return Check("tokenizer", FAIL, "", one_line(e))
    size, vocab_size = len(st.fast), st.config.vocab_size
    pair = st.fast(lines[0], lines[1])
    if 1 not in pair.get("token_type_ids", []):
        problems.append(f"a sentence pair gets no token_type_ids of 1 from "
                        f"{type(st.fast).__name__}")  # fmt: skip
    if size > vocab_size:
        problems.append("the tokenizer has ids the model has no row for")
    tokens = [t for line in lines for t in st.fast.tokenize(line)]
    unk = tokens.count(st.fast.unk_token) / max(len(tokens), 1)
    figure = f"unk {unk:.1%}, {size} pieces / vocab_size {vocab_size}"
    data = {"sentencepiece": True, "lowercase": lowercase, "keep_accents": keep_accents,
            "unknown_rate": unk, "tokens": size, "vocab_size": vocab_size}  # fmt: skip
    if problems:
        return Check("tokenizer", FAIL, figure, "; ".join(problems[:3]), data)
    against = "the source's" if model else "its own"
    detail = (f"the ids of SentencePiece ({against} model) after ALBERT's preprocessing on "
              f"{len(lines)} lines; pairs typed 0/1")  # fmt: skip
    return Check("tokenizer", PASS, figure, detail, data)


def _tokenizer_class(out: Path) -> Any:
    try:
        return json.loads((out / "tokenizer_config.json").read_text("utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None


def _expected_rule(st: _State, vocab: list[str]) -> Rule:
    """The rule the tokenizer must follow: the vocab's, with the casing and all-or-nothing
    accent setting the conversion recorded (a manifest without them: inferred)."""
    settings = (st.manifest or {}).get("settings", {})
    lower, strip = settings.get("lowercase"), settings.get("strip_accents")
    return rule_for(
        vocab,
        lower if isinstance(lower, bool) else None,
        strip if isinstance(strip, bool) else None,
    )


@dataclass
class _Part:
    """One aspect of the tokenizer check: its problems, else a note for the pass line."""

    problems: list[str] = field(default_factory=list)
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def _first(items: list[str]) -> str:
    """The first item, and how many more there are."""
    return items[0] + (f" (+{len(items) - 1})" if len(items) > 1 else "")


def _vocab_ids(backend: Any, ids: dict[str, int]) -> _Part:
    """The fast tokenizer's vocabulary is vocab.txt's, token for token and id for id."""
    fast = backend.get_vocab(with_added_tokens=True)
    wrong = [t for t, i in ids.items() if fast.get(t) != i]
    extra = [t for t in fast if t not in ids]
    part = _Part(data={"ids_differing": len(wrong), "ids_extra": len(extra)})
    if wrong:
        t = wrong[0]
        part.problems.append(f"{len(wrong)} tokens have another id in tokenizer.json than in "
                             f"vocab.txt, e.g. {t!r}: {fast.get(t)}, line {ids[t] + 1} says "
                             f"{ids[t]}")  # fmt: skip
    if extra:
        part.problems.append(f"tokenizer.json has {len(extra)} tokens vocab.txt lacks, e.g. "
                             f"{extra[0]!r}")  # fmt: skip
    return part


def _whole_words(
    backend: Any, ids: dict[str, int], rule: Rule, never: dict[str, list[str]]
) -> _Part:
    """Every whole-word token of the vocab, tokenized alone, gives its own id.

    A failure is a token the rule lets some text produce but that does not come out as
    itself: the detail says what the normaliser made of it or which pieces it became. Tokens
    no text can produce (tokenizer.never_produced: split by BERT's fixed steps, capitals
    under lowercasing, accents the rule strips...) are only counted. When the rule
    lowercases, the words in capitals must give the same ids.
    """
    words = [t for t in ids if not t.startswith("##") and not is_marker(t)]
    impossible = {t for tokens in never.values() for t in tokens}
    norm = backend.normalizer
    good: list[str] = []
    faulty: list[str] = []
    unreachable: list[str] = []
    for word, enc in zip(words, backend.encode_batch(words, add_special_tokens=False),
                         strict=True):  # fmt: skip
        if enc.ids == [ids[word]]:
            good.append(word)
        elif word in impossible:
            unreachable.append(repr(word))
        elif norm and (n := norm.normalize_str(word)) != word:
            faulty.append(f"{word!r} normalises to {n!r}")
        else:
            faulty.append(f"{word!r} gives {enc.tokens} {enc.ids}, not [{ids[word]}]")
    part = _Part(data={"whole_words": len(words), "failing": len(faulty),
                       "failing_examples": faulty[:5], "unreachable": len(unreachable),
                       "unreachable_examples": unreachable[:5]})  # fmt: skip
    if faulty:
        part.problems.append(f"{len(faulty)} of {len(words)} whole-word tokens of vocab.txt do "
                             f"not tokenize to themselves: {'; '.join(faulty[:3])}")  # fmt: skip
    part.note = f"{len(good)} whole words of vocab.txt give their own id"
    if unreachable:
        part.note += (f" ({len(unreachable)} more no text can produce, e.g. "
                      f"{', '.join(unreachable[:3])})")  # fmt: skip
    if rule.lowercase and any(map(_has_case, "".join(good))):
        pairs = [(w, u) for w in good if (u := _upper(w)) != w]
        missed = []
        # A good word's normalised form is the word itself: when the capitals normalise to
        # the words, the rest of the pipeline sees the same text. Only then the slow way.
        capitals = " ".join(u for _, u in pairs)
        if norm is None or norm.normalize_str(capitals) != " ".join(w for w, _ in pairs):
            encodings = backend.encode_batch([u for _, u in pairs], add_special_tokens=False)
            missed = [
                f"{u!r} gives {enc.tokens}"
                for (w, u), enc in zip(pairs, encodings, strict=True)
                if enc.ids != [ids[w]]
            ]
        part.data.update(capitals_failing=len(missed), capitals_examples=missed[:5])
        part.note += ", in capitals too"
        if missed:
            part.problems.append(f"the vocab is uncased, but {len(missed)} words in capitals do "
                                 f"not give their token: {'; '.join(missed[:3])}")  # fmt: skip
    return part


def _has_case(c: str) -> bool:
    return c.lower() != c.upper()


def _upper(word: str) -> str:
    # Only letters whose capital lowercases back to them: not ß (SS), ı (I), final ς (Σ).
    if len(up := word.upper()) == len(word) and up.lower() == word:
        return up
    return "".join(c.upper() if len(c.upper()) == 1 and c.upper().lower() == c else c
                   for c in word)  # fmt: skip


# Accented letters beside the vocab's own: each must normalise as the rule says (mostly:
# lose its accents). Latin-1 and Latin Extended-A letters, small ones first, and stacked
# marks (ǻ, ệ).
_PROBE = (
    "".join(
        sorted(
            (c for c in map(chr, range(0xC0, 0x180)) if unicodedata.normalize("NFD", c) != c),
            key=lambda c: (c.isupper(), c),
        )
    )
    + "ǻệ"
)


def _normalisation(st: _State, backend: Any, vocab: list[str], rule: Rule) -> _Part:
    """The tokenizer normalises as the rule says: the vocab's letters beyond ASCII (in
    capitals too, when it lowercases), other accented letters, typographic quotes and dashes.
    """
    letters = [c for c in dict.fromkeys("".join(t for t in vocab if not is_marker(t)))
               if not c.isascii() and c.isalpha()]  # fmt: skip
    probe = dict.fromkeys(
        [*letters, *(c.upper() for c in letters if rule.lowercase), *_PROBE,
         *(c for chars, _ in TRANSLITERATION for c in chars)]
    )  # fmt: skip
    norm = backend.normalizer
    wrong = [
        f"{c!r} -> {got!r}, expected {want!r}"
        for c in probe
        if (got := norm.normalize_str(c) if norm else c) != (want := rule.normalize(c))
    ]
    kept = [c for c in letters if rule.normalize(c) == c]
    part = _Part(
        note=(f"{_few(sorted(kept))} kept; " if kept else "") + f"rule: {rule.describe()}",
        data={"letters": "".join(letters), "normalising_otherwise": len(wrong)},
    )
    if wrong:
        part.problems.append(f"{len(wrong)} of {len(probe)} letters and marks normalise "
                             f"otherwise than the rule ({rule.describe()}) says: "
                             f"{'; '.join(wrong[:3])}")  # fmt: skip
        written = _written_normaliser(st.out)
        if written and written != type(norm).__name__:
            part.problems.append(f"transformers built a {type(norm).__name__} instead of "
                                 f"tokenizer.json's {written} (tokenizer_config.json's "
                                 f"tokenizer_class is {_tokenizer_class(st.out)!r})")  # fmt: skip
    return part


def _few(items: list[str], n: int = 12) -> str:
    """The first `n` items, and how many more there are."""
    return " ".join(items[:n]) + (f" (+{len(items) - n})" if len(items) > n else "")


def _written_normaliser(out: Path) -> str | None:
    """The type of tokenizer.json's normaliser, as written."""
    try:
        return json.loads((out / "tokenizer.json").read_text("utf-8"))["normalizer"]["type"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _fast_equals_slow(fast: Any, slow: Any, lines: list[str], rule: Rule) -> _Part:
    """The fast (tokenizer.json) and slow (vocab.txt) tokenizers agree on the sample lines
    where BERT's all-or-nothing setting closest to the rule normalises as the rule does."""
    closest = Rule(rule.lowercase, "strip" if rule.slow_strip_accents else "keep")
    same = [line for line in lines if closest.normalize(line) == rule.normalize(line)]
    differ = [line for line in same if fast(line)["input_ids"] != slow(line)["input_ids"]]
    note = f"fast = slow on {len(same)} lines"
    if len(same) < len(lines):
        note += f" ({len(lines) - len(same)} more the slow tokenizer cannot normalise as the rule)"
    part = _Part(note=note, data={"fast_equals_slow": not differ})
    if differ:
        part.problems.append(f"fast != slow on {len(differ)} of {len(same)} sample lines, "
                             f"e.g. {differ[0]!r}")  # fmt: skip
    return part


def _casing_recorded(st: _State, slow: Any) -> _Part:
    """The tokenizer lowercases as the conversion recorded in its manifest."""
    lower = bool(getattr(slow, "do_lower_case", st.fast.init_kwargs.get("do_lower_case")))
    recorded = (st.manifest or {}).get("settings", {}).get("lowercase")
    if recorded is None or lower == bool(recorded):
        return _Part()
    return _Part([f"lowercase={lower}, the conversion recorded lowercase={bool(recorded)}"])


def _find_source(st: _State, against: Path | None, given: Path | None = None) -> Source | None:
    """The source named (`against`, its config `given`), else the one the manifest records."""
    if against is not None:
        return open_source(Path(against), config=given)
    paths = source_paths(st.manifest or {}, st.out)
    if paths is None or not Path(f"{paths['checkpoint']}.index").is_file():
        return None
    config = given or paths.get("config")
    if not ((config is None or config.is_file()) and paths["vocab"].is_file()):
        return None
    return load_source(locate_files(paths["checkpoint"].parent, checkpoint=paths["checkpoint"],
                              config=config, vocab=paths["vocab"]),
                       part=(st.manifest or {}).get("settings", {}).get("part"))  # fmt: skip


def _source_part(st: _State, source: Source, kind: ModelKind) -> tuple[Source, ModelKind]:
    """The source read for the model's part. A class that several parts write (ElectraModel)
    with no part recorded is the part whose sizes are config.json's, and of parts of the same
    sizes (ELECTRA-Small's generator is as wide as its discriminator) the one whose first
    encoder kernel the model holds."""
    name = kind.architecture.name
    parts = [p for p in kind.family.parts if any(a.name == name for a in kind.family.classes(p)[1])]
    if len(parts) > 1 and _recorded_part(st) is None:
        sizes = ("hidden_size", "num_hidden_layers", "embedding_size")
        fits = []
        for part in parts:
            candidate = source if part == source.part else _reload(source, part)
            if all(candidate.config.get(k) == getattr(st.config, k, None) for k in sizes):
                fits.append((candidate, model_kind(kind.family.model_type, name, part,
                                                   kind.family.name)))  # fmt: skip
        same = [f for f in fits if _holds_first_kernel(st, *f)] if len(fits) > 1 else fits
        if same or fits:
            return (same or fits)[0]
    if kind.part != source.part:
        source = _reload(source, kind.part)
    return source, kind


def _holds_first_kernel(st: _State, source: Source, kind: ModelKind) -> bool:
    """Whether the model's first encoder kernel is the one `source`'s part maps to it."""
    ckpt = open_checkpoint(source.checkpoint, "native")
    try:
        names = ckpt.variables()
        table = kind.family.table(names.keys(), kind.part, source.config)
        rule = next((r for r in table.rules if r.group == "encoder" and r.transform == TRANSPOSE
                     and "{" in r.tf), None)  # fmt: skip
        if rule is None:
            return False
        index = tuple((k, 0) for k, _ in table.ranges if f"{{{k}}}" in rule.tf)
        tf_name, hf = fill(rule.tf, index), fill(rule.hf, index)
        if not kind.architecture.prefixed:
            hf = hf.removeprefix(table.prefix)
        param = dict(st.model.named_parameters()).get(hf)
        if param is None or tf_name not in names:
            return False
        value = ckpt.read(tf_name).T.astype(np.float64)
        return bool(np.array_equal(param.detach().double().numpy(), value))
    finally:
        ckpt.close()


def _reload(source: Source, part: str) -> Source:
    """The same source files read for another part of the checkpoint."""
    files = locate_files(source.checkpoint.parent, checkpoint=source.checkpoint,
                   config=source.config_path, vocab=source.vocab_path)  # fmt: skip
    return load_source(files, part=part)


def _batch(fast: Any, lines: list[str], max_len: int) -> dict[str, np.ndarray]:
    """Pairs and singles of Danish sentences, padded: both segments and padding exercised."""
    firsts = [lines[0], lines[2], lines[4], lines[6]]
    seconds = [lines[1], None, lines[5], None]
    encs = [
        fast(a, b, truncation=True, max_length=max_len) if b else fast(a, truncation=True,
                                                                        max_length=max_len)
        for a, b in zip(firsts, seconds, strict=True)
    ]  # fmt: skip
    if any("token_type_ids" not in e for e in encs):
        raise ValueError(f"{type(fast).__name__} gives no token_type_ids")
    width = max(len(e["input_ids"]) for e in encs)
    pad = fast.pad_token_id or 0
    out = {k: np.full((len(encs), width), pad if k == "input_ids" else 0, dtype=np.int64)
           for k in ("input_ids", "token_type_ids", "attention_mask")}  # fmt: skip
    for i, e in enumerate(encs):
        for k in out:
            out[k][i, : len(e[k])] = e[k]
    return out


class _Stopped(Exception):
    """verify ended before the early reference did."""


def _source_reader(
    ckpt: Any, before: Callable[[], None] | None = None
) -> Callable[[str], np.ndarray]:
    """ckpt.read as float64, refusing a variable that is not floating point or not finite.

    `before` is called before each variable is read (the worker's chance to stop).
    """

    def get(name: str) -> np.ndarray:
        if before is not None:
            before()
        value = ckpt.read(name)
        if value.dtype.kind != "f" and value.dtype.name != "bfloat16":
            raise InputError(f"{ckpt.prefix}: variable {name} is {value.dtype.name}, "
                             "not floating point")  # fmt: skip
        value = np.asarray(value, dtype=np.float64)
        bad = count_nonfinite(value)
        if bad:
            raise InputError(f"{ckpt.prefix}: variable {name} has {bad} non-finite values "
                             "(NaN or infinity)")  # fmt: skip
        return value

    return get


def _source_mismatch(ckpt: Any, source: Source, config: Any, kind: ModelKind) -> str | None:
    """How the source checkpoint disagrees in size with the model, if it does (one line).

    Heads the class leaves out (--heads) are not compared: config.json does not size them.
    """
    model_cfg = {**config.to_dict(), "num_labels": config.num_labels}
    found = ckpt.variables()
    shapes = REFERENCES[kind.family.name].shapes(model_cfg, kind.part, found.keys(),
                                                 _has(ckpt, source, kind))  # fmt: skip
    for name, shape in shapes.items():
        if name not in found:
            return f"{ckpt.prefix}: no variable {name}, which the model has"
        if tuple(found[name].shape) != shape:
            return (f"{name} is {list(found[name].shape)} in {ckpt.prefix}, the model "
                    f"needs {list(shape)}")  # fmt: skip
    # What shapes cannot show (heads, extra layers): the reference runs on the source's sizes.
    sizes = [*REQUIRED_CONFIG_KEYS, *(["embedding_size"] if "embedding_size" in source.config
                                      else [])]  # fmt: skip
    for key in sizes:
        if source.config.get(key) != model_cfg.get(key):
            said = source.config_path.name if source.config_path else "the source's sizes"
            return (f"{said} has {key} {source.config.get(key)}, the "
                    f"model's config.json {model_cfg.get(key)}")  # fmt: skip
    return None


@dataclass
class Comparison:
    """One output (or layer) of the model against the reference."""

    name: str
    diff: float  # max |model - reference|
    scale: float  # max |reference|
    allowance: float  # PARITY_ATOL + PARITY_RTOL * scale

    @property
    def ratio(self) -> float:
        return self.diff / self.allowance

    @property
    def ok(self) -> bool:
        return self.diff <= self.allowance


def compare(name: str, got: np.ndarray, want: np.ndarray) -> Comparison:
    """Compare in float64; a shape mismatch or a non-finite value raises ValueError naming it."""
    if got.shape != want.shape:
        raise ValueError(f"{name}: the model gives shape {list(got.shape)}, the reference "
                         f"{list(want.shape)}")  # fmt: skip
    for side, value in (("model", got), ("reference", want)):
        bad = count_nonfinite(value)
        if bad:
            raise ValueError(f"{name}: {bad} non-finite values (NaN or infinity) from the {side}")
    scale = float(np.max(np.abs(want), initial=0.0))
    diff = float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0))
    return Comparison(name, diff, scale, PARITY_ATOL + PARITY_RTOL * scale)


def _kind(st: _State, class_name: str | None = None, family: str | None = None) -> ModelKind:
    """The family's table entry for the model's class: what it computes, from which heads,
    for which part (the one the conversion recorded, for a class two parts write), of
    `family` (the source's: TF1 and TF2 BERT write the same classes) where it writes them."""
    name = class_name or type(st.model).__name__
    model_type = st.config.model_type if st.config is not None else "bert"
    return model_kind(model_type, name, _recorded_part(st), family)


def _recorded_part(st: _State) -> str | None:
    part = (st.manifest or {}).get("settings", {}).get("part")
    return part if isinstance(part, str) and part else None


def _model_outputs(model: Any, kind: ModelKind, batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every output the model's class has (the family table's Architecture.outputs), and its
    hidden states ("layers"), computed in float64."""
    import torch

    arch = kind.architecture
    # Stored values widen exactly; float32's rounding would hide small faults. The model stays
    # in float64: nothing after parity computes with it (fill-mask loads its own), and
    # narrowing it back would cost as much as widening.
    model.double()
    with torch.no_grad():
        tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
        base = model.base_model(**tensors, output_hidden_states=True)
        got: dict[str, Any] = {"sequence": base.last_hidden_state}
        if arch.pooler:
            got["pooled"] = base.pooler_output
        for head in kind.heads:
            if head.group in arch.heads:
                value = got[head.input]
                for module in head.modules:
                    value = model.get_submodule(module)(value)
                got[head.group] = value
    got = {k: v.numpy() for k, v in got.items()}
    got["layers"] = [h.numpy() for h in base.hidden_states]
    return got


def _layer_name(i: int) -> str:
    return "embeddings" if i == 0 else f"layer_{i - 1}"


def _expected_act(st: _State, source: Source) -> str:
    """The activation the conversion recorded, else the one the source's config names.

    A source whose family computes one activation, its config's (Model Garden's "gelu" is
    only ever the tanh form), is held to it: an override does not change what it computes."""
    if BY_NAME[source.family].fixed_activation:
        return str(source.config["hidden_act"])
    if st.manifest and st.manifest.get("settings", {}).get("hidden_act"):
        return str(st.manifest["settings"]["hidden_act"])
    return str(source.config.get("hidden_act", "gelu"))


def _reference(
    ckpt: Any,
    source: Source,
    batch: dict[str, np.ndarray],
    act: str,
    kind: ModelKind,
    before: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """The numpy reference forward pass over the source's variables, in float64.

    Only the heads (and pooler) `arch` has are computed: a head the checkpoint has and the
    class leaves out (--heads) is not compared. The table only says which outputs; how each
    is computed stays bert_reference.py's own.
    """
    reference = REFERENCES[kind.family.name]
    return reference.outputs(_source_reader(ckpt, before), source.config, kind.part, batch,
                             names=ckpt.variables().keys(), has=_has(ckpt, source, kind),
                             hidden_act=act)  # fmt: skip


def _has(ckpt: Any, source: Source, kind: ModelKind) -> Callable[[str], bool]:
    """Whether the checkpoint holds a variable that the class `kind` names uses."""
    names, groups = ckpt.variables(), kind.architecture.groups
    table = kind.family.table(names.keys(), kind.part, source.config)
    return lambda name: name in names and table.group_of(name) in groups


class _TokenizerJson:
    """tokenizer.json through the tokenizers library alone, called as _batch calls a tokenizer.

    Gives the worker's reference its inputs before transformers is imported; parity uses that
    reference only if the folder's AutoTokenizer gives the same inputs.
    """

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        pad = self._tok.token_to_id("[PAD]")  # WordPiece's; SentencePiece's (ALBERT) <pad>
        self.pad_token_id = pad if pad is not None else self._tok.token_to_id("<pad>")

    def __call__(self, a: str, b: str | None = None, *, truncation: bool,
                 max_length: int) -> dict[str, list[int]]:  # fmt: skip
        self._tok.enable_truncation(max_length)
        enc = self._tok.encode(a, b)
        return {"input_ids": enc.ids, "token_type_ids": enc.type_ids,
                "attention_mask": enc.attention_mask}  # fmt: skip


@dataclass
class _Early:
    """The reference computed on the worker thread, and the inputs it was computed on."""

    batch: dict[str, np.ndarray]
    architecture: str  # the class config.json names: its outputs are the ones computed
    part: str  # the part of the checkpoint it ran (ELECTRA's discriminator or generator)
    outputs: dict[str, Any] | None = None
    error: Exception | None = None  # what the forward pass raised


def _early_reference(st: _State, source: Source, reader: str) -> _Early | None:
    """Parity's reference, computed on the worker thread from tokenizer.json's inputs.

    Anything amiss before the forward pass is left for the checks to find (None); what the
    forward pass raises is kept, to be raised again where parity would have raised it.
    """
    try:
        config = read_config_json(st.out / "config.json")
        limit = int(config["max_position_embeddings"])
        classes = config.get("architectures") or ["?"]
        kind = model_kind(str(config.get("model_type")), str(classes[0]), _recorded_part(st),
                          source.family)  # fmt: skip
        batch = _batch(_TokenizerJson(st.out / "tokenizer.json"), danish_sample(), min(64, limit))
        act = _expected_act(st, source)
        if act not in ACTIVATIONS or kind.part != source.part:
            return None
        ckpt = open_checkpoint(source.checkpoint, reader)
    except Exception:  # noqa: BLE001 - the checks report it, in their order
        return None
    early = _Early(batch, kind.architecture.name, kind.part)
    blas = _BlasThreads()

    def before() -> None:
        if st.stopped():
            raise _Stopped
        if st.waiting.is_set():
            blas.restore()

    try:
        blas.limit()
        early.outputs = _reference(ckpt, source, batch, act, kind, before)
    except _Stopped:
        return None
    except Exception as e:  # noqa: BLE001 - raised again by parity, if it uses this
        early.error = e.with_traceback(None)  # its frames hold the arrays read so far
    finally:
        blas.restore()
        ckpt.close()
        _trim_heap()
    return early


class _BlasThreads:
    """numpy's BLAS on one thread while the worker shares the machine with the main thread.

    With more, the worker's BLAS threads and the main thread outnumber the cores: every
    matrix product then waits, spinning, for whichever is descheduled (2 to 6 s of CPU lost
    on BERT-base; slower than no worker at all on a loaded machine). Once parity waits for
    the worker, the main thread is idle and the limit is lifted.
    """

    def __init__(self) -> None:
        self._limits: Any = None

    def limit(self) -> None:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # an environment installed before verify needed it
            return
        self._limits = threadpool_limits(limits=1, user_api="blas")

    def restore(self) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None


def _trim_heap() -> None:
    """Hand the heap memory this thread freed back to the system (glibc only).

    glibc keeps it in the thread's own arena, where the main thread's later allocations (the
    float64 model) cannot reuse it: without this verify's peak RSS grew by about 60 MB.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # another C library
            ctypes.CDLL(None).malloc_trim(0)


def _early_outputs(
    st: _State, batch: dict[str, np.ndarray], kind: ModelKind
) -> dict[str, Any] | None:
    """The worker's reference, if it was computed on `batch` for `arch`; what it raised is
    raised here."""
    st.waiting.set()
    if st.early is not None and not st.early.done():
        st.step("parity: waiting for the reference forward pass, begun at the start")
    early = st.early.result() if st.early is not None else None
    st.early = None  # its arrays are the caller's now, or garbage
    if early is None:
        return None
    if (early.architecture, early.part) != (kind.architecture.name, kind.part):
        log.debug("parity: the worker computed another class's outputs; computing them again")
        return None
    if early.batch.keys() != batch.keys() or not all(
        np.array_equal(early.batch[k], batch[k]) for k in batch
    ):
        log.debug("parity: tokenizer.json alone gave other inputs; computing the reference again")
        return None
    log.debug("parity: the worker computed the reference on these inputs")
    if early.error is not None:
        raise early.error
    return early.outputs


def _check_parity(st: _State, reader: str) -> Check:
    if st.model is None or st.fast is None:
        return Check("parity", SKIP, detail="model or tokenizer did not load")
    try:
        source = st.source()
    except InputError as e:
        return Check("parity", FAIL, "", str(e))
    if source is None:
        return Check("parity", SKIP, detail="no source: pass --against SRC")

    expected_act = _expected_act(st, source)
    if expected_act not in ACTIVATIONS:
        return Check("parity", FAIL, "", f"unsupported hidden_act {expected_act!r}")
    actual_act = st.config.hidden_act
    try:
        kind = _kind(st, family=source.family)
    except ValueError as e:
        return Check("parity", FAIL, "architecture", str(e))
    if kind.family.name != source.family:
        theirs = BY_NAME[source.family].title
        return Check("parity", FAIL, "source differs", f"the model is {kind.family.title}, "
                     f"{source.checkpoint} {with_article(theirs)} checkpoint")  # fmt: skip
    try:  # the part the class computes, unless the conversion recorded another
        source, kind = _source_part(st, source, kind)
    except InputError as e:
        return Check("parity", FAIL, "source", str(e))
    batch = _batch(st.fast, danish_sample(), min(64, int(st.config.max_position_embeddings)))
    ckpt = open_checkpoint(source.checkpoint, reader)
    try:
        mismatch = _source_mismatch(ckpt, source, st.config, kind)
        if mismatch:
            return Check("parity", FAIL, "source differs", mismatch)
        ref = _early_outputs(st, batch, kind)
        if ref is None:
            st.step("parity: the reference forward pass over the checkpoint's variables")
            ref = _reference(ckpt, source, batch, expected_act, kind)
    except InputError as e:
        return Check("parity", FAIL, "source", str(e))
    finally:
        ckpt.close()
    got = _model_outputs(st.model, kind, batch)
    want = ref
    outputs: list[Comparison] = []
    try:
        # Layers first: a non-finite value is named where it first appears.
        pairs = zip(got.pop("layers"), ref["layers"], strict=True)
        layers = [compare(_layer_name(i), g, w) for i, (g, w) in enumerate(pairs)]
        for key, value in got.items():
            ref_value = want.get(key)
            if value is None and ref_value is None:
                continue
            if value is None or ref_value is None:
                ckpt_name = source.checkpoint
                detail = (
                    f"the model has the {key} output, {ckpt_name} has no variables for it"
                    if ref_value is None
                    else f"{ckpt_name} has the {key} output, the model has not"
                )
                return Check("parity", FAIL, "source differs", detail)
            outputs.append(compare(key, value, ref_value))
    except ValueError as e:
        return Check("parity", FAIL, "non-finite" if "non-finite" in str(e) else "shape", str(e))
    worst = max(outputs, key=lambda c: c.ratio)
    diverged = next((c.name for c in layers if not c.ok), None)
    data = {
        "atol": PARITY_ATOL, "rtol": PARITY_RTOL, "hidden_act": expected_act,
        "inputs": len(batch["input_ids"]), "worst": worst.name, "diverges_at": diverged,
        "outputs": {c.name: {"diff": c.diff, "max_ref": c.scale, "allowance": c.allowance}
                    for c in outputs},
        "layers": {c.name: {"diff": c.diff, "max_ref": c.scale, "allowance": c.allowance}
                   for c in layers},
    }  # fmt: skip
    listing = "|diff| (allowance): " + ", ".join(
        f"{c.name} {c.diff:.1e} ({c.allowance:.1e})" for c in outputs
    )
    figure = (
        f"worst {worst.name} {worst.diff:.1e} {'<=' if worst.ok else '>'} {worst.allowance:.1e}"
    )
    if actual_act != expected_act:
        return Check("parity", FAIL, figure, f"config.json has hidden_act {actual_act!r}, "
                     f"the source calls for {expected_act!r}; {listing}", data)  # fmt: skip
    failed = [c for c in outputs + layers if not c.ok]
    if failed:
        where = f"diverges from {diverged}" if diverged else "the encoder agrees (a head differs)"
        return Check(
            "parity",
            FAIL,
            figure,
            f"over the allowance: {', '.join(c.name for c in failed)}; {where}; {listing}",
            data,
        )
    criterion = f"{PARITY_ATOL:g} + {PARITY_RTOL:g} * max|ref|"
    return Check("parity", PASS, figure, f"{data['inputs']} inputs, {expected_act}, float64; "
                 f"every layer and output within {criterion}; {listing}", data)  # fmt: skip


def _check_smoke(st: _State, expect: str | None, sentences: tuple[str, ...]) -> Check:
    if st.model is None or st.fast is None:
        return Check("fill-mask", SKIP, detail="model or tokenizer did not load")
    try:
        arch: Architecture | None = _kind(st).architecture
    except ValueError:
        arch = None
    if arch is None or "mlm" not in arch.heads:
        return Check("fill-mask", SKIP, detail=f"{type(st.model).__name__} has no MLM head")
    unmasked = [s for s in sentences if "[MASK]" not in s]
    if unmasked:
        return Check("fill-mask", FAIL, "no [MASK]", f"sentence {unmasked[0]!r} has no [MASK]")
    # The pipeline answers several masks with nested lists, and a sentence longer than the
    # position table with a tensor size error.
    several = [s for s in sentences if s.count("[MASK]") > 1]
    if several:
        return Check("fill-mask", FAIL, "several [MASK]",
                     f"sentence {several[0]!r} has {several[0].count('[MASK]')} [MASK]; "
                     "fill-mask takes one")  # fmt: skip
    limit = int(st.config.max_position_embeddings)
    for sentence in sentences:
        n = len(st.fast(sentence.replace("[MASK]", st.fast.mask_token))["input_ids"])
        if n > limit:
            short = sentence if len(sentence) <= 60 else sentence[:57] + "..."
            return Check("fill-mask", FAIL, "too long",
                         f"sentence {short!r} is {n} tokens, more than max_position_embeddings "
                         f"{limit}")  # fmt: skip
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(st.out), tokenizer=st.fast, top_k=5)
    tops = []
    for sentence in sentences:
        text = sentence.replace("[MASK]", st.fast.mask_token)
        tops.append([p["token_str"].strip() for p in fill(text)])
    shown = " | ".join(f"{s}: {', '.join(t)}" for s, t in zip(sentences, tops, strict=True))
    if expect is None:
        return Check("fill-mask", INFO, f"top-1 {tops[0][0]!r}", shown)
    ok = expect in tops[0]
    return Check("fill-mask", PASS if ok else FAIL, f"{expect!r} {'in' if ok else 'not in'} top 5",
                 shown)  # fmt: skip

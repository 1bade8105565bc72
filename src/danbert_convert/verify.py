"""The verify stage: a converted folder loads cleanly and computes what the TF checkpoint computes.

Five checks, each pass/fail (or info/skip) with a figure: files, weights, tokenizer, parity
against a numpy forward pass over the TF variables, and a fill-mask smoke test.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from danbert_convert._fs import sha256_file
from danbert_convert.checkpoint import open_checkpoint
from danbert_convert.errors import InputError, VerifyError, one_line
from danbert_convert.reference import ACTIVATIONS, forward
from danbert_convert.source import Source, discover
from danbert_convert.writer import BIN_NAME, MANIFEST_NAME, WEIGHTS_NAME

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
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
    name: str
    status: str
    figure: str = ""
    detail: str = ""


@dataclass
class Report:
    model: Path
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def raise_if_failed(self) -> None:
        """VerifyError naming the failed checks, if any failed."""
        failed = [c.name for c in self.checks if c.status == FAIL]
        if failed:
            raise VerifyError(f"{self.model}: failed checks: {', '.join(failed)}")

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
    return data if isinstance(data, dict) else None


class _State:
    """What the checks load once and share."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.manifest = read_manifest(out)
        self.config: Any = None
        self.model: Any = None
        self.fast: Any = None


def verify(
    out: Path,
    *,
    against: Path | None = None,
    reader: str = "auto",
    expect: str | None = None,
    sentences: tuple[str, ...] | None = None,
) -> Report:
    """Run every check on the converted folder `out`; never raises for a failed check."""
    out = Path(out)
    if not out.is_dir():
        raise InputError(f"{out}: not a folder")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    st = _State(out)
    report = Report(out)
    # Their load reports and bars would drown the table; our checks read the loading info.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        _run_checks(st, report, against, reader, expect, sentences)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    return report


def _run_checks(
    st: _State,
    report: Report,
    against: Path | None,
    reader: str,
    expect: str | None,
    sentences: tuple[str, ...] | None,
) -> None:
    steps: tuple[tuple[str, Callable[[_State], Check]], ...] = (
        ("files", _check_files),
        ("weights", _check_weights),
        ("tokenizer", _check_tokenizer),
        ("parity", lambda s: _check_parity(s, against, reader)),
        ("fill-mask", lambda s: _check_smoke(s, expect, sentences or SMOKE_SENTENCES)),
    )
    for name, step in steps:
        try:
            check = step(st)
        except Exception as e:  # noqa: BLE001 - whatever a check trips on is its failure
            log.debug("%s raised", name, exc_info=True)
            check = Check(name, FAIL, type(e).__name__, one_line(e))
        log.debug("%s: %s %s %s", check.name, check.status, check.figure, check.detail)
        report.checks.append(check)


def _check_files(st: _State) -> Check:
    from transformers import AutoConfig

    missing = [f for f in ("config.json", *TOKENIZER_FILES) if not (st.out / f).is_file()]
    if not (st.out / WEIGHTS_NAME).is_file() and not (st.out / BIN_NAME).is_file():
        missing.append(WEIGHTS_NAME)
    if missing:
        return Check("files", FAIL, f"{len(missing)} missing", f"missing: {', '.join(missing)}")
    try:
        st.config = AutoConfig.from_pretrained(st.out)
    except (OSError, ValueError) as e:
        return Check("files", FAIL, "config.json", one_line(e))
    if st.config.model_type != "bert":
        return Check("files", FAIL, "config.json", f"model_type is {st.config.model_type!r}")
    if st.manifest:
        # Weights only: config.json and the tokenizer files are the user's to edit.
        for name, digest in st.manifest.get("outputs", {}).items():
            if name not in (WEIGHTS_NAME, BIN_NAME):
                continue
            if (st.out / name).is_file() and sha256_file(st.out / name) != digest:
                return Check(
                    "files", FAIL, name, f"{name} changed since conversion (SHA-256 differs)"
                )
    n = sum(1 for _ in st.out.iterdir())
    return Check("files", PASS, f"{n} files", "config loads as BertConfig")


def _check_weights(st: _State) -> Check:
    if st.config is None:
        return Check("weights", SKIP, detail="no loadable config")
    import transformers

    arch = (st.config.architectures or ["BertModel"])[0]
    cls = getattr(transformers, arch, None)
    if cls is None or not arch.startswith("Bert"):
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
            if load is not cls and kind == "missing_keys" and st.model.base_model.pooler is None:
                # AutoModel always has a pooler; the class converted has none to give it.
                if any(k.startswith("pooler.") for k in keys):
                    note = (f"{arch} loads cleanly; AutoModel adds an untrained pooler "
                            f"({arch} has none)")  # fmt: skip
                keys = [k for k in keys if not k.startswith("pooler.")]
            if keys:
                problems.append(f"{load.__name__}: {kind.replace('_', ' ')}: {keys[0]}"
                                + (f" (+{len(keys) - 1})" if len(keys) > 1 else ""))  # fmt: skip
        if load is cls:
            st.model = model.eval()
    if problems:
        return Check("weights", FAIL, arch, "; ".join(problems))
    n = sum(p.numel() for p in st.model.parameters())
    size = f"{n / 1e6:.1f}M" if n >= 100_000 else str(n)
    return Check("weights", PASS, f"{size} params", note)


def _slow_tokenizer(out: Path) -> Any:
    try:  # transformers 5 keeps the pure-Python BERT tokenizer under this name
        from transformers.models.bert import BertTokenizerLegacy as Slow
    except ImportError:  # transformers 4
        from transformers import BertTokenizer as Slow  # type: ignore[assignment]
    return Slow.from_pretrained(out)


def _check_tokenizer(st: _State) -> Check:
    if st.config is None:
        return Check("tokenizer", SKIP, detail="no loadable config")
    from transformers import AutoTokenizer

    try:
        st.fast = AutoTokenizer.from_pretrained(st.out)
        slow = _slow_tokenizer(st.out)
    except (OSError, ValueError) as e:
        return Check("tokenizer", FAIL, "", one_line(e))
    lines = danish_sample()
    for line in lines:
        f, s = st.fast(line)["input_ids"], slow(line)["input_ids"]
        if f != s:
            return Check("tokenizer", FAIL, "fast != slow", f"they disagree on {line!r}")
    norm = st.fast.backend_tokenizer.normalizer
    lowered = norm.normalize_str("Æ Ø Å") if norm else "Æ Ø Å"
    do_lower = bool(getattr(slow, "do_lower_case", st.fast.init_kwargs.get("do_lower_case")))
    expected_lower = do_lower
    if st.manifest and "lowercase" in st.manifest.get("settings", {}):
        expected_lower = bool(st.manifest["settings"]["lowercase"])
    want = "æ ø å" if expected_lower else "Æ Ø Å"
    if lowered != want:
        return Check("tokenizer", FAIL, repr(lowered), f"'Æ Ø Å' normalises to {lowered!r}, "
                     f"expected {want!r} (accent stripping or casing is wrong)")  # fmt: skip
    if do_lower != expected_lower:
        return Check("tokenizer", FAIL, f"lowercase={do_lower}",
                     f"the conversion recorded lowercase={expected_lower}")  # fmt: skip
    tokens = [t for line in lines for t in st.fast.tokenize(line)]
    unk = tokens.count(st.fast.unk_token) / max(len(tokens), 1)
    size = len(st.fast)
    vocab_size = st.config.vocab_size
    figure = f"unk {unk:.1%}, {size} tokens / vocab_size {vocab_size}"
    if size > vocab_size:
        return Check("tokenizer", FAIL, figure, "the tokenizer has ids the model has no row for")
    return Check("tokenizer", PASS, figure, f"fast = slow on {len(lines)} lines; æ ø å kept")


def _find_source(st: _State, against: Path | None) -> Source | None:
    if against is not None:
        return discover(Path(against))
    src = (st.manifest or {}).get("source", {})
    paths = [src.get(k) for k in ("checkpoint", "config", "vocab")]
    if not all(paths) or not Path(f"{paths[0]}.index").is_file():
        return None
    if not all(Path(p).is_file() for p in paths[1:]):
        return None
    return discover(Path(paths[1]).parent, checkpoint=Path(paths[0]), config=Path(paths[1]),
                    vocab=Path(paths[2]))  # fmt: skip


def _batch(fast: Any, lines: list[str], max_len: int) -> dict[str, np.ndarray]:
    """Pairs and singles of Danish sentences, padded: both segments and padding exercised."""
    firsts = [lines[0], lines[2], lines[4], lines[6]]
    seconds = [lines[1], None, lines[5], None]
    encs = [
        fast(a, b, truncation=True, max_length=max_len) if b else fast(a, truncation=True,
                                                                        max_length=max_len)
        for a, b in zip(firsts, seconds, strict=True)
    ]  # fmt: skip
    width = max(len(e["input_ids"]) for e in encs)
    pad = fast.pad_token_id or 0
    out = {k: np.full((len(encs), width), pad if k == "input_ids" else 0, dtype=np.int64)
           for k in ("input_ids", "token_type_ids", "attention_mask")}  # fmt: skip
    for i, e in enumerate(encs):
        for k in out:
            out[k][i, : len(e[k])] = e[k]
    return out


def _check_parity(st: _State, against: Path | None, reader: str) -> Check:
    if st.model is None or st.fast is None:
        return Check("parity", SKIP, detail="model or tokenizer did not load")
    try:
        source = _find_source(st, against)
    except InputError as e:
        return Check("parity", FAIL, "", str(e))
    if source is None:
        return Check("parity", SKIP, detail="no source: pass --against SRC")
    import torch

    expected_act = source.config.get("hidden_act", "gelu")
    if st.manifest and st.manifest.get("settings", {}).get("hidden_act"):
        expected_act = st.manifest["settings"]["hidden_act"]
    if expected_act not in ACTIVATIONS:
        return Check("parity", FAIL, "", f"unsupported hidden_act {expected_act!r}")
    actual_act = st.config.hidden_act
    batch = _batch(st.fast, danish_sample(), min(64, int(st.config.max_position_embeddings)))
    ckpt = open_checkpoint(source.checkpoint, reader)
    try:
        names = ckpt.variables()
        ref = forward(ckpt.read, source.config, batch["input_ids"],
                      batch["token_type_ids"], batch["attention_mask"], hidden_act=expected_act,
                      has=names.__contains__)  # fmt: skip
    finally:
        ckpt.close()
    model = st.model
    with torch.no_grad():
        tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
        base = model.base_model(**tensors)
        seq, pooled = base.last_hidden_state, getattr(base, "pooler_output", None)
        got: dict[str, Any] = {"sequence": seq, "pooled": pooled}
        heads = getattr(model, "cls", None)
        if heads is not None and hasattr(heads, "predictions"):
            got["mlm"] = heads.predictions(seq)
        if heads is not None and hasattr(heads, "seq_relationship") and pooled is not None:
            got["nsp"] = heads.seq_relationship(pooled)
        if hasattr(model, "classifier") and pooled is not None:
            got["classifier"] = model.classifier(pooled)
        if hasattr(model, "qa_outputs"):
            got["squad"] = model.qa_outputs(seq)
    if model.base_model.pooler is None:
        got.pop("pooled")  # the checkpoint's pooler was left out, on purpose, with the class
    want = {"sequence": ref.sequence, "pooled": ref.pooled, "mlm": ref.mlm_logits,
            "nsp": ref.nsp_logits, "classifier": ref.classifier_logits,
            "squad": ref.squad_logits}  # fmt: skip
    diffs: dict[str, float] = {}
    for key, value in got.items():
        if value is None and want[key] is None:
            continue
        if value is None or want[key] is None:
            return Check("parity", FAIL, key, f"{key} output exists on one side only")
        diffs[key] = float(np.max(np.abs(value.double().numpy() - want[key])))
    worst = max(diffs, key=lambda k: diffs[k])
    figure = f"max |diff| {diffs[worst]:.1e} ({worst})"
    detail = ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
    if actual_act != expected_act:
        return Check("parity", FAIL, figure, f"config.json has hidden_act {actual_act!r}, "
                     f"the source calls for {expected_act!r}; {detail}")  # fmt: skip
    if diffs[worst] > PARITY_TOLERANCE:
        return Check("parity", FAIL, figure, f"over {PARITY_TOLERANCE:g}: {detail}")
    return Check(
        "parity", PASS, figure, f"{len(batch['input_ids'])} inputs, {expected_act}: {detail}"
    )


def _check_smoke(st: _State, expect: str | None, sentences: tuple[str, ...]) -> Check:
    if st.model is None or st.fast is None:
        return Check("fill-mask", SKIP, detail="model or tokenizer did not load")
    heads = getattr(st.model, "cls", None)
    if heads is None or not hasattr(heads, "predictions"):
        return Check("fill-mask", SKIP, detail=f"{type(st.model).__name__} has no MLM head")
    unmasked = [s for s in sentences if "[MASK]" not in s]
    if unmasked:
        return Check("fill-mask", FAIL, "no [MASK]", f"sentence {unmasked[0]!r} has no [MASK]")
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

"""Reading TensorFlow 1 name-based checkpoints: locating them and a narrow reader interface.

A reader lists variables (name, shape, dtype) and reads one variable at a time as a numpy
array. `open_checkpoint` picks an implementation; the TensorFlow one is imported only
when used.
"""

from __future__ import annotations

import codecs
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from danbert_convert.defaults import READERS
from danbert_convert.errors import InputError, one_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariableInfo:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        # Python ints: an index can claim dimensions whose product overflows int64.
        return math.prod(self.shape) * self.dtype.itemsize


class CheckpointReader(Protocol):
    """What every reader offers. `prefix` is the path without `.index`/`.data-*`."""

    prefix: Path

    def variables(self) -> dict[str, VariableInfo]:
        """Every variable in the checkpoint, by name, sorted by name."""
        ...

    def read(self, name: str) -> np.ndarray:
        """One variable's value, a new array the caller owns (writers keep it while they
        work on other threads); raises InputError naming the file and variable on failure."""
        ...

    def data_file(self, name: str) -> Path:
        """The file that holds the variable's bytes, for messages about its values."""
        ...

    def close(self) -> None: ...


# Elements per step of the finiteness check: its scratch buffer stays small and in cache.
_FINITE_STEP = 1 << 18


def count_nonfinite(value: np.ndarray) -> int:
    """How many NaN or infinite values `value` holds (0 for integer and bool arrays).

    Exact and about as fast as one read of the data, with a fixed 256 kB of scratch.
    """
    if value.dtype.kind not in "fc" and value.dtype.name != "bfloat16":
        return 0
    flat = value.reshape(-1)
    scratch = np.empty(min(_FINITE_STEP, flat.size), dtype=np.bool_)
    for start in range(0, flat.size, _FINITE_STEP):
        part = flat[start : start + _FINITE_STEP]
        ok = scratch[: part.size]
        np.isfinite(part, out=ok)
        if not ok.all():
            return int(np.count_nonzero(~np.isfinite(flat)))
    return 0


def check_finite(value: np.ndarray, name: str, where: Callable[[], object]) -> None:
    """Raise InputError naming the file `where()` and variable `name` if `value` has NaN/Inf."""
    bad = count_nonfinite(value)
    if bad:
        raise InputError(
            f"{where()}: variable {name} holds NaN/Inf ({bad} of {value.size} values); "
            "a model with non-finite weights computes nothing useful"
        )


def data_files(prefix: Path) -> list[Path]:
    """The `.data-*` shards that exist beside `prefix` (for hashing and size reports)."""
    return sorted(prefix.parent.glob(prefix.name + ".data-*-of-*"))


def find_checkpoint(src: Path) -> Path:
    """The checkpoint prefix inside folder `src`.

    Order: the `checkpoint` state file, then `bert_model.ckpt`, then a single `*.index`.
    """
    state = src / "checkpoint"
    stale = ""
    if state.is_file():
        named = _state_file_prefix(src, state)
        if isinstance(named, Path):
            return named
        stale = f"; {state} names {named}, which is not here"
        log.warning("%s names %s, which is not here; looking for another checkpoint", state, named)
    if (src / "bert_model.ckpt.index").is_file():
        return src / "bert_model.ckpt"
    candidates = sorted(src.glob("*.index"))
    if len(candidates) == 1:
        return candidates[0].with_suffix("")
    if not candidates:
        raise InputError(f"{src}: no checkpoint (*.index) found{stale}")
    names = ", ".join(c.with_suffix("").name for c in candidates)
    raise InputError(f"{src}: several checkpoints ({names}){stale or ' and no `checkpoint` file'}; "
                     "choose with --checkpoint")  # fmt: skip


def _state_file_prefix(src: Path, state: Path) -> Path | str:
    """The prefix the state file names, if it is in `src`; else the name as written.

    A name outside `src` (absolute, or with `..`) is used only as its base name inside `src`
    (the training machine's path, copied here); a checkpoint that exists out there is refused,
    so that config and vocab from `src` are never paired with another folder's weights.
    """
    try:
        text = state.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise InputError(f"{state}: cannot read: {e.strerror or e}") from None
    m = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', text, re.M)
    if not m:
        raise InputError(f"{state}: no model_checkpoint_path line")
    # A text-format string: C escapes, as in a Windows path C:\\run\\model.ckpt or the
    # octal UTF-8 bytes older TF wrote for non-ASCII names.
    try:
        raw = codecs.escape_decode(m.group(1).encode("utf-8"))[0]
    except ValueError as e:
        raise InputError(f'{state}: model_checkpoint_path "{m.group(1)}": {e}') from None
    written = raw.decode("utf-8", errors="replace")
    named = Path(written) if Path(written).is_absolute() else src / written
    inside = _lexically_inside(Path(f"{named}.index"), src)
    if inside and _has_index(named):
        return named
    base = re.split(r"[\\/]", written)[-1]
    if base not in ("", ".", "..") and _has_index(src / base):
        return src / base
    if not inside and _has_index(named):
        raise InputError(
            f"{state} names the checkpoint {written}, outside {src}; to convert it with the "
            f"config and vocab of {src}, say so with --checkpoint"
        )
    return written


def _has_index(prefix: Path) -> bool:
    try:
        return Path(f"{prefix}.index").is_file()
    except (OSError, ValueError):  # a name too long, or with a NUL byte
        return False


def _lexically_inside(path: Path, folder: Path) -> bool:
    """Whether `path`, with `..` resolved on paper (links not followed), lies in `folder`."""
    p, f = os.path.abspath(path), os.path.abspath(folder)
    try:
        return os.path.commonpath([p, f]) == f
    except ValueError:  # Windows: another drive
        return False


def normalize_prefix(path: Path) -> Path:
    """Accept a prefix, or a path to its `.index` or one of its `.data-*` files."""
    s = str(path)
    s = re.sub(r"\.(index|meta|data-\d{5}-of-\d{5})$", "", s)
    prefix = Path(s)
    if not Path(f"{prefix}.index").is_file():
        raise InputError(f"{prefix}.index: checkpoint index not found")
    return prefix


def open_checkpoint(prefix: Path, reader: str = "auto") -> CheckpointReader:
    """Open the checkpoint at `prefix` with the chosen reader implementation."""
    prefix = normalize_prefix(Path(prefix))
    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}; choose from {', '.join(READERS)}")
    if reader in ("auto", "native"):
        # "auto" is the native reader, with no fallback: TensorFlow is an optional extra.
        from danbert_convert.tfbundle import BundleReader

        return BundleReader(prefix)
    return TensorFlowReader(prefix)


def import_tensorflow():  # noqa: ANN201 - tensorflow has no useful static type
    """Import TensorFlow quietly, or explain how to get it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Reading runs no ops; this also stops the oneDNN banner that ignores the log level.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise InputError(
            "the TensorFlow reader needs TensorFlow: pip install 'danbert-convert[tf]'"
        ) from e
    tf.get_logger().setLevel("ERROR")
    return tf


class TensorFlowReader:
    """Reader backed by `tf.train.load_checkpoint` (TensorFlow's own C++ bundle reader)."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = Path(prefix)
        tf = import_tensorflow()
        try:
            self._reader = tf.train.load_checkpoint(str(self.prefix))
        except Exception as e:  # TF raises its own error classes; their first line is useful
            msg = one_line(e)
            raise InputError(f"{self.prefix}.index: TensorFlow cannot read it: {msg}") from e
        shapes = self._reader.get_variable_to_shape_map()
        dtypes = self._reader.get_variable_to_dtype_map()
        self._vars = {
            name: VariableInfo(
                name, tuple(int(d) for d in shapes[name]), np.dtype(dtypes[name].as_numpy_dtype)
            )
            for name in sorted(shapes)
        }

    def variables(self) -> dict[str, VariableInfo]:
        return self._vars

    def read(self, name: str) -> np.ndarray:
        try:
            return np.asarray(self._reader.get_tensor(name))
        except Exception as e:
            raise InputError(f"{self.prefix}: variable {name}: {one_line(e)}") from e

    def data_file(self, name: str) -> Path:
        # TensorFlow does not say which shard holds a variable; one shard is the usual case.
        shards = data_files(self.prefix)
        return shards[0] if len(shards) == 1 else self.prefix

    def close(self) -> None:
        self._reader = None

"""The reader interface for TensorFlow checkpoints, and choosing a reader.

A reader lists variables (name, shape, dtype) and reads one variable at a time as a numpy
array. `open_checkpoint` picks an implementation (readers/bundle.py, the native one, or
readers/tensorflow.py), wrapped in readers/objgraph.py's for a TensorFlow 2 object-based
checkpoint; each is imported only when used, so that neither imports this module's users back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from danbert_convert.defaults import READERS
from danbert_convert.errors import InputError
from danbert_convert.source import normalize_prefix


@dataclass(frozen=True)
class VariableInfo:
    """One variable as its checkpoint lists it: what `read` returns, and what is stored."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    """The dtype of the array `read` returns."""
    stored_dtype: str = ""
    """The dtype as stored, spelled as numpy does (or "bfloat16", "string"); "" when it is
    `dtype`'s."""
    stored_bytes: int | None = field(default=None, compare=False)
    """Bytes the value takes in the data file, as the index says; None when the reader cannot
    tell (then `nbytes`). Not compared: TensorFlow's reader cannot tell."""

    @property
    def nbytes(self) -> int:
        # Python ints: an index can claim dimensions whose product overflows int64.
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def stored(self) -> tuple[str, int]:
        """(stored dtype, stored bytes), filled in from `dtype` and `nbytes` where unknown."""
        size = self.nbytes if self.stored_bytes is None else self.stored_bytes
        return (self.stored_dtype or self.dtype.name, size)


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

    def read_string(self, name: str) -> list[bytes]:
        """The elements of a string variable (a scalar or 1-D); `read` refuses strings."""
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


def open_checkpoint(prefix: Path, reader: str = "auto") -> CheckpointReader:
    """Open the checkpoint at `prefix` with the chosen reader implementation; a TensorFlow 2
    object-based checkpoint comes wrapped in an `ObjectGraphReader` (variables named by their
    object paths)."""
    prefix = normalize_prefix(Path(prefix))
    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}; choose from {', '.join(READERS)}")
    opened: CheckpointReader
    if reader in ("auto", "native"):
        # "auto" is the native reader, with no fallback: TensorFlow is an optional extra.
        from danbert_convert.readers.bundle import BundleReader

        opened = BundleReader(prefix)
    else:
        from danbert_convert.readers.tensorflow import TensorFlowReader

        opened = TensorFlowReader(prefix)
    from danbert_convert.readers.objgraph import OBJECT_GRAPH_KEY, ObjectGraphReader

    if OBJECT_GRAPH_KEY not in opened.variables():
        return opened
    try:
        return ObjectGraphReader(opened)
    except BaseException:
        opened.close()
        raise

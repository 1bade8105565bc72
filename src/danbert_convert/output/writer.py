"""Writing the output folder's weights and config.json (the manifest: manifest.py).

Weights are streamed: the safetensors header is computed from the plan, then each tensor is
read, transformed and written once, so memory holds one tensor at a time.
"""

from __future__ import annotations

import errno
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from danbert_convert._fs import HashingWriter, hashing_writer, pipelined_writer
from danbert_convert.errors import one_line
from danbert_convert.families.table import TensorPlan, merged, transposes

SAFETENSORS_DTYPES = {
    "float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64",
    "int32": "I32", "int64": "I64", "bool": "BOOL",
}  # fmt: skip

WEIGHTS_NAME = "model.safetensors"
BIN_NAME = "pytorch_model.bin"


def transform(t: TensorPlan, value: np.ndarray) -> np.ndarray:
    """The output value of one planned tensor: head axes merged and transposed if asked,
    contiguous, little-endian."""
    value = merged(t.transform, value)
    flip = transposes(t.transform)
    if value.shape != (tuple(reversed(t.shape)) if flip else t.shape):
        raise ValueError(f"{t.tf}: read shape {value.shape} does not match the plan {t.shape}")
    little = value.dtype.newbyteorder("<")
    if flip and value.ndim == 2:
        return _transpose(value, little)
    if flip:
        value = value.T
    return np.ascontiguousarray(value, dtype=little)


# Input rows per strip: 16 float32 fill one 64-byte cache line of every output row.
_STRIP_BYTES = 64


def _transpose(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """value.T as a new contiguous array, copied in strips of input rows.

    numpy's plain copy of a transposed view writes each output cache line many times over;
    strips write each once, which makes BERT-base's kernels about 4x faster to transpose.
    """
    out = np.empty(value.shape[::-1], dtype=dtype)
    rows = max(1, _STRIP_BYTES // value.dtype.itemsize)
    for i in range(0, value.shape[0], rows):
        out[:, i : i + rows] = value[i : i + rows].T
    return out


def write_safetensors(
    path: Path,
    tensors: list[TensorPlan],
    produce: Callable[[TensorPlan], np.ndarray],
    metadata: dict[str, str] | None = None,
    on_tensor: Callable[[TensorPlan], None] | None = None,
) -> str:
    """Write `tensors` (values from `produce`, in list order) as safetensors; return its SHA-256."""
    header: dict[str, object] = {}
    offset = 0
    for t in tensors:
        n = t.nbytes
        header[t.hf] = {
            "dtype": SAFETENSORS_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    header["__metadata__"] = {"format": "pt", **(metadata or {})}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format wants the data 8-byte aligned
    # Readers raise InputError, never a bare OSError, so what blame() catches is the write.
    with pipelined_writer(path) as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for t in tensors:
            # Bytes via a uint8 view: a memoryview of an ml_dtypes bfloat16 array (TensorFlow's
            # reader returns those) refuses the dtype. produce() returns a new array each time,
            # which nothing changes while the writer's threads still hold it.
            f.write(np.ascontiguousarray(produce(t)).reshape(-1).view(np.uint8).data)
            if on_tensor:
                on_tensor(t)
        return f.close()


class _Recorder:
    """A file wrapper that remembers the OSError of a failed write: torch.save may report
    it as a RuntimeError ("unexpected pos ...") that names neither the file nor the cause."""

    def __init__(self, f: HashingWriter) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def write_bin(safetensors_path: Path, path: Path) -> str:
    """A PyTorch pickle of the same tensors, for tools that still want pytorch_model.bin.

    Returns its SHA-256. A failed write (full disk) is an OSError naming `path`, as for the
    other files.
    """
    import torch
    from safetensors.torch import load_file

    state = load_file(str(safetensors_path))
    with hashing_writer(path) as f:
        out = _Recorder(f)
        try:
            # torch.save only appends to a file object (no seek back): the hash is the file's.
            torch.save(state, out)  # type: ignore[arg-type]
        except RuntimeError as e:
            if out.error is not None:
                raise out.error from e
            raise OSError(errno.EIO, f"cannot write it ({one_line(e)})", str(path)) from e
    return f.hexdigest()

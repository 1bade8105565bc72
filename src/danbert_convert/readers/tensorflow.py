"""The TensorFlow reader: `tf.train.load_checkpoint`, for cross-checking the native one.

TensorFlow is an optional extra (`danbert-convert[tf]`); it is imported when a reader opens.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from danbert_convert.errors import InputError, one_line
from danbert_convert.readers.base import VariableInfo
from danbert_convert.source import data_files


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
            # TensorFlow does not say how many bytes a variable takes in its shard.
            name: VariableInfo(
                name,
                tuple(int(d) for d in shapes[name]),
                np.dtype(dtypes[name].as_numpy_dtype),
                dtypes[name].name,
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

    def read_string(self, name: str) -> list[bytes]:
        """The elements of a string variable (a scalar or 1-D)."""
        info = self._vars.get(name)
        if info is not None and (info.stored_dtype != "string" or len(info.shape) > 1):
            raise InputError(
                f"{self.prefix}: variable {name} has dtype {info.stored_dtype} and shape "
                f"{list(info.shape)}; only string scalars and vectors are read as strings"
            )
        value = self.read(name)
        return [bytes(v) for v in value.reshape(-1)]

    def data_file(self, name: str) -> Path:
        # TensorFlow does not say which shard holds a variable; one shard is the usual case.
        shards = data_files(self.prefix)
        return shards[0] if len(shards) == 1 else self.prefix

    def close(self) -> None:
        self._reader = None

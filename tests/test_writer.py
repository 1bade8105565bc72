"""writer.transform: the strip-wise transpose is exactly numpy's transpose, for any shape."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from danbert_convert.mapping import COPY, TRANSPOSE, TensorPlan
from danbert_convert.writer import transform

DTYPES = ["<f4", ">f4", "<f2", "<f8", ">f8", "<i4", "<i8", "|b1"]


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 70),
    cols=st.integers(1, 70),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**32 - 1),
)
def test_transpose_matches_numpy(rows, cols, dtype, seed):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, rows * cols * np.dtype(dtype).itemsize, dtype=np.uint8)
    value = raw.view(dtype).reshape(rows, cols)
    t = TensorPlan("x", "x", TRANSPOSE, (cols, rows), value.dtype.name)
    out = transform(t, value)
    assert out.flags.c_contiguous and out.dtype.byteorder in ("<", "=", "|")
    assert out.shape == (cols, rows)
    assert (
        out.tobytes()
        == np.ascontiguousarray(value.T, dtype=value.dtype.newbyteorder("<")).tobytes()
    )


def test_copy_converts_big_endian():
    value = np.arange(6, dtype=">f4").reshape(2, 3)
    out = transform(TensorPlan("x", "x", COPY, (2, 3), "float32"), value)
    assert out.dtype.str == "<f4" and (out == value).all()

"""The writer: the strip-wise transpose is exactly numpy's transpose, for any shape; the
safetensors layout is what zero-copy loaders rely on, for every architecture written."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from danbert_convert.families.table import COPY, TRANSPOSE, TensorPlan
from danbert_convert.output.writer import transform

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


@pytest.mark.parametrize(
    ("heads", "architecture"),
    [
        (("mlm", "nsp"), "BertForPreTraining"),
        (("mlm",), "BertForMaskedLM"),
        (("nsp",), "BertForNextSentencePrediction"),
        (("classifier",), "BertForSequenceClassification"),
        (("squad",), "BertForQuestionAnswering"),
        ((), "BertModel"),
    ],
)
def test_safetensors_layout_is_aligned_and_contiguous(release, tmp_path, heads, architecture):
    """8 + header length is a multiple of 8 (tensor data 8-byte aligned), the header is JSON,
    and the tensors tile the data section from 0 to the end of the file, in header order."""
    from danbert_convert.stages.convert import convert

    names = {(): "noheads", ("mlm", "nsp"): "full"}
    src = release(names.get(heads, "-".join(heads)), heads=heads)
    result = convert(src, tmp_path / "out")
    assert result.architecture == architecture
    path = tmp_path / "out" / "model.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    assert (8 + n) % 8 == 0, n
    header = json.loads(raw[8 : 8 + n])
    assert header.pop("__metadata__")["format"] == "pt"
    assert len(header) == result.tensors
    end = 0
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        start, stop = entry["data_offsets"]
        assert start == end, name  # no gap, no overlap
        itemsize = {"F32": 4, "F16": 2, "BF16": 2}[entry["dtype"]]
        assert stop - start == itemsize * int(np.prod(entry["shape"])), name
        assert start % itemsize == 0, name
        end = stop
    assert 8 + n + end == len(raw) == path.stat().st_size

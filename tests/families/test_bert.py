"""Plan-time checks: what the index and bert_config.json say is judged before any data is read.

Weight dtypes (float32, float16, bfloat16 only) and config sizes (checked against the
checkpoint, in constant memory however absurd the number).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from tfckpt import TINY_CONFIG, bert_variables, with_training_state

from danbert_convert.cli import cli
from danbert_convert.errors import InputError
from danbert_convert.readers.tensorflow import TensorFlowReader
from danbert_convert.stages.convert import convert

WORDS = "bert/embeddings/word_embeddings"


# --- item 5: weights must be floating point --------------------------------------------------


@pytest.mark.parametrize("dtype", ["int32", "float64"])
@pytest.mark.parametrize("reader", ["native", "tensorflow"])
def test_non_float_weight_is_refused_before_reading_data(release, tmp_path, dtype, reader):
    v = bert_variables(TINY_CONFIG)
    v[WORDS] = (v[WORDS] * 100).astype(dtype)
    src = release(f"dtype-{dtype}", variables=with_training_state(v))
    # Without its data file: the refusal must come from the index alone.
    index_only = tmp_path / "src"
    index_only.mkdir()
    for name in ("bert_config.json", "vocab.txt", "bert_model.ckpt.index"):
        (index_only / name).write_bytes((src / name).read_bytes())
    for folder in (src, index_only):
        if reader == "tensorflow" and folder is index_only:
            continue  # TensorFlow's reader wants the data file to open at all
        out = tmp_path / "outs" / "out"
        r = CliRunner().invoke(cli, ["-q", "convert", str(folder), str(out), "--reader", reader])
        assert r.exit_code == 3, r.output
        assert "Traceback" not in r.output
        assert r.output.strip().splitlines()[-1] == (
            f"error: {folder / 'bert_model.ckpt.index'}: variable {WORDS} has dtype {dtype}; "
            "weights must be float32, float16 or bfloat16"
        )
        assert not out.exists() and not out.parent.exists()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("reader", ["native", "tensorflow"])
def test_half_precision_weights_convert_exactly(release, tmp_path, dtype, reader):
    import ml_dtypes  # comes with TensorFlow; only to hand TF bfloat16 values
    from safetensors.numpy import load_file

    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    v = {k: a.astype(np_dtype) for k, a in bert_variables(TINY_CONFIG).items()}
    src = release(f"half-{dtype}", variables=v)
    convert(src, tmp_path / "out", reader=reader)
    weights = load_file(tmp_path / "out" / "model.safetensors")
    tf = TensorFlowReader(src / "bert_model.ckpt")
    got = weights["bert.encoder.layer.0.attention.self.query.weight"]
    want = tf.read("bert/encoder/layer_0/attention/self/query/kernel").T
    # The native reader widens bfloat16 to float32 (exactly); TensorFlow's keeps it.
    assert got.dtype.itemsize == (4 if (reader, dtype) == ("native", "bfloat16") else 2)
    assert np.array_equal(got.astype(np.float32), want.astype(np.float32))


@pytest.mark.parametrize("reader", ["native", "tensorflow"])
def test_mixed_precision_weights_load_without_rounding(release, tmp_path, reader):
    """A float16 encoder with float32 heads: transformers loaded it all as float16 (the first
    tensor's dtype), rounding the heads, and verify failed parity on a correct conversion."""
    import torch
    from transformers import BertForPreTraining

    from danbert_convert.stages.verify import verify

    v = {k: a.astype(np.float16) if k.startswith("bert/") else a
         for k, a in bert_variables(TINY_CONFIG).items()}  # fmt: skip
    src = release("mixed-precision", variables=v)
    out = tmp_path / "out"
    convert(src, out, reader=reader)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    model = BertForPreTraining.from_pretrained(out)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    head = model.cls.predictions.transform.dense.weight.detach().numpy()
    want = TensorFlowReader(src / "bert_model.ckpt").read("cls/predictions/transform/dense/kernel")
    assert np.array_equal(head, want.T)
    report = verify(out)
    assert report.ok, report.table()


def test_uniform_precision_leaves_dtype_to_the_weights(release, tmp_path):
    v = {k: a.astype(np.float16) for k, a in bert_variables(TINY_CONFIG).items()}
    convert(release("half-float16", variables=v), tmp_path / "out")
    assert "dtype" not in json.loads((tmp_path / "out" / "config.json").read_text())


# --- item 13: absurd config sizes ----------------------------------------------------------

# The child's address-space limit: ample for a conversion, far too small for a list of a
# billion layers (8 GB of pointers) or a table of a billion labels.
MEMORY_LIMIT = 1 << 30

_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from click.testing import CliRunner
    from danbert_convert.cli import cli
    results = []
    for args in json.loads(sys.argv[1]):
        r = CliRunner().invoke(cli, args)
        results.append({{"code": r.exit_code, "output": r.output,
                         "exception": None if isinstance(r.exception, SystemExit)
                         else repr(r.exception)}})
    print(json.dumps(results))
    """
)

BIG = 10**23
CASES = [  # (release, key, value, what the error says)
    ("full", "num_hidden_layers", 10**9, "num_hidden_layers 1000000000 in {config} vs 2 layers "
     "(layer_0 to layer_1) in {src}/bert_model.ckpt.index"),
    ("full", "num_hidden_layers", BIG, f"num_hidden_layers {BIG} in {{config}} vs 2 layers"),
    ("full", "num_hidden_layers", 1e23, "key 'num_hidden_layers' missing or not an integer"),
    ("full", "vocab_size", BIG, f"vocab_size {BIG} in {{config}} vs 40 rows in {WORDS}"),
    ("full", "vocab_size", 1e23, "key 'vocab_size' missing or not an integer"),
    ("full", "hidden_size", BIG, f"hidden_size {BIG} in {{config}} vs 16 "),
    ("full", "intermediate_size", BIG, f"intermediate_size {BIG} in {{config}} vs 32"),
    ("full", "max_position_embeddings", 10**9, "max_position_embeddings 1000000000 in {config} "
     "vs 32 rows in bert/embeddings/position_embeddings"),
    ("full", "max_position_embeddings", 1e23, "key 'max_position_embeddings' missing or not an"),
    ("full", "type_vocab_size", BIG, f"type_vocab_size {BIG} in {{config}} vs 2 rows"),
    ("full", "num_attention_heads", BIG, f"is not a multiple of num_attention_heads {BIG}"),
    ("classifier", "num_labels", 10**9, "num_labels 1000000000 in {config} vs 3 rows in "
     "output_bias of {src}/bert_model.ckpt.index"),
    ("classifier", "num_labels", 1e23, "{config}: num_labels is 1e+23; it must be a positive "
     "integer"),
    ("classifier", "num_labels", BIG, f"num_labels {BIG} in {{config}} vs 3 rows"),
]  # fmt: skip


def _run_limited(arg_lists: list[list[str]]) -> list[dict]:
    code = _CHILD.format(limit=MEMORY_LIMIT)
    env_code = "import os; os.environ['OPENBLAS_NUM_THREADS'] = '1'\n" + code
    r = subprocess.run([sys.executable, "-c", env_code, json.dumps(arg_lists)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS as Linux enforces it")
def test_absurd_config_sizes_are_one_line_in_constant_memory(release, tmp_path):
    sources = {"full": release("full"), "classifier": release("classifier", heads=("classifier",))}
    runs, expected = [], []
    for i, (name, key, value, message) in enumerate(CASES):
        src = sources[name]
        cfg = json.loads((src / "bert_config.json").read_text())
        config = tmp_path / f"config-{i}.json"
        config.write_text(json.dumps({**cfg, key: value}))
        out = tmp_path / f"out-{i}"
        runs.append(["-q", "convert", str(src), str(out), "--config", str(config)])
        expected.append((out, message.format(config=config, src=src)))
    # Controls: the untouched release converts under the same limit, and inspect (which plans
    # with any config) reports the absurd layer count instead of building the layer list.
    runs.append(["-q", "convert", str(sources["full"]), str(tmp_path / "control")])
    runs.append(["inspect", str(sources["full"]), "--config", str(tmp_path / "config-0.json")])
    results = _run_limited(runs)
    for (out, message), res in zip(expected, results, strict=False):
        assert res["code"] == 3, res
        lines = res["output"].strip().splitlines()
        assert "Traceback" not in res["output"] and lines[-1].startswith("error: "), res
        assert message in lines[-1], (message, lines[-1])
        assert not out.exists()
    control, inspected = results[-2:]
    assert control["code"] == 0, control
    assert (tmp_path / "control" / "model.safetensors").is_file()
    assert inspected["code"] == 0, inspected
    assert "convert would refuse this: num_hidden_layers 1000000000" in inspected["output"]


def test_num_labels_without_a_classifier_is_left_out(full_release, tmp_path):
    """transformers builds a label table of num_labels entries on load: without a classifier
    head the key sizes nothing in the model, so config.json does not carry it."""
    cfg = json.loads((full_release / "bert_config.json").read_text())
    config = tmp_path / "bert_config.json"
    config.write_text(json.dumps({**cfg, "num_labels": 10**9}))
    result = convert(full_release, tmp_path / "out", config=config)
    assert any("num_labels 1000000000 left out of config.json" in w for w in result.warnings)
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "num_labels" not in written and "id2label" not in written


def test_classifier_num_labels_agreeing_with_the_head_is_kept(release, tmp_path):
    src = release("classifier", heads=("classifier",))
    cfg = json.loads((src / "bert_config.json").read_text())
    config = tmp_path / "bert_config.json"
    config.write_text(json.dumps({**cfg, "num_labels": 3}))
    convert(src, tmp_path / "out", config=config)
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["num_labels"] == 3 and len(written["id2label"]) == 3


def test_plan_refuses_non_integer_sizes_from_any_caller():
    """inspect hands plan() a config read without read_config's checks."""
    from danbert_convert.errors import InputError
    from danbert_convert.families.bert import plan
    from danbert_convert.readers.base import VariableInfo

    names = bert_variables(TINY_CONFIG)
    infos = {n: VariableInfo(n, a.shape, a.dtype) for n, a in sorted(names.items())}
    for key, value in [("hidden_size", "16"), ("vocab_size", 40.0), ("num_hidden_layers", None),
                       ("type_vocab_size", True)]:  # fmt: skip
        with pytest.raises(InputError, match=rf"cfg.json: {key} is {value!r}; it must be a pos"):
            plan(infos, {**TINY_CONFIG, key: value}, config_name="cfg.json")


def test_layer_norm_eps_bert_never_reads_is_refused(release, tmp_path):
    """google-research/bert's layer_norm has a fixed epsilon: a bert_config.json key that
    transformers (and so verify's reference, built from config.json) would use is refused."""
    src = release("full")
    cfg = tmp_path / "bert_config.json"
    cfg.write_text(json.dumps({**json.loads((src / "bert_config.json").read_text()),
                               "layer_norm_eps": 1e-3}))  # fmt: skip
    with pytest.raises(InputError, match=r"layer_norm_eps 0.001 is not supported .BERT's mod"):
        convert(src, tmp_path / "out", config=cfg)
    assert not (tmp_path / "out").exists()

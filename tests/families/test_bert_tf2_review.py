"""Adversarial review of issue 16 (TF2 Model Garden checkpoints): inputs that convert must
either refuse with one line or turn into a model that computes what Model Garden computed.
Checkpoints are written by Model Garden itself (tests/tfckpt_tf2_adversarial.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_bert_tf2 import _close, _outputs, _run

from danbert_convert.errors import InputError
from danbert_convert.stages.convert import convert
from danbert_convert.stages.verify import verify

TESTS = Path(__file__).resolve().parents[1]
CASES = ("norm_first", "cls_head", "optimizer_weight")


@pytest.fixture(scope="module")
def adversarial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import tfckpt_tf2

    reason = tfckpt_tf2.missing_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("adversarial")
    env = {**os.environ, "PYTHONPATH": str(tfckpt_tf2.MODELGARDEN), "TF_CPP_MIN_LOG_LEVEL": "3",
           "TF_ENABLE_ONEDNN_OPTS": "0"}  # fmt: skip
    r = subprocess.run([sys.executable, str(TESTS / "tfckpt_tf2_adversarial.py"), str(root),
                        *CASES], env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def _refused_or_right(src: Path, out: Path, outputs: dict[str, str]) -> None:
    """convert refuses `src` (one line), or what it writes computes Model Garden's `outputs`
    (Model Garden's output name -> attribute of the transformers output)."""
    try:
        convert(src, out)
    except InputError as e:
        assert "\n" not in str(e)
        return
    io = _outputs(src)
    result = _run(out, io)
    keep = io["input_mask"].astype(bool)  # padded positions are not compared
    for mg, hf in outputs.items():
        got = getattr(result, hf) if hf != "last" else result.hidden_states[-1]
        want = io[mg]
        if want.ndim == 3:
            got, want = got.detach().numpy()[keep], want[keep]
        _close(mg, got, want)


def test_norm_first_encoder_without_config(adversarial: Path, tmp_path: Path) -> None:
    """A pre-LayerNorm BertEncoder (norm_first=True) has the same variables as BERT's
    post-LayerNorm one: without params.yaml danbert assumes post-LN, verify's reference shares
    the assumption, and both pass a model whose outputs are far off (max |diff| ~8)."""
    _refused_or_right(adversarial / "norm_first", tmp_path / "out",
                      {"sequence_output": "last", "pooled_output": "pooler_output"})  # fmt: skip


def test_params_cls_head_that_is_no_next_sentence_head(adversarial: Path, tmp_path: Path) -> None:
    """params.yaml's cls_heads says the one 2-class head is `sentiment`, pools token 1 and uses
    gelu: danbert ignores cls_heads and writes it as the NSP head (tanh, token 0); verify's
    reference makes the same assumption and passes."""
    _refused_or_right(adversarial / "cls_head", tmp_path / "out",
                      {"sequence_output": "last", "head_logits": "seq_relationship_logits"}
                      )  # fmt: skip


def test_weight_under_optimizer_root_is_not_silently_skipped(
    adversarial: Path, tmp_path: Path
) -> None:
    """`^optimizer/` skips any variable whose canonical path starts there as "optimizer
    state", a float [24, 5] weight too: it should be unrecognised, as for TF1."""
    src = adversarial / "optimizer_weight"
    with pytest.raises(InputError, match="unrecognised variable optimizer/head"):
        convert(src, tmp_path / "out")


def test_tf1_variable_named_optimizer_is_not_silently_skipped(release, tmp_path: Path) -> None:
    """The TF2 skip rules apply to TF1 checkpoints too: a TF1 weight `optimizer/...` (or one
    with `/.ATTRIBUTES/` in its name) was an unrecognised variable before issue 16 and is now
    dropped without a word."""
    src = release("review-optimizer-scope",
                  extra={"optimizer/classifier/kernel": np.ones((24, 3), np.float32)})  # fmt: skip
    with pytest.raises(InputError, match="unrecognised variable optimizer/classifier/kernel"):
        convert(src, tmp_path / "out")


@pytest.mark.parametrize(
    "text",
    ["foo: bar\n", "task: [1, 2]\n", "task: {model: x}\n", "task: {model: {encoder: bert}}\n"],
)
def test_params_yaml_that_is_no_model_garden_config_is_refused(
    modelgarden_release, tmp_path: Path, text: str
) -> None:
    """A params.yaml without task.model.encoder is read as if it were a bert_config.json: no
    key is checked, the manifest says it came from "params.yaml (bert_config.json)"."""
    src = tmp_path / "src"
    shutil.copytree(modelgarden_release("bert", "trainer"), src)
    (src / "params.yaml").write_text(text)
    with pytest.raises(InputError, match="params.yaml"):
        convert(src, tmp_path / "out")


def test_params_embedding_size_equal_to_hidden_is_plain_bert(
    modelgarden_release, tmp_path: Path
) -> None:
    """BertEncoder adds its embedding projection only when embedding_width != hidden_size:
    embedding_size 24 with hidden_size 24 is plain BERT, but danbert refuses it."""
    import yaml

    src = tmp_path / "src"
    shutil.copytree(modelgarden_release("bert", "trainer_params"), src)
    params = yaml.safe_load((src / "params.yaml").read_text())
    params["task"]["model"]["encoder"]["bert"]["embedding_size"] = 24
    (src / "params.yaml").write_text(yaml.safe_dump(params))
    convert(src, tmp_path / "out")
    assert verify(tmp_path / "out").ok


def test_long_local_names_do_not_exhaust_memory(tmp_path: Path) -> None:
    """A 2.5 MB object graph (a ladder 64 deep, 2 wide, with 10 kB local names) makes the
    path walk hold ~2.5 GB of joined path strings (MAX_STEPS bounds the count of paths, not
    their length). Under a 1.5 GB address-space limit opening it must end in one line, not a
    MemoryError or a kill."""
    from tfckpt_tf2obj import save_module_checkpoint

    sys.path.insert(0, str(TESTS / "readers"))
    from test_objgraph import copy_ckpt, replace_graph

    written = save_module_checkpoint(tmp_path / "orig" / "ckpt")

    def change(g) -> None:
        first, depth, fan = len(g.nodes), 64, 2
        for level in range(depth):
            for _ in range(fan):
                node = g.nodes.add()
                if level < depth - 1:
                    for k in range(fan):
                        node.children.add(node_id=first + (level + 1) * fan + k,
                                          local_name=f"c{k}" + "x" * 10_000)  # fmt: skip
        for j in range(fan):
            g.nodes[0].children.add(node_id=first + j, local_name=f"r{j}")

    prefix = copy_ckpt(written.prefix, tmp_path / "c")
    replace_graph(prefix, change)
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))
        from danbert_convert.errors import InputError
        from danbert_convert.readers.base import open_checkpoint
        try:
            open_checkpoint({str(prefix)!r}).close()
        except InputError as e:
            print("refused:", e)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})  # fmt: skip
    assert r.returncode == 0 and r.stdout.endswith("ok\n"), r.stderr[-500:]

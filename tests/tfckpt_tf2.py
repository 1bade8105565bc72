"""Tiny TF2 object-based BERT checkpoints written by the TF Model Garden itself.

tf-models-official pins a TensorFlow older than the `tf` extra's, so `make install-dev` puts it
(with tf-keras, gin-config and scipy) in <venv>/modelgarden, without dependencies, and
tfckpt_tf2_writer.py runs in a subprocess with that folder on PYTHONPATH. One call writes every
layout of one encoder type (importing TensorFlow and Model Garden takes seconds).

Layouts (each its own folder, with vocab.txt and outputs.npz):
- "encoder": tf.train.Checkpoint(encoder=BertEncoder).save -> ckpt-1.*, `checkpoint`.
- "encoder_release": the same written as Model Garden's published encoders are:
  Checkpoint.write -> bert_model.ckpt.{index,data-00000-of-00001}, bert_config.json (TF1 keys,
  "hidden_act": "gelu").
- "trainer": the checkpoint Model Garden's trainer writes (base_trainer.py:
  Checkpoint(global_step, model=BertPretrainerV2, optimizer, **model.checkpoint_items)) through
  a CheckpointManager -> ckpt-1.*, `checkpoint`; legacy AdamW slots (.OPTIMIZER_SLOT).
- "trainer_params": the same plus the params.yaml train_utils writes beside it (Model Garden's
  ExperimentConfig serialised: task.model.encoder.{type, bert|bert_v2}, trainer, runtime).
- "model": tf.train.Checkpoint(model=BertPretrainerV2).save -> ckpt-1.*, `checkpoint`.

outputs.npz holds the inputs (input_word_ids, input_mask with row 0 padded, input_type_ids with
row 1 two segments) and Model Garden's outputs after the training step, with training=False:
sequence_output [B,S,H], pooled_output [B,H] (the encoder's pooler), mlm_logits [B,S,V] (every
position masked), next_sentence [B,2] (the NSP head, through its own pooler_dense).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tfckpt import VOCAB

MODELGARDEN = Path(sys.prefix) / "modelgarden"
WRITER = Path(__file__).with_name("tfckpt_tf2_writer.py")
KINDS = ("bert", "bert_v2")
LAYOUTS = ("encoder", "encoder_release", "trainer", "trainer_params", "model")

# BertEncoderConfig fields (official/nlp/configs/encoders.py). vocab_size is longer than VOCAB,
# as in tfckpt.TINY_CONFIG; 3 heads of 8, so that the einsum kernels' head axis is not trivial
# and a scale by 1/sqrt(heads) instead of 1/sqrt(head_dim) would show.
TINY_DIMS = {
    "vocab_size": 40,
    "hidden_size": 24,
    "num_layers": 2,
    "num_attention_heads": 3,
    "intermediate_size": 48,
    "max_position_embeddings": 32,
    "type_vocab_size": 2,
}


def missing_reason() -> str | None:
    """Why Model Garden cannot run here, or None."""
    if not (MODELGARDEN / "official").is_dir():
        return f"Model Garden is not installed in {MODELGARDEN} (make install-dev)"
    return None


def write_modelgarden(
    root: Path,
    kind: str = "bert",
    *,
    layouts: tuple[str, ...] = LAYOUTS,
    dims: dict | None = None,
    initializer_range: float = 0.3,
    seed: int = 0,
) -> dict[str, Path]:
    """Write `layouts` of one Model Garden BERT (`kind` "bert": BertEncoder, "bert_v2":
    BertEncoderV2) under root/<layout>; returns {layout: folder}.

    `initializer_range` is Model Garden's own (encoder and MLM head). 0.3, not BERT's 0.02,
    makes the feed-forward pre-activations large enough (std ~1) that exact and tanh gelu
    give measurably different outputs.
    """
    from conftest import sample_inputs

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    dims = {**TINY_DIMS, **(dims or {})}
    ids, types, mask = sample_inputs({"vocab_size": len(VOCAB)})
    request = {
        "root": str(root), "kind": kind, "dims": dims, "layouts": list(layouts),
        "initializer_range": initializer_range, "seed": seed, "vocab": VOCAB,
        "inputs": {"input_word_ids": ids.tolist(), "input_mask": mask.tolist(),
                   "input_type_ids": types.tolist()},
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(MODELGARDEN),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TF_ENABLE_ONEDNN_OPTS": "0",
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(request, f)
    try:
        r = subprocess.run([sys.executable, str(WRITER), f.name], env=env,
                           capture_output=True, text=True)  # fmt: skip
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        tail = "\n".join(r.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"Model Garden writer failed ({kind}):\n{tail}")
    return {layout: root / layout for layout in layouts}

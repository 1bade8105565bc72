"""Tiny ALBERT checkpoints written by TensorFlow, named as google-research/albert names them
(modeling.py, run_pretraining.py).

Layers share weights by group: `bert/encoder/transformer/group_G/inner_group_I/...` holds one
attention + feed-forward block, and layer i runs group int(i / L * G)'s inner groups in turn.
The embeddings are `embedding_size` (E) wide, mapped to the hidden size H by
`bert/encoder/embedding_hidden_mapping_in` (absent when E == H); the MLM head's transform is
H -> E and its decoder is the word table.

A folder from `write_release` looks like an unpacked `albert_base_v2.tar.gz`:
`model.ckpt-best.{index,data-00000-of-00001,meta}` (no `checkpoint` state file),
`albert_config.json`, and `30k-clean.model` when a SentencePiece model is given.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from tfckpt import save_tf1_checkpoint, with_training_state

CHECKPOINT = "model.ckpt-best"
SPM_MODEL = "30k-clean.model"

# albert_config.json as the v2 releases write it (their keys, their "gelu", which ALBERT's
# modeling.py computes in the tanh form), at test size. Four layers in two groups: layers 0-1
# run group 0, layers 2-3 group 1.
TINY_ALBERT: dict = {
    "attention_probs_dropout_prob": 0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0,
    "embedding_size": 16,
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 128,
    "max_position_embeddings": 32,
    "num_attention_heads": 2,
    "num_hidden_layers": 4,
    "num_hidden_groups": 2,
    "net_structure_type": 0,
    "gap_size": 0,
    "num_memory_blocks": 0,
    "inner_group_num": 1,
    "down_scale_factor": 1,
    "type_vocab_size": 2,
    "vocab_size": 100,
}

# Named layouts the tests share (conftest.albert_release writes each once per session):
# (albert_config.json, write_release keyword arguments).
VARIANTS: dict[str, tuple[dict, dict]] = {
    "tiny": (TINY_ALBERT, {}),
    # Two blocks per layer (inner_group_num 2), one group for all three layers.
    "inner-groups": (
        {**TINY_ALBERT, "num_hidden_layers": 3, "num_hidden_groups": 1, "inner_group_num": 2},
        {},
    ),
    # The release's own sharing: one group for every layer.
    "one-group": ({**TINY_ALBERT, "num_hidden_groups": 1}, {}),
    # Every model variable also under `module/` (a TF-Hub module's copy), same values.
    "module-copy": (TINY_ALBERT, {"module_copy": True}),
    # Only `module/` names: a checkpoint saved from a graph that loaded the TF-Hub module.
    "module-only": (TINY_ALBERT, {"prefix": "module/"}),
    # Slots named as export_checkpoints.py filters them (Google's internal LAMB).
    "lamb-slots": (TINY_ALBERT, {"slots": ("lamb_m", "lamb_v")}),
    # E == H: modeling.transformer_model creates no embedding_hidden_mapping_in.
    "equal-width": ({**TINY_ALBERT, "embedding_size": 64}, {}),
}


def group_of(layer: int, config: dict) -> int:
    """The group layer `layer` runs: modeling.transformer_model's int(i / L * G), in floats."""
    return int(layer / config["num_hidden_layers"] * config["num_hidden_groups"])


def layout(config: dict, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Every model variable run_pretraining.py creates for `config` (an albert_config.json),
    with its shape, each name after `prefix`.

    Only groups some layer runs exist (tf.AUTO_REUSE creates a group's block on first use).
    """
    V, E, H = config["vocab_size"], config["embedding_size"], config["hidden_size"]
    inter = config["intermediate_size"]
    shapes: dict[str, tuple[int, ...]] = {}

    def dense(scope: str, n_in: int, n_out: int) -> None:
        shapes[f"{prefix}{scope}/kernel"], shapes[f"{prefix}{scope}/bias"] = (n_in, n_out), (n_out,)

    def ln(scope: str, width: int) -> None:
        shapes[f"{prefix}{scope}/gamma"] = shapes[f"{prefix}{scope}/beta"] = (width,)

    shapes[f"{prefix}bert/embeddings/word_embeddings"] = (V, E)
    shapes[f"{prefix}bert/embeddings/token_type_embeddings"] = (config["type_vocab_size"], E)
    shapes[f"{prefix}bert/embeddings/position_embeddings"] = (config["max_position_embeddings"], E)
    ln("bert/embeddings/LayerNorm", E)
    if E != H:
        dense("bert/encoder/embedding_hidden_mapping_in", E, H)
    groups = sorted({group_of(i, config) for i in range(config["num_hidden_layers"])})
    for g in groups:
        for j in range(config["inner_group_num"]):
            p = f"bert/encoder/transformer/group_{g}/inner_group_{j}"
            for part in ("query", "key", "value"):
                dense(f"{p}/attention_1/self/{part}", H, H)
            dense(f"{p}/attention_1/output/dense", H, H)
            ln(f"{p}/LayerNorm", H)
            dense(f"{p}/ffn_1/intermediate/dense", H, inter)
            dense(f"{p}/ffn_1/intermediate/output/dense", inter, H)
            ln(f"{p}/LayerNorm_1", H)
    dense("bert/pooler/dense", H, H)
    dense("cls/predictions/transform/dense", H, E)
    ln("cls/predictions/transform/LayerNorm", E)
    shapes[f"{prefix}cls/predictions/output_bias"] = (V,)
    shapes[f"{prefix}cls/seq_relationship/output_weights"] = (2, H)
    shapes[f"{prefix}cls/seq_relationship/output_bias"] = (2,)
    return shapes


def albert_variables(
    config: dict = TINY_ALBERT, seed: int = 0, std: float = 0.1, prefix: str = ""
) -> dict[str, np.ndarray]:
    """Random float32 values for `layout(config, prefix)`: normal(0, std); gammas 1 + that."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in layout(config, prefix).items():
        value = rng.normal(0.0, std, shape).astype(np.float32)
        out[name] = 1 + value if name.endswith("/gamma") else value
    return out


def write_release(
    folder: Path,
    config: dict = TINY_ALBERT,
    *,
    training_state: bool = True,
    module_copy: bool = False,
    prefix: str = "",
    slots: tuple[str, str] = ("adam_m", "adam_v"),
    spm_model: Path | None = None,
    variables: dict[str, np.ndarray] | None = None,
    extra: dict[str, np.ndarray] | None = None,
    step: int = 1000,
    seed: int = 0,
    std: float = 0.1,
) -> Path:
    """Write an unpacked ALBERT release folder; returns it.

    `global_step` is always saved (export_checkpoints.py keeps it); `training_state` adds the
    optimizer's two slots per weight, named `slots` (LAMBOptimizer and AdamWeightDecayOptimizer
    both name them `<var>/adam_m`, `<var>/adam_v`). `module_copy` also saves every model
    variable as `module/<name>` with the same value; `prefix` puts every model variable (and
    its slots) under it instead, e.g. "module/". `spm_model` is copied as 30k-clean.model.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if variables is None:
        variables = albert_variables(config, seed=seed, std=std, prefix=prefix)
        if training_state:
            variables = with_training_state(variables, step=step, slots=slots)
        else:
            variables = {**variables, "global_step": np.array(step, dtype=np.int64)}
        if module_copy:
            variables.update({f"module/{n}": v for n, v in variables.items()
                              if n in layout(config, prefix)})  # fmt: skip
    variables = {**variables, **(extra or {})}
    save_tf1_checkpoint(folder / CHECKPOINT, variables)
    (folder / "albert_config.json").write_text(json.dumps(config, indent=2))
    if spm_model is not None:
        shutil.copyfile(spm_model, folder / SPM_MODEL)
    return folder


def checkpoint_prefix(folder: Path) -> Path:
    """The release's checkpoint prefix (the tarballs ship no `checkpoint` state file)."""
    return folder / CHECKPOINT

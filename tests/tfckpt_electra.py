"""Tiny ELECTRA pre-training checkpoints written by TensorFlow, named as google-research/electra
names them (model/modeling.py, run_pretraining.py).

One checkpoint holds both networks: the discriminator under `electra/` with
`discriminator_predictions/dense{,_1}`, the generator under `generator/` with
`generator_predictions/{dense,LayerNorm,output_bias}`; by default the generator has no
embeddings of its own and reads `electra/embeddings`. Sizes follow ELECTRA's own rules from its
`--hparams` (`sizes`), so a test can hand the same dict to a converter as `--config`.

A folder from `write_release` looks like an unpacked `electra_small.zip`: `checkpoint`,
`model.ckpt-N.{index,data-00000-of-00001,meta}` and `vocab.txt`, and no config file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tfckpt import VOCAB, save_tf1_checkpoint, with_training_state

# Small enough for a fast test, large enough that ELECTRA's head rule gives the two networks
# different head counts: discriminator 128 wide (2 heads), generator half of it (1 head),
# embeddings 32 wide (so both `embeddings_project` layers exist).
TINY_HPARAMS: dict = {
    "model_size": "small",
    "vocab_size": 40,  # longer than VOCAB on purpose, as in the Danish BERT release
    "embedding_size": 32,
    "generator_hidden_size": 0.5,
    "model_hparam_overrides": {
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "max_position_embeddings": 32,
    },
}


# Named layouts the tests share (conftest.electra_release writes each once per session).
VARIANTS: dict[str, dict] = {
    # Discriminator 128 wide (2 heads), generator 64 (1 head), embeddings 32: both projections.
    "tiny": TINY_HPARAMS,
    # Embeddings as wide as the discriminator (base/large): only the generator projects.
    "base-like": {
        "model_size": "base",
        "vocab_size": 40,
        "generator_hidden_size": 0.5,
        "model_hparam_overrides": {
            "hidden_size": 128,
            "num_hidden_layers": 2,
            "max_position_embeddings": 32,
        },
    },
    # The released ELECTRA-Small: a generator as wide as the discriminator (README, step 4).
    "full-width-generator": {**TINY_HPARAMS, "generator_hidden_size": 1.0},
    # The generator's own embeddings at its own width: no generator/embeddings_project.
    "untied-embeddings": {**TINY_HPARAMS, "untied_generator_embeddings": True},
    # untied_generator false: the generator is electra/ itself, with generator_predictions.
    "tied-generator": {**TINY_HPARAMS, "untied_generator": False},
}


@dataclass(frozen=True)
class Sizes:
    """One transformer's sizes, as modeling.BertConfig holds them, plus its embedding width."""

    vocab_size: int
    embedding_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int


def sizes(hparams: dict) -> tuple[Sizes, Sizes]:
    """(discriminator, generator) sizes for run_pretraining.py's `--hparams`, by ELECTRA's rules.

    Restates configure_pretraining.PretrainingConfig (embedding_size: 128 for "small", else the
    hidden size), util/training_utils.get_bert_config (width and depth per model_size, heads =
    max(1, hidden // 64), intermediate = 4 * hidden, then model_hparam_overrides win) and
    run_pretraining.get_generator_config (the generator's width and depth are rounded fractions;
    its heads and intermediate size are always re-derived from its own width, whatever the
    overrides said). The generator's embedding width is the shared table's, or its own hidden
    size with untied_generator_embeddings. Debug mode is not modelled.
    """
    model_size = hparams.get("model_size", "small")
    width, depth = {"small": (256, 12), "base": (768, 12), "large": (1024, 24)}[model_size]
    overrides = hparams.get("model_hparam_overrides", {})
    bert = {
        "hidden_size": width,
        "num_hidden_layers": depth,
        "vocab_size": hparams.get("vocab_size", 30522),
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        **overrides,
    }
    bert["num_attention_heads"] = max(1, bert["hidden_size"] // 64)
    bert["intermediate_size"] = 4 * bert["hidden_size"]
    bert.update(overrides)
    default_embedding = 128 if model_size == "small" else None
    embedding = hparams.get("embedding_size", default_embedding) or bert["hidden_size"]
    disc = Sizes(embedding_size=embedding, **{f: bert[f] for f in _BERT_FIELDS})

    g_hidden = int(round(bert["hidden_size"] * hparams.get("generator_hidden_size", 0.25)))
    g_layers = int(round(bert["num_hidden_layers"] * hparams.get("generator_layers", 1.0)))
    gen = Sizes(
        vocab_size=bert["vocab_size"],
        embedding_size=g_hidden if hparams.get("untied_generator_embeddings") else embedding,
        hidden_size=g_hidden,
        num_hidden_layers=g_layers,
        num_attention_heads=max(1, g_hidden // 64),
        intermediate_size=4 * g_hidden,
        max_position_embeddings=bert["max_position_embeddings"],
        type_vocab_size=bert["type_vocab_size"],
    )
    return disc, gen


_BERT_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size",
)  # fmt: skip


def layout(hparams: dict) -> dict[str, tuple[int, ...]]:
    """Every model variable run_pretraining.py creates for `hparams`, with its shape.

    Covers the ELECTRA objective (the default), Electric's two-tower generator
    (`electric_objective` or `two_tower_generator`: `generator_ltr/`, `generator_rtl/`,
    `cloze_predictions/`), untied generator embeddings, a generator tied to the discriminator
    (`untied_generator: false`) and the BERT-like MLM run (`electra_objective: false`); in the
    last two the generator *is* `electra/`.
    """
    disc, gen = sizes(hparams)
    electric = bool(hparams.get("electric_objective"))
    two_tower = electric or bool(hparams.get("two_tower_generator"))
    rtd = electric or hparams.get("electra_objective", True)
    separate_generator = rtd and hparams.get("untied_generator", True)
    untied = bool(hparams.get("untied_generator_embeddings"))
    shapes: dict[str, tuple[int, ...]] = {}

    def dense(prefix: str, n_in: int, n_out: int) -> None:
        shapes[f"{prefix}/kernel"], shapes[f"{prefix}/bias"] = (n_in, n_out), (n_out,)

    def ln(prefix: str, width: int) -> None:
        shapes[f"{prefix}/LayerNorm/gamma"] = shapes[f"{prefix}/LayerNorm/beta"] = (width,)

    def embeddings(scope: str, s: Sizes) -> None:
        e = s.embedding_size
        shapes[f"{scope}/embeddings/word_embeddings"] = (s.vocab_size, e)
        shapes[f"{scope}/embeddings/token_type_embeddings"] = (s.type_vocab_size, e)
        shapes[f"{scope}/embeddings/position_embeddings"] = (s.max_position_embeddings, e)
        ln(f"{scope}/embeddings", e)

    def transformer(scope: str, s: Sizes) -> None:
        # modeling.BertModel: the projection exists only where the embedding output is not
        # already as wide as the encoder.
        if s.embedding_size != s.hidden_size:
            dense(f"{scope}/embeddings_project", s.embedding_size, s.hidden_size)
        h = s.hidden_size
        for i in range(s.num_hidden_layers):
            p = f"{scope}/encoder/layer_{i}"
            for part in ("query", "key", "value"):
                dense(f"{p}/attention/self/{part}", h, h)
            dense(f"{p}/attention/output/dense", h, h)
            ln(f"{p}/attention/output", h)
            dense(f"{p}/intermediate/dense", h, s.intermediate_size)
            dense(f"{p}/output/dense", s.intermediate_size, h)
            ln(f"{p}/output", h)

    # Shared embeddings live under "electra/embeddings" whoever creates them first.
    embeddings("electra", disc)
    generator_width = disc.hidden_size
    if separate_generator and two_tower:
        for tower in ("generator_ltr", "generator_rtl"):
            if untied:
                embeddings(tower, gen)
            transformer(tower, gen)
        generator_width = 2 * gen.hidden_size  # the towers' outputs are concatenated
        head = "cloze_predictions"
    elif separate_generator:
        if untied:
            embeddings("generator", gen)
        transformer("generator", gen)
        generator_width = gen.hidden_size
        head = "generator_predictions"
    else:
        head = "generator_predictions"
    table_width = gen.embedding_size if separate_generator else disc.embedding_size
    dense(f"{head}/dense", generator_width, table_width)
    ln(head, table_width)
    shapes[f"{head}/output_bias"] = (disc.vocab_size,)
    transformer("electra", disc)
    if rtd:
        dense("discriminator_predictions/dense", disc.hidden_size, disc.hidden_size)
        dense("discriminator_predictions/dense_1", disc.hidden_size, 1)
    return shapes


def electra_variables(hparams: dict, seed: int = 0, std: float = 0.1) -> dict[str, np.ndarray]:
    """Random float32 values for `layout(hparams)`: normal(0, std); LayerNorm gammas 1 + that."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in layout(hparams).items():
        value = rng.normal(0.0, std, shape).astype(np.float32)
        out[name] = 1 + value if name.endswith("/gamma") else value
    return out


def write_release(
    folder: Path,
    *,
    hparams: dict | None = None,
    variables: dict[str, np.ndarray] | None = None,
    extra: dict[str, np.ndarray] | None = None,
    step: int = 1000,
    training_state: bool = True,
    vocab: list[str] | None = None,
    hparams_file: str | None = None,
    seed: int = 0,
    std: float = 0.1,
) -> Path:
    """Write an unpacked ELECTRA release folder; returns it.

    `checkpoint` names `model.ckpt-<step>` by a relative path, as the Estimator's saver writes
    it. With `training_state` the AdamWeightDecayOptimizer slots (`<var>/adam_m`, `<var>/adam_v`)
    and `global_step` are saved too. `hparams_file` also writes `hparams` as that JSON file
    (releases ship none; a converter may be given one with --config).
    """
    import tensorflow as tf

    hparams = TINY_HPARAMS if hparams is None else hparams
    folder.mkdir(parents=True, exist_ok=True)
    if variables is None:
        variables = electra_variables(hparams, seed=seed, std=std)
        if training_state:
            variables = with_training_state(variables, step=step)
    variables = {**variables, **(extra or {})}
    name = f"model.ckpt-{step}"
    save_tf1_checkpoint(folder / name, variables)
    tf.compat.v1.train.update_checkpoint_state(str(folder), name, all_model_checkpoint_paths=[name])
    (folder / "vocab.txt").write_text("\n".join(vocab or VOCAB) + "\n", encoding="utf-8")
    if hparams_file:
        (folder / hparams_file).write_text(json.dumps(hparams, indent=2))
    return folder


def checkpoint_prefix(folder: Path) -> Path:
    """The prefix the folder's `checkpoint` state file names."""
    import tensorflow as tf

    return Path(tf.train.latest_checkpoint(str(folder)))

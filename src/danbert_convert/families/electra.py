"""ELECTRA (google-research/electra): one pre-training checkpoint, two networks.

A checkpoint of ELECTRA's run_pretraining.py holds the discriminator under `electra/` with its
replaced-token-detection head `discriminator_predictions/`, and the generator under
`generator/` with its masked-LM head `generator_predictions/`. The generator has no embeddings
of its own unless the run untied them: it reads `electra/embeddings` (model/modeling.py puts
the embeddings under "electra" with reuse). `--part` chooses the network converted; the other
one's variables are left out, with that reason.

Releases ship no config file: sizes come from the shapes, the head count from ELECTRA's own
rule `max(1, hidden_size // 64)` (util/training_utils.get_bert_config and
run_pretraining.get_generator_config) unless a config says otherwise — run_pretraining.py's
`--hparams` JSON, a BertConfig-style JSON or a transformers config.json.
Sources: google-research/electra at commit 8a46635 (model/modeling.py, run_pretraining.py,
configure_pretraining.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from pathlib import Path

from danbert_convert.errors import InputError
from danbert_convert.families.table import (
    COPY,
    INTER,
    Architecture,
    Family,
    Head,
    Plan,
    Rule,
    Table,
    common_config,
    dense,
    encoder_layer,
    ln,
)
from danbert_convert.readers.base import VariableInfo

log = logging.getLogger(__name__)

H, V, E = "hidden_size", "vocab_size", "embedding_size"
P, T = "max_position_embeddings", "type_vocab_size"
PARTS = ("discriminator", "generator")
SIZE_KEYS = (V, E, H, "num_hidden_layers", INTER, P, T)

# run_pretraining.py's heads. Discriminator: tf.layers.dense(H, act) then dense(1), squeezed:
# TF names them dense and dense_1. Generator (get_token_logits): dense(E, act), LayerNorm,
# then the word-embedding table as the decoder plus output_bias: there is no decoder variable,
# and transformers ties generator_lm_head.weight to the word embeddings (tie_word_embeddings).
DISCRIMINATOR_HEAD = (
    *dense("discriminator_predictions/dense", "discriminator_predictions.dense", H, H,
           group="discriminator"),
    *dense("discriminator_predictions/dense_1", "discriminator_predictions.dense_prediction",
           H, 1, group="discriminator"),
)  # fmt: skip
GENERATOR_HEAD = (
    *dense("generator_predictions/dense", "generator_predictions.dense", H, E, group="mlm"),
    *ln("generator_predictions", "generator_predictions", E, group="mlm"),
    Rule("generator_predictions/output_bias", "generator_lm_head.bias", COPY, (V,), "mlm"),
)

HEADS = {
    "discriminator": Head("discriminator", "replaced-token-detection",
                          ("discriminator_predictions",), "sequence"),
    "generator": Head("mlm", "masked-LM", ("generator_predictions", "generator_lm_head"),
                      "sequence"),
}  # fmt: skip
# The discriminator's replaced-token logits are no Hub task: it gets features, as AutoModel.
ARCHITECTURES = {
    "discriminator": (
        Architecture("ElectraForPreTraining", frozenset({"discriminator"}), pooler=False),
        Architecture("ElectraModel", frozenset(), pooler=False, prefixed=False),
    ),
    "generator": (
        Architecture("ElectraForMaskedLM", frozenset({"mlm"}), pooler=False, task="fill-mask"),
        Architecture("ElectraModel", frozenset(), pooler=False, prefixed=False),
    ),
}
CLASS_FOR_HEADS = {
    "discriminator": {"none": "ElectraModel"},
    "generator": {"mlm": "ElectraForMaskedLM", "none": "ElectraModel"},
}

# Names of ELECTRA's other pre-training objectives, refused by name (electra.md §6).
ELECTRIC = ("generator_ltr/", "generator_rtl/", "cloze_predictions/")


def scopes(names: Collection[str], part: str) -> tuple[str, str]:
    """(embedding scope, transformer scope) of `part`.

    The generator has `generator/embeddings` only when untied_generator_embeddings was set,
    and is `electra/` itself when the run had no separate generator (untied_generator false,
    or the BERT-like masked-LM objective).
    """
    if part == "discriminator":
        return "electra/embeddings", "electra"
    untied = "generator/embeddings/word_embeddings" in names
    separate = any(n.startswith("generator/encoder/") for n in names)
    return ("generator/embeddings" if untied else "electra/embeddings",
            "generator" if separate else "electra")  # fmt: skip


def detect(names: Collection[str]) -> bool:
    """ELECTRA's networks are under `electra/` (and `generator/`), not `bert/`."""
    return any(n.startswith(("electra/encoder/layer_", "electra/embeddings/")) for n in names)


def table(names: Collection[str], part: str, config: dict) -> Table:
    """The table of `part`: its embeddings, projection (if any), encoder and head."""
    emb, model = scopes(names, part)
    # modeling.py makes embeddings_project only when the embeddings are narrower or wider
    # than the encoder; transformers likewise only when embedding_size != hidden_size.
    project = config[E] != config[H]
    rules = (
        Rule(f"{emb}/word_embeddings", "electra.embeddings.word_embeddings.weight", COPY, (V, E)),
        Rule(f"{emb}/position_embeddings", "electra.embeddings.position_embeddings.weight",
             COPY, (P, E)),
        Rule(f"{emb}/token_type_embeddings", "electra.embeddings.token_type_embeddings.weight",
             COPY, (T, E)),
        *ln(emb, "electra.embeddings", E),
        *(dense(f"{model}/embeddings_project", "electra.embeddings_project", E, H)
          if project else ()),
        *encoder_layer(f"{model}/encoder/layer_{{i}}", "electra.encoder.layer.{i}"),
        *(DISCRIMINATOR_HEAD if part == "discriminator" else GENERATOR_HEAD),
    )  # fmt: skip
    other = "generator" if part == "discriminator" else "discriminator"
    reason = f"the {other}'s; --part {other} converts it"
    if part == "discriminator":
        theirs = [r"^generator/", r"^generator_predictions/"]
    else:
        theirs = [r"^discriminator_predictions/"]
        if model == "generator":
            theirs += [r"^electra/encoder/", r"^electra/embeddings_project/"]
        if emb == "generator/embeddings":
            theirs.append(r"^electra/embeddings/")
    return Table(
        f"ELECTRA {part}", rules, (HEADS[part],), ARCHITECTURES[part], CLASS_FOR_HEADS[part],
        prefix="electra.", elsewhere=tuple((re.compile(p), reason) for p in theirs),
        heads_where=f"{'discriminator' if part == 'discriminator' else 'generator'}_predictions/*",
    )  # fmt: skip


def _shape(variables: dict[str, VariableInfo], name: str, ndim: int, where: str) -> tuple:
    info = variables.get(name)
    if info is None:
        raise InputError(f"{where}: missing variable {name}")
    if len(info.shape) != ndim:
        raise InputError(f"{where}: {name} has shape {list(info.shape)}; expected {ndim} "
                         "dimensions")  # fmt: skip
    return info.shape


def _from_shapes(
    variables: dict[str, VariableInfo], part: str, where: str
) -> tuple[dict, dict[str, str]]:
    """The part's sizes as its variables' shapes say, and which variable said each."""
    names = variables.keys()
    emb, model = scopes(names, part)
    word, pos, types = (f"{emb}/{k}_embeddings" for k in ("word", "position", "token_type"))
    query = f"{model}/encoder/layer_0/attention/self/query/kernel"
    inter = f"{model}/encoder/layer_0/intermediate/dense/kernel"
    layer = re.compile(rf"^{model}/encoder/layer_([0-9]+)/")
    layers = {int(m.group(1)) for n in names if (m := layer.match(n))}
    sizes = {
        V: _shape(variables, word, 2, where)[0],
        E: _shape(variables, word, 2, where)[1],
        P: _shape(variables, pos, 2, where)[0],
        T: _shape(variables, types, 2, where)[0],
        H: _shape(variables, query, 2, where)[1],
        INTER: _shape(variables, inter, 2, where)[1],
        "num_hidden_layers": 1 + max(layers),
    }
    origin = {V: word, E: word, P: pos, T: types, H: query, INTER: inter,
              "num_hidden_layers": f"{model}/encoder/layer_*"}  # fmt: skip
    return sizes, {k: f"the shape of {v}" if "*" not in v else f"the count of {v}"
                   for k, v in origin.items()}  # fmt: skip


def _hparams_sizes(hp: dict, where: str) -> dict[str, dict]:
    """(discriminator, generator) sizes that run_pretraining.py's `--hparams` give, by
    ELECTRA's rules (configure_pretraining.py, util/training_utils.get_bert_config,
    run_pretraining.get_generator_config). Only what a checkpoint's shapes cannot show
    matters in the end (the head counts); the rest is checked against the shapes."""
    widths = {"small": (256, 12), "base": (768, 12), "large": (1024, 24)}
    size = hp.get("model_size", "small")
    if not isinstance(size, str) or size not in widths:  # a list or object: not a name
        raise InputError(f"{where}: model_size {size!r}; ELECTRA knows {', '.join(widths)}")
    overrides = hp.get("model_hparam_overrides", {})
    if not isinstance(overrides, dict):
        raise InputError(f"{where}: model_hparam_overrides is not a JSON object")
    d: dict = {H: widths[size][0], "num_hidden_layers": widths[size][1],
               V: hp.get("vocab_size", 30522), P: 512, T: 2, "hidden_act": "gelu"}  # fmt: skip
    d.update(overrides)
    d["num_attention_heads"] = max(1, _int(d, H, where) // 64)
    d[INTER] = 4 * _int(d, H, where)
    d.update(overrides)  # get_bert_config applies them before and after the derived sizes
    if hp.get("debug"):  # run_pretraining.py's debug model
        d.update({"num_hidden_layers": 3, H: 144, INTER: 576, "num_attention_heads": 4})
    # configure_pretraining.py: small models have 128-wide embeddings unless told otherwise.
    emb = hp.get("embedding_size", 128 if size == "small" else None)
    d[E] = _int(d, H, where) if emb is None else emb
    if not (hp.get("electra_objective", True) and hp.get("untied_generator", True)):
        # run_pretraining.py builds no separate generator then: it is the `electra/` network.
        return {"discriminator": d, "generator": dict(d)}
    g = dict(d)
    for key, default in (("generator_hidden_size", 0.25), ("generator_layers", 1.0)):
        f = hp.get(key, default)
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1e6:
            raise InputError(f"{where}: {key} is {f!r}; it must be a positive fraction")
    g[H] = int(round(d[H] * hp.get("generator_hidden_size", 0.25)))
    g["num_hidden_layers"] = int(round(d["num_hidden_layers"] * hp.get("generator_layers", 1.0)))
    g[INTER] = 4 * g[H]
    g["num_attention_heads"] = max(1, g[H] // 64)
    # The generator reads the shared table (E wide) unless its embeddings were untied.
    g[E] = g[H] if hp.get("untied_generator_embeddings") else d[E]
    return {"discriminator": d, "generator": g}


def _int(d: dict, key: str, where: str) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise InputError(f"{where}: {key} is {v!r}; it must be a positive integer")
    return v


HPARAMS_KEYS = ("model_size", "model_hparam_overrides", "generator_hidden_size",
                "generator_layers", "untied_generator_embeddings", "electra_objective")  # fmt: skip


def read_config(
    config: dict | None,
    config_name: str,
    variables: dict[str, VariableInfo],
    part: str,
    checkpoint_name: str,
) -> tuple[dict, dict[str, str]]:
    """The part's sizes: the shapes', with the head count (and activation) from `config` when
    it describes this part, else ELECTRA's rule. A size the config states that the shapes
    contradict is an error naming the key."""
    names = variables.keys()
    electric = next((s for s in ELECTRIC if any(n.startswith(s) for n in names)), None)
    if part == "generator":
        if electric is not None:
            raise InputError(f"{checkpoint_name}: an Electric checkpoint (two-tower cloze "
                             f"generator, {electric}*); its generator is not supported"
                             )  # fmt: skip
        if "generator_predictions/output_bias" not in names:
            raise InputError(f"{checkpoint_name}: no generator (generator_predictions/*) in "
                             "this checkpoint; convert --part discriminator")  # fmt: skip
    elif "discriminator_predictions/dense_1/kernel" not in names and not any(
        n.startswith("electra/encoder/") for n in names
    ):
        raise InputError(f"{checkpoint_name}: no discriminator (electra/encoder/*)")
    sizes, origin = _from_shapes(variables, part, checkpoint_name)
    heads = max(1, sizes[H] // 64)
    origin["num_attention_heads"] = "ELECTRA's rule max(1, hidden_size // 64)"
    act = "gelu"
    described = None if config is None else _described(config, part, sizes, config_name)
    if described is not None:
        said, kind = described
        for key in SIZE_KEYS:
            if key in said and said[key] != sizes[key]:
                raise InputError(f"{config_name}: {key} {said[key]!r} ({kind}) vs {sizes[key]} "
                                 f"from {origin[key]}")  # fmt: skip
        if "num_attention_heads" in said:
            heads = _int(said, "num_attention_heads", config_name)
            origin["num_attention_heads"] = f"{Path(config_name).name} ({kind})"  # published
        act = said.get("hidden_act", act)
    if described is None and sizes[H] % 64:
        # Every released ELECTRA is a multiple of 64 wide; another width is a run with its own
        # settings (run_pretraining.py's debug model: 144 wide, 4 heads), which no shape shows.
        log.warning("%s: %s hidden_size %d is no multiple of 64: %d attention heads by "
                    "ELECTRA's rule; if the run set another count, pass its --hparams with "
                    "--config", checkpoint_name, part, sizes[H], heads)  # fmt: skip
    if sizes[H] % heads:
        where = config_name if described else checkpoint_name
        raise InputError(f"{where}: hidden_size {sizes[H]} is not a multiple of "
                         f"num_attention_heads {heads}")  # fmt: skip
    if not isinstance(act, str):
        raise InputError(f"{config_name}: hidden_act {act!r} is not a name")
    return {**sizes, "num_attention_heads": heads, "hidden_act": act,
            "layer_norm_eps": 1e-12}, origin  # fmt: skip


def _described(config: dict, part: str, sizes: dict, config_name: str) -> tuple[dict, str] | None:
    """What `config` says about `part`, and what kind of config it is; None if it describes
    the other network only (a BertConfig of the discriminator, given for the generator)."""
    if any(k in config for k in HPARAMS_KEYS) or H not in config:
        return _hparams_sizes(config, config_name)[part], "run_pretraining.py --hparams"
    kind = "transformers config.json" if config.get("model_type") == "electra" else "BertConfig"
    if config.get("model_type") not in (None, "electra"):
        raise InputError(f"{config_name}: model_type {config['model_type']!r} is not ELECTRA")
    if part == "generator" and config.get(H) != sizes[H]:
        return None  # the discriminator's sizes: the generator's heads follow the rule
    return config, kind


def hf_config(
    config: dict, plan: Plan, hidden_act: str | None, pad_token_id: int
) -> dict[str, object]:
    """config.json of an ElectraForPreTraining / ElectraForMaskedLM / ElectraModel."""
    act = hidden_act or config.get("hidden_act", "gelu")
    if plan.architecture.name == "ElectraForMaskedLM" and act != "gelu":
        # transformers' ElectraGeneratorPredictions applies gelu whatever hidden_act says,
        # while ELECTRA's generator head applied hidden_act: the result would differ.
        raise InputError(f"hidden_act {act!r}: transformers' ELECTRA generator head always "
                         "applies gelu, so only a gelu generator converts faithfully")  # fmt: skip
    out: dict[str, object] = {
        "model_type": "electra",
        **{k: config[k] for k in (*SIZE_KEYS, "num_attention_heads")},
        "hidden_act": act,
        "layer_norm_eps": config.get("layer_norm_eps", 1e-12),
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "pad_token_id": pad_token_id,
    }
    return common_config(out, plan)


FAMILY = Family(
    name="electra",
    title="ELECTRA",
    parts=PARTS,
    config_file="",
    detect=detect,
    read_config=read_config,
    table=table,
    hf_config=hf_config,
    classes=lambda part: ((HEADS[part],), ARCHITECTURES[part]),
    model_type="electra",
    default_part="discriminator",
    vocab_above=True,  # run_pretraining.py: vocab.txt in DATA_DIR, checkpoints in models/NAME/
    source_kind="an ELECTRA TensorFlow 1 checkpoint",
)

"""Measure verify's parity margins: |diff| against its allowance, on correct and broken models.

    .venv/bin/python benchmarks/parity_margins.py [--cache DIR] [--base] [--std 0.02 0.3]

For checkpoints with normal weights of each --std (written by TensorFlow, converted by
danbert), tiny (hidden 16, 2 layers) and with --base also BERT-base-shaped (hidden 768,
12 layers, vocab 32000), this runs verify's own reference and comparison
(danbert_convert.stages.verify.compare) on the converted model, then on copies broken the ways
parity must catch: one weight +0.05, a square kernel left untransposed, query and key
swapped, a LayerNorm's gamma and beta swapped, and a head-only weight +0.05.

For the correct model it prints, per output, |diff| / max|ref| (float32 rounding relative
to the output's scale; the allowance is PARITY_ATOL + PARITY_RTOL * max|ref|) and the
worst |diff| / allowance over outputs and layers: the margin to a false failure is its
inverse. For each broken copy it prints the worst |diff| / allowance: the margin by which
the fault is caught (it must be > 1).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tfckpt import TINY_CONFIG, VOCAB, bert_variables  # noqa: E402

BASE_CONFIG = {
    **TINY_CONFIG,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "vocab_size": 32000,
}


def _vocab(size: int) -> list[str]:
    """The tests' vocab plus the sample's words, so that the Danish inputs hit real rows."""
    from danbert_convert.stages.verify import danish_sample

    words = re.findall(r"\w+", " ".join(danish_sample()).lower())
    vocab = list(dict.fromkeys([*VOCAB, *words]))
    return vocab[:size]


def write_checkpoint(folder: Path, cfg: dict, std: float) -> Path:
    """bert_config.json, vocab.txt and a TF checkpoint with N(0, std) weights (written once)."""
    if (folder / "bert_model.ckpt.index").is_file():
        return folder
    import tensorflow as tf

    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    variables = bert_variables(cfg, std=std)
    names = sorted(variables)
    # Eager SaveV2, the op a tf.compat.v1 Saver runs: no graph protobuf to hold the values.
    tf.raw_ops.SaveV2(prefix=str(tmp / "bert_model.ckpt"), tensor_names=names,
                      shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(variables[n]) for n in names])  # fmt: skip
    (tmp / "bert_config.json").write_text(json.dumps(cfg, indent=2))
    (tmp / "vocab.txt").write_text("\n".join(_vocab(cfg["vocab_size"])) + "\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def _breakages(layers: int) -> dict[str, object]:
    """name -> edit(state_dict) of a converted BertForPreTraining, in place."""
    a = "bert.encoder.layer.0.attention"

    def bump(key: str):
        return lambda sd: sd[key].view(-1)[0].add_(0.05)

    def transpose(key: str):
        return lambda sd: sd[key].copy_(sd[key].T.clone())

    def swap(k1: str, k2: str):
        def edit(sd):
            tmp = sd[k1].clone()
            sd[k1].copy_(sd[k2])
            sd[k2].copy_(tmp)

        return edit

    def swap_qk(sd):
        for part in ("weight", "bias"):
            swap(f"{a}.self.query.{part}", f"{a}.self.key.{part}")(sd)

    return {
        "weight +0.05 (layer 0 output.dense)": bump("bert.encoder.layer.0.output.dense.weight"),
        f"weight +0.05 (layer {layers - 1} intermediate)": bump(
            f"bert.encoder.layer.{layers - 1}.intermediate.dense.weight"
        ),
        "query kernel untransposed": transpose(f"{a}.self.query.weight"),
        "key kernel untransposed": transpose(f"{a}.self.key.weight"),
        "value kernel untransposed": transpose(f"{a}.self.value.weight"),
        "attention output kernel untransposed": transpose(f"{a}.output.dense.weight"),
        "query and key swapped": swap_qk,
        "LayerNorm gamma/beta swapped (layer 0)": swap(
            f"{a}.output.LayerNorm.weight", f"{a}.output.LayerNorm.bias"
        ),
        "LayerNorm gamma/beta swapped (embeddings)": swap(
            "bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias"
        ),
        "MLM transform dense +0.05": bump("cls.predictions.transform.dense.weight"),
        "NSP weight +0.05": bump("cls.seq_relationship.weight"),
    }


def measure(src: Path, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertForPreTraining

    from danbert_convert.families.bert_reference import forward
    from danbert_convert.readers.base import open_checkpoint
    from danbert_convert.source import discover
    from danbert_convert.stages.convert import convert
    from danbert_convert.stages.verify import (
        PARITY_ATOL,
        PARITY_RTOL,
        _batch,
        _model_outputs,
        _source_reader,
        compare,
        danish_sample,
    )

    if not (out / "danbert-manifest.json").is_file():
        convert(src, out, force=True, progress=False)
    source = discover(src)
    fast = AutoTokenizer.from_pretrained(out)
    batch = _batch(fast, danish_sample(), min(64, source.config["max_position_embeddings"]))
    ckpt = open_checkpoint(source.checkpoint)
    ref = forward(_source_reader(ckpt), source.config, batch["input_ids"],
                  batch["token_type_ids"], batch["attention_mask"],
                  has=ckpt.variables().__contains__)  # fmt: skip
    ckpt.close()
    want = {"sequence": ref.sequence, "pooled": ref.pooled, "mlm": ref.mlm_logits,
            "nsp": ref.nsp_logits}  # fmt: skip
    model = BertForPreTraining.from_pretrained(out).eval()

    def worst() -> tuple[float, str, dict[str, float]]:
        got = _model_outputs(model, batch)
        comps = [compare(k, got[k], want[k]) for k in want]
        layers = [compare(f"h{i}", g, w) for i, (g, w) in
                  enumerate(zip(got["layers"], ref.hidden_states, strict=True))]  # fmt: skip
        rel = {c.name: c.diff / c.scale for c in comps}
        top = max(comps + layers, key=lambda c: c.ratio)
        return top.ratio, top.name, rel

    ratio, name, rel = worst()
    print(f"  correct: worst |diff|/allowance {ratio:.2g} ({name}); margin {1 / ratio:.2g}x; "
          "|diff|/max|ref|: " + ", ".join(f"{k} {v:.1e}" for k, v in rel.items()))  # fmt: skip
    print(f"           (allowance = {PARITY_ATOL:g} + {PARITY_RTOL:g} * max|ref|)")
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for label, edit in _breakages(model.config.num_hidden_layers).items():
            edit(model.state_dict())
            ratio, name, _ = worst()
            verdict = "caught" if ratio > 1 else "MISSED"
            print(f"  {label:<44} {verdict}: worst {name} at {ratio:.3g}x the allowance")
            model.load_state_dict(saved)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=HERE / ".cache" / "parity")
    ap.add_argument("--base", action="store_true", help="also BERT-base-shaped checkpoints")
    ap.add_argument("--std", type=float, nargs="+", default=[0.02, 0.3])
    args = ap.parse_args()
    shapes = {"tiny": TINY_CONFIG, **({"base": BASE_CONFIG} if args.base else {})}
    for shape, cfg in shapes.items():
        for std in args.std:
            print(f"{shape} (hidden {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers), "
                  f"weights std {std}:")  # fmt: skip
            src = write_checkpoint(args.cache / f"{shape}-{std}", cfg, std)
            measure(src, args.cache / f"{shape}-{std}-converted")


if __name__ == "__main__":
    main()

"""Regenerate the bundled sample release, src/danbert_convert/data/danish_bert_sample.zip.

Needs TensorFlow (the `tf` extra) and wordfreq (the `dev` extra):

    python scripts/make_sample_release.py            # rewrite the zip, print sha256 and size
    python scripts/make_sample_release.py --out X.zip

The sample is laid out as BotXo's Danish v2 release: one folder (`danish_bert_sample/`, named
after the zip as `danish_bert_uncased_v2/` is) holding bert_config.json (with the release's
mBERT-style keys and head-room rows beyond vocab.txt), vocab.txt and a TF1 checkpoint written
by TensorFlow's Saver: bert_model.ckpt.{index,data-00000-of-00001,meta} and the `checkpoint`
state file, with the Adam slots (adam_m, adam_v) and global_step that run_pretraining.py
saves. The weights are random (BERT's initializer, std 0.02): the sample is for trying the
tool, not for predictions.

vocab.txt: [PAD] [UNK] [CLS] [SEP] [MASK] on lines 1-5, then punctuation, digits and letters
alone and as ##-pieces (so any Danish text tokenizes without [UNK]), the most frequent Danish
words of wordfreq's list and the most frequent word-inner pieces. Words are lowercased and
folded as the release's training text was ("all characters converted into either ASCII or
æ ø å"): accented loanwords keep their letters but lose their accents (idé -> ide,
café -> cafe, müller -> muller). The word list is derived from wordfreq's data, which is
CC BY-SA 4.0 (https://github.com/rspeer/wordfreq).

Reproducible: fixed seeds, a fixed order, zip entries with fixed timestamps and permissions.
The members' bytes (checkpoint index and data included) come out identical; the .meta graph
carries TensorFlow's version, so it is byte-identical only with the same TensorFlow, and the
compressed zip only with the same zlib as well. tests/releases/test_sample.py checks what is
claimed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import unicodedata
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from tfckpt import bert_variables  # noqa: E402  (the one table of Google-BERT variable names)

ZIP = ROOT / "src" / "danbert_convert" / "data" / "danish_bert_sample.zip"
FOLDER = "danish_bert_sample"
SEED = 20261201
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCTUATION = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["«", "»", "–", "—", "…", "§", "€"]
LETTERS = list("abcdefghijklmnopqrstuvwxyzæøå")
DIGITS = list("0123456789")
WORDS = 3000
"""Whole words taken from the top of wordfreq's Danish list (after folding and dedup)."""
PIECES = 500
"""Word-inner ##-pieces, 2 to 5 letters, by frequency-weighted count."""
PIECE_SOURCE = 20000
"""How many of wordfreq's words the pieces are counted over."""
_WORD = re.compile(r"^[a-zæøå]+$")

CONFIG = {
    "attention_probs_dropout_prob": 0.1,
    "directionality": "bidi",
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 128,
    "max_position_embeddings": 512,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pooler_fc_size": 32,
    "pooler_num_attention_heads": 2,
    "pooler_num_fc_layers": 3,
    "pooler_size_per_head": 16,
    "pooler_type": "first_token_transform",
    "type_vocab_size": 2,
    "vocab_size": 0,  # set from vocab.txt, with head-room as in the Danish release
}
GLOBAL_STEP = 1_000_000


def fold(word: str) -> str:
    """Lowercase and strip every accent except å's ring (æ and ø do not decompose)."""
    out = []
    for c in word.lower():
        if c in "æøå":
            out.append(c)
            continue
        out.extend(d for d in unicodedata.normalize("NFD", c) if not unicodedata.combining(d))
    return unicodedata.normalize("NFC", "".join(out))


def build_vocab() -> list[str]:
    """vocab.txt's lines, in order."""
    import wordfreq

    words: list[str] = []
    loanwords: list[str] = []
    seen: set[str] = set()
    for raw in wordfreq.top_n_list("da", PIECE_SOURCE):
        w = fold(raw)
        if _WORD.match(w) and len(w) > 1 and w not in seen:
            seen.add(w)
            words.append(w)
            if w != raw.lower():  # an accent other than å's was dropped
                loanwords.append(w)
    # Every accented loanword of the list, in its folded form, besides the most frequent
    # words: what the release's training text turned them into.
    chosen = words[:WORDS] + [w for w in loanwords if w not in words[:WORDS]]
    # Pieces that words outside the vocab break into after their first piece, weighted by
    # how often those words occur: endings (-ene, -erne, -hed) and compound parts.
    counts: Counter[str] = Counter()
    whole = set(chosen)
    for w in words:
        if w in whole:
            continue
        weight = wordfreq.word_frequency(w, "da")
        for i in range(1, len(w)):
            for n in range(2, 6):
                if i + n <= len(w):
                    counts[w[i : i + n]] += weight
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    pieces = ["##" + p for p, _ in ranked[:PIECES]]
    singles = PUNCTUATION + DIGITS + LETTERS
    hashed = ["##" + c for c in DIGITS + LETTERS]
    vocab = SPECIALS + singles + hashed + chosen + pieces
    assert len(vocab) == len(set(vocab)), "duplicate vocab token"
    return vocab


def training_variables(config: dict, seed: int) -> dict[str, np.ndarray]:
    """The model's variables (BERT's initializer), each with Adam slots, and global_step."""
    model = bert_variables(config, seed=seed, std=config["initializer_range"])
    rng = np.random.default_rng(seed + 1)
    out: dict[str, np.ndarray] = {}
    for name, value in model.items():
        out[name] = value
        # First and second moments of recent gradients: small, and v is positive.
        out[f"{name}/adam_m"] = rng.normal(0.0, 1e-4, value.shape).astype(np.float32)
        out[f"{name}/adam_v"] = (rng.normal(0.0, 1e-4, value.shape) ** 2).astype(np.float32)
    out["global_step"] = np.array(GLOBAL_STEP, dtype=np.int64)
    return out


def save_checkpoint(folder: Path, variables: dict[str, np.ndarray]) -> None:
    """Save with a TF1 Saver as run_pretraining.py did: .index, .data, .meta, `checkpoint`.

    The variables start as zeros and are loaded by feeding, so the .meta graph holds no
    copy of the values.
    """
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(SEED)
        tf_vars = {
            name: tf.compat.v1.Variable(
                tf.zeros(value.shape, dtype=tf.as_dtype(value.dtype)),
                name=name,
                use_resource=False,
                trainable=name != "global_step" and "/adam_" not in name,
            )
            for name, value in variables.items()
        }
        saver = tf.compat.v1.train.Saver(var_list=tf_vars, save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            for name, var in tf_vars.items():
                sess.run(var.initializer, {var.initial_value: variables[name]})
            saver.save(sess, str(folder / "bert_model.ckpt"))


def write_folder(folder: Path) -> None:
    """The unpacked release: config, vocab and checkpoint."""
    folder.mkdir(parents=True)
    vocab = build_vocab()
    # Head-room rows beyond vocab.txt, as the Danish release has (32000 for 31748 lines).
    config = {**CONFIG, "vocab_size": (len(vocab) // 256 + 1) * 256}
    (folder / "bert_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    save_checkpoint(folder, training_variables(config, SEED))


def write_zip(folder: Path, zip_path: Path) -> None:
    """Zip `folder` under FOLDER/ with fixed order, timestamps and permissions."""
    names = sorted(p.name for p in folder.iterdir())
    with zipfile.ZipFile(zip_path, "w") as zf:
        top = zipfile.ZipInfo(f"{FOLDER}/", date_time=(2019, 12, 20, 0, 0, 0))
        top.create_system, top.external_attr = 3, (0o40755 << 16) | 0x10
        zf.writestr(top, b"")
        for name in names:
            info = zipfile.ZipInfo(f"{FOLDER}/{name}", date_time=(2019, 12, 20, 0, 0, 0))
            info.create_system, info.external_attr = 3, 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (folder / name).read_bytes(), compresslevel=9)


def make(zip_path: Path) -> str:
    """Write the sample zip to `zip_path`; return its SHA-256."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / FOLDER
        write_folder(folder)
        part = zip_path.with_name(zip_path.name + ".tmp")
        write_zip(folder, part)
        os.replace(part, zip_path)
    return hashlib.sha256(zip_path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ZIP, help=f"zip to write (default: {ZIP})")
    args = parser.parse_args()
    digest = make(args.out)
    print(f"{args.out}: {args.out.stat().st_size} bytes, sha256 {digest}")
    print(
        "update sha256 and size of danish-bert-sample in src/danbert_convert/releases/registry.py"
    )


if __name__ == "__main__":
    main()

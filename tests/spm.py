"""A small SentencePiece unigram model trained in the test run, laid out as ALBERT's 30k-clean.

ALBERT's README gives the command behind 30k-clean.model: `--pad_id=0 --unk_id=1 --eos_id=-1
--bos_id=-1 --control_symbols=[CLS],[SEP],[MASK] --user_defined_symbols="(,),\\",-,.,–,£,€"
--model_type=unigram`, so <pad>=0, <unk>=1, [CLS]=2, [SEP]=3, [MASK]=4, then the user-defined
symbols. The text is real words (wordfreq) of several languages, as written (capitals, accents),
with numbers such as "1,000" so that pieces ending in a digit and a comma are learned (ALBERT's
tokenizer splits those apart), and punctuation.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

ALBERT_SPECIALS = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")
ALBERT_USER_DEFINED = ("(", ")", '"', "-", ".", "–", "£", "€")
LANGUAGES = ("en", "da", "de", "fr")


def training_text(lines: int = 3000, seed: int = 0) -> list[str]:
    """Sentences of wordfreq's frequent words as written, with numbers and punctuation."""
    from wordfreq import top_n_list

    rng = random.Random(seed)
    words = {lang: top_n_list(lang, 500) for lang in LANGUAGES}
    out = []
    for _ in range(lines):
        lang = rng.choice(LANGUAGES)
        sentence = []
        for _ in range(rng.randint(4, 14)):
            r = rng.random()
            if r < 0.08:
                sentence.append(f"{rng.randint(1, 999)},{rng.randint(0, 999):03d}")
            elif r < 0.12:
                sentence.append(f"{rng.randint(1, 99)}.{rng.randint(0, 9)}")
            else:
                w = rng.choice(words[lang])
                sentence.append(w.capitalize() if rng.random() < 0.15 else w)
        text = " ".join(sentence)
        out.append(text[0].upper() + text[1:] + rng.choice([".", ".", "!", "?", ","]))
    return out


def train_spm(
    folder: Path,
    texts: Iterable[str] | None = None,
    vocab_size: int = 1000,
    name: str = "30k-clean",
    model_type: str = "unigram",
) -> Path:
    """Train a SentencePiece model with ALBERT's settings into `folder`; returns the .model."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / f"{name}.txt"
    corpus.write_text("\n".join(training_text() if texts is None else texts) + "\n", "utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / name),
        vocab_size=vocab_size,
        pad_id=0,
        unk_id=1,
        eos_id=-1,
        bos_id=-1,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        user_defined_symbols=list(ALBERT_USER_DEFINED),
        character_coverage=1.0,
        model_type=model_type,
        # Lets pieces such as "▁1," be learned: ALBERT's tokenizer has a rule for them.
        split_by_number=False,
        num_threads=1,
        minloglevel=2,
    )
    corpus.unlink()
    return folder / f"{name}.model"


def albert_reference_ids(sp, text: str, *, lowercase: bool, keep_accents: bool) -> list[int]:
    """ALBERT's FullTokenizer ids for `text`, [CLS] and [SEP] around them, restated from
    google-research/albert tokenization.py (preprocess_text, then encode_pieces) with
    transformers' keep_accents option. `sp`: a sentencepiece.SentencePieceProcessor."""
    import unicodedata

    text = " ".join(text.strip().split())
    if not keep_accents:
        text = "".join(
            c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
        )
    if lowercase:
        text = text.lower()
    pieces = []
    for piece in sp.EncodeAsPieces(text):
        if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
            cur = sp.EncodeAsPieces(piece[:-1].replace("▁", ""))
            if piece[0] != "▁" and cur[0][0] == "▁":
                cur = cur[1:] if len(cur[0]) == 1 else [cur[0][1:], *cur[1:]]
            pieces += [*cur, piece[-1]]
        else:
            pieces.append(piece)
    return [sp.PieceToId("[CLS]"), *(sp.PieceToId(p) for p in pieces), sp.PieceToId("[SEP]")]

"""An independent BERT tokenizer for the tests, and word-piece vocabs of real words.

google-research/bert's tokenization.py restated in plain Python (clean-up, CJK, whitespace and
punctuation splits, greedy longest-match-first WordPiece), with the normalisation passed in as
a function; nothing from danbert_convert. Vocabs are learned from wordfreq's word lists.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCT = list(".,!?-'\"():;")


def strip_marks(text: str) -> str:
    """BERT's accent stripping: NFD, then drop the nonspacing marks."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def keep_vocab_letters(lowercase: bool, vocab: list[str]) -> Callable[[str], str]:
    """Issue 12's rule, character by character: lowercase when uncased; a character the vocab
    holds stays as it is, any other loses its accents."""
    held = {c for t in vocab for c in t.removeprefix("##")}

    def normalise(text: str) -> str:
        text = unicodedata.normalize("NFC", text.lower() if lowercase else text)
        return "".join(c if c in held else strip_marks(c) for c in text)

    return normalise


def bert_setting(lowercase: bool, strip: bool) -> Callable[[str], str]:
    """BERT's own all-or-nothing setting (the slow tokenizer's do_lower_case, strip_accents)."""

    def normalise(text: str) -> str:
        text = text.lower() if lowercase else text
        return strip_marks(text) if strip else text

    return normalise


def _is_punctuation(c: str) -> bool:
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def basic_tokenize(text: str, normalise: Callable[[str], str]) -> list[str]:
    """Words as BERT's BasicTokenizer makes them (no CJK in the tests' texts)."""
    text = "".join(
        " " if c.isspace() else c
        for c in text
        if not (unicodedata.category(c).startswith("C") and c not in "\t\n\r")
    )
    words: list[str] = []
    for chunk in normalise(text).split():
        current = ""
        for c in chunk:
            if _is_punctuation(c):
                words += [current, c] if current else [c]
                current = ""
            else:
                current += c
        if current:
            words.append(current)
    return words


def wordpiece(word: str, ids: dict[str, int], max_chars: int = 100) -> list[int]:
    """Greedy longest-match-first: the whole word is [UNK] if any part has no piece."""
    if len(word) > max_chars:
        return [ids["[UNK]"]]
    out, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = ("##" if start else "") + word[start:end]
            if piece in ids:
                out.append(ids[piece])
                break
            end -= 1
        else:
            return [ids["[UNK]"]]
        start = end
    return out


def encode(text: str, vocab: list[str], normalise: Callable[[str], str]) -> list[int]:
    """Ids without [CLS]/[SEP]."""
    ids = {t: i for i, t in enumerate(vocab)}
    return [i for w in basic_tokenize(text, normalise) for i in wordpiece(w, ids)]


def learn_vocab(words: list[str], n_words: int = 1500, n_pieces: int = 400) -> list[str]:
    """A WordPiece vocab: specials, every character alone and as ##-piece, punctuation, the
    `n_words` most frequent words and the `n_pieces` most common word endings."""
    chars = sorted({c for w in words for c in w})
    endings = Counter(w[-k:] for w in words for k in (2, 3, 4) if len(w) > k + 1)
    vocab = [*SPECIALS, *chars, *(f"##{c}" for c in chars), *PUNCT]
    vocab += [w for w in dict.fromkeys(words[:n_words]) if w not in vocab]
    vocab += [f"##{e}" for e, _ in endings.most_common(n_pieces)]
    return list(dict.fromkeys(vocab))


def training_text(lang: str, n: int, keep: str) -> list[str]:
    """wordfreq's `n` most frequent words of `lang` (lowercase) as a model's training text saw
    them: letters only, accents stripped from all but the letters in `keep`."""
    from wordfreq import top_n_list

    out = []
    for w in top_n_list(lang, n):
        w = "".join(c if c in keep else strip_marks(c) for c in unicodedata.normalize("NFC", w))
        if w.isalpha() and all(c.isascii() or c in keep for c in w):
            out.append(w)
    return out


def real_words(lang: str, n: int) -> list[str]:
    """wordfreq's `n` most frequent words of `lang` as written, letters only."""
    from wordfreq import top_n_list

    return [w for w in top_n_list(lang, n) if w.isalpha()]

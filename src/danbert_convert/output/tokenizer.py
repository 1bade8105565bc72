"""The tokenizer: how text is normalised for a vocab, what the vocab holds, and the files.

The rule follows the vocab: lowercase when the vocab is uncased, then strip the accents of
every letter except the accented letters the vocab itself holds (Danish å, Swedish å ä ö;
none for an English vocab, as BERT does). tokenizer.json expresses it with the `tokenizers`
library's own normalizers. Only `tokenizers` is imported here (no transformers, no torch).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from danbert_convert._fs import write_bytes, write_json
from danbert_convert.source import SPECIAL_TOKENS

MAX_WORD_CHARS = 100  # WordPiece gives [UNK] for a longer word, as Google's BERT does
# Typographic characters and their ASCII forms. A group is transliterated only when the vocab
# holds none of its characters but does hold the ASCII form: a vocab learned from text that
# had them would hold them (Google's do), so their absence shows the text was made ASCII.
TRANSLITERATION = (
    ("‘’‚‛‹›", "'"),
    ("“”„‟«»", '"'),
    ("‐‑‒–—―−", "-"),
    ("…", "..."),
    ("€", "EUR"),
)
# A vocab is uncased when at most this share of its tokens with cased letters changes when
# lowercased: a few stray capitals must not make a lowercased vocab cased (cased vocabs have
# tens of percent).
UPPERCASE_TOLERANCE = 0.01
# Why a token can never come out of the tokenizer, in the order they are tested.
SENTENCEPIECE = "sentencepiece"  # a SentencePiece word marker leaked into the vocab
SPLIT = "split"  # BERT's fixed steps split it apart or drop some of its characters
UPPERCASE = "uppercase"  # capitals, but the tokenizer lowercases
ACCENTS = "accents"  # accents the rule strips
FORM = "form"  # another Unicode form than the rule's (not NFC, or decomposed)
REASONS = (SENTENCEPIECE, SPLIT, UPPERCASE, ACCENTS, FORM)


def _is_marker(token: str) -> bool:
    # [PAD], [unused12] and the like say nothing about casing.
    return token.startswith("[") and token.endswith("]")


def _body(token: str) -> str:
    """The text a token stands for: a ##-piece without its prefix."""
    return token[2:] if token.startswith("##") else token


def _nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def _is_mn(c: str) -> bool:
    return unicodedata.category(c) == "Mn"


def _has_case(c: str) -> bool:
    return c.lower() != c.upper()


# BERT's basic tokenizer (google-research/bert tokenization.py, and `tokenizers`' port).
def _is_whitespace(c: str) -> bool:
    return c in " \t\n\r" or unicodedata.category(c) in ("Zs", "Zl", "Zp")


def _is_dropped(c: str) -> bool:
    """Removed by clean_text: control and format characters (not tab or newlines)."""
    return c not in "\t\n\r" and unicodedata.category(c).startswith("C") or c in "\0\ufffd"


def _is_cjk(c: str) -> bool:
    cp = ord(c)
    return (
        0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F
    )  # fmt: skip


def _splits(c: str) -> bool:
    """BERT's basic tokenizer splits at `c` or drops it: whitespace splits, control characters
    go, punctuation (ASCII symbols included) and CJK ideographs become words of their own."""
    cp = ord(c)
    return (
        _is_whitespace(c) or _is_dropped(c) or _is_cjk(c)
        or 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
        or unicodedata.category(c).startswith("P")
    )  # fmt: skip


def _hex(text: str) -> str:
    return "".join(f"\\x{{{ord(c):04X}}}" for c in text)


@dataclass(frozen=True)
class Rule:
    """How text is normalised before WordPiece.

    accents "vocab": strip the nonspacing marks (NFD, category Mn) of every character except
    the letters in `keep_letters` and the marks in `keep_marks` (marks the vocab holds on
    their own, as Thai or Devanagari ones); then compose (NFC) if the vocab holds composed
    characters. "strip" and "keep" are BERT's own all-or-nothing settings, without the rest.
    """

    lowercase: bool
    accents: str = "vocab"
    keep_letters: str = ""
    keep_marks: str = ""
    compose: bool = False
    transliterate: tuple[tuple[str, str], ...] = ()

    @property
    def strips_all(self) -> bool:
        """Every accent goes: what BERT does with strip_accents on."""
        if self.accents == "vocab":
            return not (self.keep_letters or self.keep_marks or self.compose)
        return self.accents == "strip"

    @property
    def is_bert(self) -> bool:
        """BERT's own normaliser (BertNormalizer) does exactly this."""
        return not self.transliterate and (self.accents != "vocab" or self.strips_all)

    @property
    def slow_strip_accents(self) -> bool:
        """The slow tokenizer's all-or-nothing setting closest to the rule.

        Off when stripping would change a letter of the vocab (Danish å): text is full of
        those, while letters outside the vocab (é in "idé") are rare.
        """
        return self.strips_all

    def describe(self) -> str:
        """The rule in one line, e.g. "lowercase; strip accents except å; … -> ..."."""
        parts = ["lowercase"] if self.lowercase else []
        if self.accents == "keep":
            parts.append("keep all accents")
        elif self.strips_all:
            parts.append("strip all accents")
        else:
            kept = [*self.keep_letters, *(f"U+{ord(m):04X}" for m in self.keep_marks)]
            parts.append(f"strip accents except {' '.join(kept)}" if kept else "strip accents")
            if self.compose:
                parts.append("compose (NFC)")
        for chars, ascii in self.transliterate:
            parts.append(f"{chars} -> {ascii.lower() if self.lowercase else ascii}")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.describe(),
            "lowercase": self.lowercase,
            "accents": self.accents,
            "keep_letters": self.keep_letters,
            "keep_marks": [f"U+{ord(m):04X}" for m in self.keep_marks],
            "compose": self.compose,
            "transliterate": dict(self.transliterate),
            "slow_tokenizer": {
                "do_lower_case": self.lowercase,
                "strip_accents": self.slow_strip_accents,
                "exact": self.is_bert,
            },
        }

    def normalize(self, text: str) -> str:
        """The rule in plain Python: what tokenizer.json's normaliser computes."""
        for chars, ascii in self.transliterate:
            text = text.translate({ord(c): ascii for c in chars})
        # BERT's clean-up: control characters go, whitespace is a space, CJK stands apart.
        text = "".join(
            " " if _is_whitespace(c) else f" {c} " if _is_cjk(c) else c
            for c in text
            if not _is_dropped(c)
        )
        if self.lowercase:  # character by character, as `tokenizers` does (Σ is σ, never ς)
            text = "".join(c.lower() for c in text)
        if self.accents == "keep":
            return text
        text = _nfd(text)
        if self.accents == "strip":
            return "".join(c for c in text if not _is_mn(c))
        keep = {_nfd(k) for k in self.keep_letters}
        result = "".join(
            cluster if cluster in keep
            else "".join(c for c in cluster if not _is_mn(c) or c in self.keep_marks)
            for cluster in _clusters(text)
        )  # fmt: skip
        return unicodedata.normalize("NFC", result) if self.compose else result

    def _strip_pattern(self) -> str:
        """A regex (Oniguruma, as `tokenizers` runs it) for the marks to delete after NFD.

        A mark of a kept letter survives only where it completes that letter exactly: after
        the letter's base and earlier marks, before its later marks and no further mark.
        """
        protect: dict[str, list[str]] = {}
        for letter in self.keep_letters:
            d = _nfd(letter)
            for i, mark in enumerate(d[1:], 1):
                if _is_mn(mark) and mark not in self.keep_marks:
                    protect.setdefault(mark, []).append(
                        f"(?<={_hex(d[:i])}){_hex(mark)}{_hex(d[i + 1 :])}(?!\\p{{Mn}})"
                    )
        spared = self.keep_marks + "".join(protect)
        parts = [f"[\\p{{Mn}}&&[^{_hex(spared)}]]" if spared else "\\p{Mn}"]
        parts += [f"(?!{'|'.join(alts)}){_hex(mark)}" for mark, alts in protect.items()]
        return "|".join(parts)

    def normalizer(self) -> Any:
        """The rule as a `tokenizers` normalizer: BertNormalizer alone where it is BERT's."""
        from tokenizers import Regex, normalizers

        if self.is_bert:  # forced all-or-nothing settings are always BERT's
            return normalizers.BertNormalizer(
                clean_text=True, handle_chinese_chars=True, strip_accents=self.strips_all,
                lowercase=self.lowercase,
            )  # fmt: skip
        steps: list[normalizers.Normalizer] = [
            normalizers.Replace(Regex(f"[{_hex(c)}]"), a) for c, a in self.transliterate
        ]
        steps.append(
            normalizers.BertNormalizer(
                clean_text=True,
                handle_chinese_chars=True,
                strip_accents=False,
                lowercase=self.lowercase,
            )  # fmt: skip
        )
        steps += [normalizers.NFD(), normalizers.Replace(Regex(self._strip_pattern()), "")]
        if self.compose:
            steps.append(normalizers.NFC())
        return normalizers.Sequence(steps)


def _bodies(vocab: Iterable[str]) -> list[str]:
    """The text of every token but the [..] markers, ##-pieces without their prefix."""
    # Inlined _is_marker and _body: this runs over every token of the vocab.
    return [t[2:] if t[:2] == "##" else t for t in vocab if not (t[:1] == "[" and t[-1:] == "]")]


def _chars(vocab: Iterable[str]) -> set[str]:
    """Every character of the vocab's tokens (## prefixes and [..] markers left out)."""
    return set().union(*_bodies(vocab))


def infer_lowercase(vocab: list[str]) -> bool:
    """An uncased vocab: lowercasing changes (almost) none of its tokens with cased letters.

    Not "has no upper-case letter": Google's English uncased vocab holds ℝ, upper case with
    no lower case. At most UPPERCASE_TOLERANCE of them may have capitals (reported as tokens
    the tokenizer never produces).
    """
    tokens = [t for t in vocab if not (t[:1] == "[" and t[-1:] == "]")]
    cased_chars = {c for c in set().union(*tokens) if _has_case(c)}
    cased = [t for t in tokens if not cased_chars.isdisjoint(t)]
    upper = sum(t != t.lower() for t in cased)
    return upper <= len(cased) * UPPERCASE_TOLERANCE


def rule_for(
    vocab: list[str], lowercase: bool | None = None, strip_accents: bool | None = None
) -> Rule:
    """The rule for `vocab`: casing as asked or inferred, accents and the rest from the vocab.

    strip_accents True/False forces BERT's all-or-nothing behaviour and nothing else.
    """
    lower = infer_lowercase(vocab) if lowercase is None else lowercase
    if strip_accents is not None:
        return Rule(lower, "strip" if strip_accents else "keep")
    tokens = _bodies(vocab)
    # The vocab's Unicode form: composed (NFC), as most text is, when more of its tokens hold
    # composed characters than compositions left undone; else decomposed, as in Google's
    # uncased vocabs (built on NFD text). The other form's tokens are never produced (FORM).
    other = [t for t in tokens if not t.isascii()]
    compose = sum(not unicodedata.is_normalized("NFD", t) for t in other) > sum(
        not unicodedata.is_normalized("NFC", t) for t in other
    )
    form: Literal["NFC", "NFD"] = "NFC" if compose else "NFD"
    held = [t for t in other if unicodedata.is_normalized(form, t)]
    chars = (
        set().union(*tokens)
        if len(held) == len(other)
        else set().union(*(t for t in tokens if t.isascii()), *held)
    )
    # An accented letter is a base and nonspacing marks that compose into one character
    # (å, é); marks that compose with nothing (Thai, Devanagari) are kept wherever they are.
    if compose:  # the letters are single characters; marks left in NFC text compose with none
        letters = {c for c in chars if not _is_mn(c) and any(map(_is_mn, _nfd(c)))}
        marks = {c for c in chars if _is_mn(c)}
    else:
        letters, marks = set(), set()
        with_marks = {c for c in chars if _is_mn(c)}
        for token in (t for t in held if not with_marks.isdisjoint(t)):
            for cluster in _clusters(token):
                if len(cluster) > 1 and len(c := unicodedata.normalize("NFC", cluster)) == 1:
                    letters.add(c)
                else:
                    marks.update(filter(_is_mn, cluster))
    kept = "".join(sorted(c for c in letters if not (lower and c != c.lower())))
    words = set(vocab)
    translit = tuple(
        (group, ascii)
        for group, ascii in TRANSLITERATION
        if chars.isdisjoint(group) and all((a.lower() if lower else a) in words for a in ascii)
    )
    return Rule(lower, "vocab", kept, "".join(sorted(marks)), compose, translit)


def _clusters(text: str) -> list[str]:
    """Each character with the nonspacing marks after it (a mark at the start stands alone)."""
    out: list[str] = []
    for c in text:
        if out and _is_mn(c):
            out[-1] += c
        else:
            out.append(c)
    return out


@dataclass(frozen=True)
class VocabReport:
    """What a vocab holds and what the tokenizer makes of it."""

    tokens: int
    vocab_size: int | None
    special: int  # [PAD] [UNK] [CLS] [SEP] [MASK]
    markers: int  # other [..] tokens, [unused0] and the like
    whole_words: int
    pieces: int  # ##-pieces
    letters: str  # letters beyond ASCII, sorted
    lowercase_inferred: bool
    rule: Rule
    never_produced: dict[str, list[str]] = field(default_factory=dict)  # reason -> tokens

    @property
    def rows_without_token(self) -> int:
        """Embedding rows no line of vocab.txt names (the Danish release: 32000 - 31748)."""
        return max(0, self.vocab_size - self.tokens) if self.vocab_size else 0

    @property
    def casing(self) -> str:
        return "uncased" if self.lowercase_inferred else "cased"

    def to_json(self, examples: int = 5) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "vocab_size": self.vocab_size,
            "rows_without_token": self.rows_without_token,
            "special": self.special,
            "markers": self.markers,
            "whole_words": self.whole_words,
            "pieces": self.pieces,
            "letters_beyond_ascii": self.letters,
            "casing": self.casing,
            "rule": self.rule.to_json(),
            "never_produced": {
                r: {"count": len(t), "examples": t[:examples]}
                for r, t in self.never_produced.items()
            },
        }

    def lines(self) -> list[str]:
        """The report as text lines (for `danbert inspect`)."""
        rows = (
            f"; {self.rows_without_token} embedding rows with no token"
            if self.rows_without_token else ""
        )  # fmt: skip
        size = f" for vocab_size {self.vocab_size}" if self.vocab_size else ""
        letters = " ".join(self.letters[:40]) + (
            f" (+{len(self.letters) - 40})" if len(self.letters) > 40 else ""
        )
        never = [
            f"{len(t)} {reason} (e.g. {', '.join(map(repr, t[:3]))})"
            for reason, t in self.never_produced.items()
            if t
        ]
        return [
            f"{self.tokens} tokens{size}{rows}",
            f"  {self.whole_words} whole words, {self.pieces} ##-pieces, {self.special} special, "
            f"{self.markers} other [..] markers",
            f"  letters beyond ASCII: {letters or 'none'}",
            f"  casing: {self.casing} (inferred)",
            f"  normalisation: {self.rule.describe()}",
            f"  never produced: {'; '.join(never) if never else 'none'}",
        ]


def never_produced(vocab: list[str], rule: Rule) -> dict[str, list[str]]:
    """The tokens no text can make the tokenizer produce under `rule`, by reason (REASONS)."""
    pairs = [
        (t, t[2:] if t[:2] == "##" else t) for t in vocab if not (t[:1] == "[" and t[-1:] == "]")
    ]
    chars = set().union(*(body for _, body in pairs))
    splitting = {c for c in chars if _splits(c)}
    # A token of characters the rule leaves alone, each a starter (combining class 0), is
    # left alone too: nothing reorders or joins across them, but NFC may (Hangul jamo).
    stable = {
        c for c in chars if unicodedata.combining(c) == 0 and not _is_mn(c)
        and rule.normalize(c) == c
    }  # fmt: skip
    suspect = splitting | (chars - stable) | {"▁"}
    out: dict[str, list[str]] = {r: [] for r in REASONS}
    for token, body in pairs:
        if (  # the fast path, for most tokens: a set operation
            suspect.isdisjoint(body)
            and 0 < len(body) <= MAX_WORD_CHARS
            and (not rule.compose or body.isascii() or unicodedata.is_normalized("NFC", body))
        ):
            continue
        if "▁" in body or (body[:1] == "_" and body[1:2].isalnum()):
            reason = SENTENCEPIECE
        elif _split(token, body, splitting):
            reason = SPLIT
        elif (n := rule.normalize(body)) != body:
            if rule.lowercase and body.lower() != body:
                reason = UPPERCASE
            else:  # accents stripped, or the same text in another Unicode form
                reason = FORM if _nfd(n) == _nfd(body) else ACCENTS
        else:
            continue
        out[reason].append(token)
    return out


def _split(token: str, body: str, splitting: set[str]) -> bool:
    """BERT's fixed steps never leave `token` whole: it holds a character they split at or
    drop, or it is longer than WordPiece takes. Punctuation and CJK stand alone as words."""
    if not body or len(body) > MAX_WORD_CHARS:
        return True
    if splitting.isdisjoint(body):
        return False
    if len(body) > 1 or token != body:  # inside a word, or continuing one
        return True
    return _is_whitespace(body) or _is_dropped(body)


def vocab_report(
    vocab: list[str],
    vocab_size: int | None = None,
    lowercase: bool | None = None,
    strip_accents: bool | None = None,
) -> VocabReport:
    """Counts, letters, casing, the rule (as asked or inferred) and the tokens it never makes."""
    inferred = infer_lowercase(vocab)
    rule = rule_for(vocab, inferred if lowercase is None else lowercase, strip_accents)
    special = len(set(SPECIAL_TOKENS).intersection(vocab))
    markers = len(vocab) - len(bodies := _bodies(vocab)) - special
    pieces = sum(t[:2] == "##" for t in vocab)
    # As letters, composed: a decomposed vocab's "a" and ring are its å.
    composed = set().union(*(unicodedata.normalize("NFC", t) for t in bodies if not t.isascii()))
    letters = "".join(sorted(c for c in composed if not c.isascii() and c.isalpha()))
    return VocabReport(
        tokens=len(vocab), vocab_size=vocab_size, special=special, markers=markers,
        whole_words=len(vocab) - special - markers - pieces, pieces=pieces, letters=letters,
        lowercase_inferred=inferred, rule=rule, never_produced=never_produced(vocab, rule),
    )  # fmt: skip


# What each reason means for a conversion; SPLIT is BERT's own (Google's vocabs have such tokens).
_WARNINGS = {
    SENTENCEPIECE: "hold a SentencePiece word marker (▁, or _ after ##): the vocab was not fully "
    "converted to WordPiece",
    UPPERCASE: "have capitals but the tokenizer lowercases (--no-lowercase keeps case)",
    ACCENTS: "have accents the tokenizer strips (--strip-accents strips them all)",
    FORM: "are not in the Unicode form the tokenizer produces (NFC)",
}


def unproducible_warnings(report: VocabReport, vocab_path: Path) -> list[str]:
    """One warning per reason (but SPLIT) that makes some tokens impossible to produce."""
    return [
        f"{vocab_path}: {len(tokens)} tokens can never be produced: they {_WARNINGS[reason]}; "
        f"e.g. {', '.join(map(repr, tokens[:3]))}"
        for reason, tokens in report.never_produced.items()
        if tokens and reason in _WARNINGS
    ]


@dataclass(frozen=True)
class TokenizerSettings:
    rule: Rule
    model_max_length: int

    @property
    def lowercase(self) -> bool:
        return self.rule.lowercase


def write_tokenizer(
    out: Path, vocab_path: Path, vocab: list[str], s: TokenizerSettings
) -> dict[str, str]:
    """Write vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json.

    Returns each file's SHA-256, computed on the bytes as they were written.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    hashes = {"vocab.txt": write_bytes(out / "vocab.txt", vocab_path.read_bytes())}
    ids = {token: i for i, token in enumerate(vocab)}
    tok = Tokenizer(
        models.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=MAX_WORD_CHARS)
    )
    tok.normalizer = s.rule.normalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    # What Tokenizer.save writes, but through our writer, which hashes it.
    hashes["tokenizer.json"] = write_bytes(
        out / "tokenizer.json", tok.to_str(pretty=True).encode("utf-8")
    )

    specials = {
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
        "cls_token": "[CLS]", "mask_token": "[MASK]",
    }  # fmt: skip
    config: dict[str, Any] = {
        # transformers 5's BertTokenizer rebuilds BERT's normaliser from do_lower_case and
        # strip_accents and ignores tokenizer.json's; the generic class keeps it as written.
        "tokenizer_class": "BertTokenizer" if s.rule.is_bert else "PreTrainedTokenizerFast",
        # Read by BertTokenizer (the slow one, vocab.txt): the closest all-or-nothing setting.
        "do_lower_case": s.rule.lowercase,
        "strip_accents": s.rule.slow_strip_accents,
        "tokenize_chinese_chars": True,
        "model_max_length": s.model_max_length,
        "clean_up_tokenization_spaces": False,
        # The generic class returns token_type_ids only when told to.
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        **specials,
    }
    hashes["tokenizer_config.json"] = write_json(out / "tokenizer_config.json", config)
    hashes["special_tokens_map.json"] = write_json(out / "special_tokens_map.json", specials)
    return hashes

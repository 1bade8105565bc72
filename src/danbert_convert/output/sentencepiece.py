"""ALBERT's SentencePiece tokenizer as files transformers loads.

A release's `30k-clean.model` (a SentencePiece unigram model) is copied as `spiece.model` (the
slow AlbertTokenizer's file) and restated in `tokenizer.json` with the `tokenizers` library.
Both follow ALBERT's own tokenizer (google-research/albert tokenization.py): its
preprocess_text (spaces stripped and collapsed, NFKD and combining marks dropped, lowercased),
then SentencePiece (the model's own normaliser, Viterbi over the pieces), then encode_pieces'
rule that a piece ending in a digit and a comma ("▁1,") is split into the digits and ",".

tokenizer_config.json names PreTrainedTokenizerFast, so that transformers 4 and 5 use
tokenizer.json as written: transformers 5's AlbertTokenizer rebuilds its normaliser from
do_lower_case/keep_accents and replaces "``" and "''" with '"', which ALBERT's own
preprocessing never did (XLNet's did).
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from danbert_convert._fs import write_bytes, write_json
from danbert_convert.errors import InputError
from danbert_convert.spm_model import (
    BYTE,
    CONTROL,
    UNKNOWN,
    UNUSED,
    SpmModel,
    read_spm_model,
)

SPM_FILE = "spiece.model"
SPECIALS = {
    "unk_token": "<unk>", "sep_token": "[SEP]", "pad_token": "<pad>", "cls_token": "[CLS]",
    "mask_token": "[MASK]", "bos_token": "[CLS]", "eos_token": "[SEP]",
}  # fmt: skip
# ALBERT's encode_pieces never emits a piece ending in a digit and a comma; this score keeps
# tokenizers' Viterbi from choosing one (transformers' AlbertConverter does the same).
DIGIT_COMMA_PENALTY = 100.0


def _is_digit_comma(piece: str) -> bool:
    return len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit()


@functools.cache
def _char_class(predicate: Any) -> str:
    """A regex class (Oniguruma syntax) of the code points for which `predicate` holds."""
    ranges: list[list[int]] = []
    for cp in range(sys.maxunicode + 1):
        if predicate(chr(cp)):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    body = "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
    return f"[{body}]"


# Final_Sigma's "cased letter": CPython skips a character that is also case-ignorable (U+0345).
_CASED = "[\\p{Cased}&&\\P{Case_Ignorable}]"


def _normalizer(model: SpmModel, lowercase: bool, keep_accents: bool) -> Any:
    """ALBERT's preprocess_text, then SentencePiece's own normaliser, as `tokenizers` steps."""
    from tokenizers import Regex, normalizers

    # Python's str.split() and unicodedata.combining, as ALBERT's preprocessing uses them
    # (the `tokenizers` Strip/StripAccents steps count other characters).
    space = _char_class(str.isspace)
    steps: list[Any] = [
        normalizers.Replace(Regex(f"\\A{space}+|{space}+\\z"), ""),
        normalizers.Replace(Regex(f"{space}+"), " "),
    ]
    if not keep_accents:
        steps += [
            normalizers.NFKD(),
            normalizers.Replace(Regex(_char_class(unicodedata.combining)), ""),
        ]
    if lowercase:
        # str.lower() makes a word-final capital sigma "ς" (Unicode's Final_Sigma context);
        # tokenizers' Lowercase maps each character alone, to "σ".
        steps += [
            normalizers.Replace(Regex(f"(?<={_CASED}\\p{{Case_Ignorable}}*)\u03a3"
                                      f"(?!\\p{{Case_Ignorable}}*{_CASED})"), "\u03c2"),
            normalizers.Lowercase(),
        ]  # fmt: skip
    if model.precompiled_charsmap:
        steps.append(normalizers.Precompiled(model.precompiled_charsmap))
    steps += [
        # SentencePiece's remove_extra_whitespaces counts spaces only.
        normalizers.Replace(Regex(r"\A +| +\z"), ""),
        normalizers.Replace(Regex(" {2,}"), " "),
        # Metaspace adds no dummy prefix to text starting with "▁"; SentencePiece does.
        normalizers.Replace(Regex("\\A\u2581"), "\u2581\u2581"),
    ]
    return normalizers.Sequence(steps)


def build_tokenizer(model: SpmModel, *, lowercase: bool, keep_accents: bool) -> Any:
    """The `tokenizers.Tokenizer` that tokenizer.json holds."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = []
    for piece, score, kind in model.pieces:
        if kind in (UNUSED, BYTE) or _is_digit_comma(piece):
            score -= DIGIT_COMMA_PENALTY  # never emitted by ALBERT's tokenizer
        vocab.append((piece, score))
    tok = Tokenizer(models.Unigram(vocab, unk_id=model.unk_id, byte_fallback=False))
    tok.normalizer = _normalizer(model, lowercase, keep_accents)
    # One Viterbi over the whole text, as SentencePiece does (split=False).
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="always", split=False
    )
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    ids = {piece: i for i, (piece, _, _) in enumerate(model.pieces)}
    missing = [t for t in dict.fromkeys(SPECIALS.values()) if t not in ids]
    if missing:
        raise InputError(f"{model.path}: no piece {', '.join(missing)} (ALBERT's special tokens)")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    specials = [t for i, (t, _, kind) in enumerate(model.pieces) if kind in (CONTROL, UNKNOWN)]
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    return tok


def write_spm_tokenizer(
    out: Path,
    spm_model: Path,
    *,
    lowercase: bool = True,
    keep_accents: bool = False,
    model_max_length: int = 512,
) -> dict[str, str]:
    """Write spiece.model (the file as it is), tokenizer.json, tokenizer_config.json and
    special_tokens_map.json into the folder `out`.

    `lowercase`/`keep_accents`: ALBERT's do_lower_case and (transformers') keep_accents; the
    released ALBERT v1/v2 models are uncased (lowercased, accents stripped), the defaults.
    Returns each file's SHA-256, computed on the bytes as they were written.
    """
    model = read_spm_model(spm_model)
    tok = build_tokenizer(model, lowercase=lowercase, keep_accents=keep_accents)
    out = Path(out)
    hashes = {SPM_FILE: write_bytes(out / SPM_FILE, model.data)}
    hashes["tokenizer.json"] = write_bytes(
        out / "tokenizer.json", tok.to_str(pretty=True).encode("utf-8")
    )
    specials = dict(SPECIALS)
    config: dict[str, Any] = {
        # Not AlbertTokenizer: transformers 5's rebuilds the normaliser (see the module's doc).
        "tokenizer_class": "PreTrainedTokenizerFast",
        # Read by AlbertTokenizer.from_pretrained (the slow one reads spiece.model).
        "do_lower_case": lowercase,
        "keep_accents": keep_accents,
        "remove_space": True,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        # The generic class returns token_type_ids only when told to.
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        **specials,
    }
    hashes["tokenizer_config.json"] = write_json(out / "tokenizer_config.json", config)
    hashes["special_tokens_map.json"] = write_json(out / "special_tokens_map.json", specials)
    return hashes


# --- the check: ALBERT's own tokenizer, restated, against what transformers loads --------------


def albert_preprocess(text: str, *, lowercase: bool, keep_accents: bool) -> str:
    """ALBERT's preprocess_text (google-research/albert tokenization.py), with transformers'
    keep_accents option (ALBERT always strips accents)."""
    out = " ".join(text.strip().split())
    if not keep_accents:
        out = unicodedata.normalize("NFKD", out)
        out = "".join(c for c in out if not unicodedata.combining(c))
    return out.lower() if lowercase else out


def albert_ids(sp: Any, text: str, *, lowercase: bool, keep_accents: bool) -> list[int]:
    """The ids ALBERT's FullTokenizer gives (without [CLS]/[SEP]): SentencePiece's pieces, a
    piece ending in a digit and a comma re-encoded as the digits then ","."""
    pieces = sp.encode_as_pieces(
        albert_preprocess(text, lowercase=lowercase, keep_accents=keep_accents)
    )
    out: list[str] = []
    for piece in pieces:
        if not _is_digit_comma(piece):
            out.append(piece)
            continue
        cur = sp.encode_as_pieces(piece[:-1].replace("\u2581", ""))
        if piece[0] != "\u2581" and cur and cur[0][0] == "\u2581":
            cur = cur[1:] if len(cur[0]) == 1 else [cur[0][1:], *cur[1:]]
        out += [*cur, piece[-1]]
    return [sp.piece_to_id(p) for p in out]


def spm_mismatches(
    out: Path,
    spm_model: Path,
    texts: Iterable[str],
    *,
    lowercase: bool = True,
    keep_accents: bool = False,
) -> list[str]:
    """Where AutoTokenizer.from_pretrained(out) (fast, and slow where transformers has one)
    gives other ids than ALBERT's own tokenizer on `texts`: one line per text and loader."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(read_spm_model(spm_model).data)
    cls, sep = sp.piece_to_id("[CLS]"), sp.piece_to_id("[SEP]")
    loaded = {"fast": AutoTokenizer.from_pretrained(out)}
    slow = AutoTokenizer.from_pretrained(out, use_fast=False)
    if type(slow) is not type(loaded["fast"]):
        loaded["slow"] = slow
    problems = []
    for text in texts:
        want = [cls, *albert_ids(sp, text, lowercase=lowercase, keep_accents=keep_accents), sep]
        for kind, tok in loaded.items():
            got = tok(text)["input_ids"]
            if got != want:
                problems.append(
                    f"{kind} tokenizer: {text[:40]!r}: {tok.convert_ids_to_tokens(got)} "
                    f"!= ALBERT's {[sp.id_to_piece(i) for i in want]}"
                )
    return problems

"""Tokenizer files for the output folder, serialised by the `tokenizers` library.

Only `tokenizers` is imported here (no transformers, hence no torch): tokenizer.json is what
`Tokenizer.save` writes (its `to_str`), the two small JSON files json.dump of plain dicts.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

from danbert_convert._fs import write_bytes, write_json
from danbert_convert.source import SPECIAL_TOKENS


@dataclass(frozen=True)
class TokenizerSettings:
    lowercase: bool
    strip_accents: bool
    model_max_length: int


def _is_marker(token: str) -> bool:
    # [PAD], [unused12] and the like say nothing about casing.
    return token.startswith("[") and token.endswith("]")


def infer_lowercase(vocab: list[str]) -> bool:
    """An uncased vocab: lowercasing changes none of its tokens outside the [..] markers.

    Not "has no upper-case letter": Google's English uncased vocab holds ℝ, upper case
    with no lower case.
    """
    return all(t == t.lower() for t in vocab if not _is_marker(t))


def has_decomposable(vocab: list[str]) -> bool:
    """True when some token holds a character NFD splits (å, é, ü...)."""
    return any(unicodedata.normalize("NFD", t) != t for t in vocab if not t.isascii())


def settings_for(
    vocab: list[str],
    max_positions: int,
    lowercase: bool | None = None,
    strip_accents: bool | None = None,
) -> TokenizerSettings:
    """Casing as asked or inferred; accents kept whenever the vocab itself has accented letters.

    BERT's uncased tokenizer strips accents by default, which would turn Danish å into a
    (and "sål" into "sal") although the vocab has tokens with å.
    """
    lower = infer_lowercase(vocab) if lowercase is None else lowercase
    if strip_accents is None:
        strip_accents = lower and not has_decomposable(vocab)
    return TokenizerSettings(lower, strip_accents, max_positions)


def write_tokenizer(
    out: Path, vocab_path: Path, vocab: list[str], s: TokenizerSettings
) -> dict[str, str]:
    """Write vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json.

    Returns each file's SHA-256, computed on the bytes as they were written.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    hashes = {"vocab.txt": write_bytes(out / "vocab.txt", vocab_path.read_bytes())}
    ids = {token: i for i, token in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=s.strip_accents,
        lowercase=s.lowercase,
    )  # fmt: skip
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
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": s.lowercase,
        "strip_accents": s.strip_accents,
        "tokenize_chinese_chars": True,
        "model_max_length": s.model_max_length,
        "clean_up_tokenization_spaces": False,
        **specials,
    }
    hashes["tokenizer_config.json"] = write_json(out / "tokenizer_config.json", config)
    hashes["special_tokens_map.json"] = write_json(out / "special_tokens_map.json", specials)
    return hashes

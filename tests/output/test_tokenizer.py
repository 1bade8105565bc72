"""Issue 12: the tokenizer normalises text as the model's training text was normalised.

Vocabs of real words (wordfreq) as each kind of model saw them: Danish (lowercased, ASCII or
æ ø å), Swedish (å ä ö), English uncased (every accent stripped, as BERT does) and a cased
Danish one. Ids from tokenizer.json, loaded by transformers, are checked against bertref.py,
an independent BERT tokenizer stating the rule character by character.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from bertref import (
    SPECIALS,
    bert_setting,
    encode,
    keep_vocab_letters,
    learn_vocab,
    real_words,
    training_text,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from tfckpt import TINY_CONFIG

from danbert_convert.output.tokenizer import (
    TokenizerSettings,
    rule_for,
    vocab_report,
    write_tokenizer,
)
from danbert_convert.stages.convert import convert
from danbert_convert.stages.verify import verify

# Typographic characters Google's vocabs hold: a vocab with them shows they were not converted.
TYPOGRAPHIC = list("“”‘’–—…€")


@pytest.fixture(scope="module")
def vocabs() -> dict[str, list[str]]:
    danish = training_text("da", 20000, "æøå")
    capitals = [w.capitalize() for w in danish[:400]] + ["Århus", "Ærø", "Øresund", "Åen"]
    return {
        "danish": learn_vocab(danish),
        "swedish": learn_vocab(training_text("sv", 20000, "åäö")),
        "english": learn_vocab(training_text("en", 20000, "")) + TYPOGRAPHIC,
        "english-ascii": learn_vocab(training_text("en", 20000, "")),
        "danish-cased": learn_vocab([*capitals, *danish], n_words=1900),
    }


def _write(root: Path, vocab: list[str], **forced) -> Path:
    """The tokenizer files for `vocab` as convert writes them, in their own folder."""
    root.mkdir(parents=True)
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    rule = rule_for(vocab, **forced)
    write_tokenizer(root, root / "vocab.txt", vocab, TokenizerSettings(rule, 512))
    return root


@pytest.fixture(scope="module")
def folders(vocabs, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    return {name: _write(root / name, vocab) for name, vocab in vocabs.items()}


def _auto(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _slow(folder: Path):
    try:  # transformers 5 keeps the pure-Python tokenizer under this name
        from transformers.models.bert import BertTokenizerLegacy as Slow
    except ImportError:  # transformers 4
        from transformers import BertTokenizer as Slow
    return Slow.from_pretrained(folder)


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _words_as_written(lang: str, n: int = 6000) -> list[str]:
    """Real words with their accents, in lower case, capitalised and in capitals."""
    words = real_words(lang, n)
    return [*words, *(w.capitalize() for w in words[:1500]), *(w.upper() for w in words[:500])]


def _assert_as_reference(tok, vocab: list[str], normalise, texts: list[str]) -> None:
    encodings = tok(texts, add_special_tokens=False)["input_ids"]
    wrong = [
        (t, got, want)
        for t, got in zip(texts, encodings, strict=True)
        if got != (want := encode(t, vocab, normalise))
    ]
    assert not wrong, f"{len(wrong)} of {len(texts)} differ, e.g. {wrong[:3]}"


# --- the rule, per language ----------------------------------------------------------------


def test_danish_keeps_å_and_strips_loanword_accents(vocabs, folders):
    vocab = vocabs["danish"]
    rule = rule_for(vocab)
    # æ and ø have no decomposition: å is the only letter the rule must spare.
    assert (rule.lowercase, rule.keep_letters, rule.compose) == (True, "å", True)
    tok = _auto(folders["danish"])
    assert type(tok).__name__ in ("TokenizersBackend", "PreTrainedTokenizerFast")
    assert _ids(tok, "idé") == _ids(tok, "ide") == [vocab.index("ide")]
    assert _ids(tok, "på") == [vocab.index("på")] != _ids(tok, "pa")
    assert _ids(tok, "Århus") == _ids(tok, "århus") == [vocab.index("århus")]
    assert _ids(tok, "Müller café ALLÉ") == _ids(tok, "muller cafe alle")
    assert _ids(tok, "sål") != _ids(tok, "sal")
    _assert_as_reference(tok, vocab, keep_vocab_letters(True, vocab), _words_as_written("da"))
    text = "Vi drak en kop café au lait på Århus Å, før idéen kom."
    _assert_as_reference(tok, vocab, keep_vocab_letters(True, vocab), [text])


def test_swedish_keeps_å_ä_ö(vocabs, folders):
    vocab = vocabs["swedish"]
    rule = rule_for(vocab)
    assert (rule.lowercase, rule.keep_letters) == (True, "äåö")
    tok = _auto(folders["swedish"])
    assert _ids(tok, "Öl") == [vocab.index("öl")] != _ids(tok, "ol")
    assert _ids(tok, "är") != _ids(tok, "ar") and _ids(tok, "år") != _ids(tok, "ar")
    assert _ids(tok, "idé armé") == _ids(tok, "ide arme")
    _assert_as_reference(tok, vocab, keep_vocab_letters(True, vocab), _words_as_written("sv"))


def test_english_uncased_is_exactly_berts(vocabs, folders):
    """No accented letter in the vocab: every accent goes, by BERT's own normaliser."""
    vocab = vocabs["english"]
    rule = rule_for(vocab)
    assert rule.is_bert and rule.strips_all and not rule.transliterate
    folder = folders["english"]
    written = json.loads((folder / "tokenizer.json").read_text("utf-8"))["normalizer"]
    assert written == {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": True, "lowercase": True}  # fmt: skip
    config = json.loads((folder / "tokenizer_config.json").read_text("utf-8"))
    assert config["tokenizer_class"] == "BertTokenizer" and config["strip_accents"] is True
    tok = _auto(folder)
    assert _ids(tok, "Café naïve über") == _ids(tok, "cafe naive uber")
    _assert_as_reference(tok, vocab, bert_setting(True, True), _words_as_written("en"))
    # The slow tokenizer is BERT's too: nothing differs.
    _assert_as_reference(_slow(folder), vocab, bert_setting(True, True), _words_as_written("en"))


def test_cased_vocab_keeps_case_and_its_own_letters(vocabs, folders):
    vocab = vocabs["danish-cased"]
    rule = rule_for(vocab)
    assert (rule.lowercase, rule.keep_letters) == (False, "Åå")
    tok = _auto(folders["danish-cased"])
    assert _ids(tok, "Århus") == [vocab.index("Århus")] != _ids(tok, "århus")
    assert _ids(tok, "Müller Idé") == _ids(tok, "Muller Ide")
    words = _words_as_written("da", 3000)
    _assert_as_reference(tok, vocab, keep_vocab_letters(False, vocab), words)


def test_pairs_get_segment_ids(folders):
    tok = _auto(folders["danish"])
    enc = tok("jeg bor", "på østerbro")
    assert enc["input_ids"][0] == 2 and enc["input_ids"][-1] == 3
    assert enc["token_type_ids"] == [0] * 4 + [1] * (len(enc["input_ids"]) - 4)
    batch = tok(["idé", "jeg bor på østerbro"], padding=True)
    assert batch["input_ids"][0][-1] == SPECIALS.index("[PAD]")


# --- the slow tokenizer, and the forced all-or-nothing settings ----------------------------


def test_slow_tokenizer_is_the_closest_bert_setting(vocabs, folders):
    """vocab.txt + tokenizer_config.json cannot strip é but keep å: the slow tokenizer keeps
    every accent (stripping would turn å into a), so only loanwords differ."""
    vocab, folder = vocabs["danish"], folders["danish"]
    config = json.loads((folder / "tokenizer_config.json").read_text("utf-8"))
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["do_lower_case"], config["strip_accents"]) == (True, False)
    slow, fast = _slow(folder), _auto(folder)
    _assert_as_reference(slow, vocab, bert_setting(True, False), _words_as_written("da"))
    assert _ids(slow, "Århus på") == _ids(fast, "Århus på")
    assert _ids(slow, "idé") == [SPECIALS.index("[UNK]")] != _ids(fast, "idé")


@pytest.mark.parametrize("strip", [True, False])
def test_forced_accents_are_all_or_nothing(vocabs, tmp_path, strip):
    vocab = vocabs["danish"]
    folder = _write(tmp_path / "t", vocab, strip_accents=strip)
    written = json.loads((folder / "tokenizer.json").read_text("utf-8"))["normalizer"]
    assert written["type"] == "BertNormalizer" and written["strip_accents"] is strip
    tok = _auto(folder)
    assert (_ids(tok, "på") == _ids(tok, "pa")) is strip  # "på" becomes another word
    assert (_ids(tok, "idé") == _ids(tok, "ide")) is strip
    _assert_as_reference(tok, vocab, bert_setting(True, strip), _words_as_written("da", 2000))


# --- characters the vocab never holds ------------------------------------------------------


def test_typographic_characters_transliterated_only_where_the_vocab_shows_it(vocabs, folders):
    text = "“Hej” – sagde hun … og ‘nej’ for 5 €"
    ascii_text = "\"Hej\" - sagde hun ... og 'nej' for 5 EUR"
    # The Danish vocab has ASCII quotes, dashes and full stops, and none of these.
    tok = _auto(folders["danish"])
    assert _ids(tok, text) == _ids(tok, ascii_text)
    assert rule_for(vocabs["danish"]).describe().endswith("€ -> eur")
    # Google-like English holds them: they stay what they are.
    vocab = vocabs["english"]
    tok = _auto(folders["english"])
    assert _ids(tok, text) == encode(text, vocab, bert_setting(True, True))
    assert vocab.index("“") in _ids(tok, text)
    # English from ASCII text: converted as in the Danish vocab.
    tok = _auto(folders["english-ascii"])
    assert _ids(tok, "“Don’t” — …") == _ids(tok, '"Don\'t" - ...')


# --- tokenizer.json's normaliser is the rule, character for character -----------------------

_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,'\"-"
    + "".join(c for c in map(chr, range(0xC0, 0x250)) if c.isalpha())
    + "ΆάέήίόύώΐΰйЙёЁẹêệẸÊỆǻǺ"
)


@pytest.mark.parametrize("name", ["danish", "swedish", "danish-cased"])
@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=_ALPHABET, max_size=30))
def test_normaliser_is_the_rule(vocabs, folders, name, text):
    from tokenizers import Tokenizer

    norm = Tokenizer.from_file(str(folders[name] / "tokenizer.json")).normalizer
    vocab = vocabs[name]
    expected = keep_vocab_letters(name != "danish-cased", vocab)(text)
    assert norm.normalize_str(text) == unicodedata.normalize("NFC", expected)


def test_stacked_marks_keep_only_the_vocabs_letters():
    """A letter with two marks (Vietnamese ệ) is kept whole, its one-mark siblings are not."""
    vocab = [*SPECIALS, "việt", "ê", "##ệ", "e", "nam"]
    rule = rule_for(vocab)
    assert rule.keep_letters == "êệ"
    norm = rule.normalizer()
    assert norm.normalize_str("Việt ẹ ê Ệ ǻ") == "việt e ê ệ a"
    assert rule.normalize("Việt ẹ ê Ệ ǻ") == "việt e ê ệ a"


def test_decomposed_vocab_is_met_in_its_own_form(vocabs, tmp_path):
    """A vocab written in NFD (å as a and a ring): å is still its letter, and text comes out
    decomposed to match it."""
    vocab = [unicodedata.normalize("NFD", t) for t in vocabs["danish"]]
    rule = rule_for(vocab)
    assert (rule.keep_letters, rule.keep_marks, rule.compose) == ("å", "", False)
    tok = _auto(_write(tmp_path / "t", vocab))
    assert _ids(tok, "På") == [vocab.index("pa\u030a")] != _ids(tok, "pa")
    assert _ids(tok, "idé") == _ids(tok, "ide")
    assert vocab_report(vocab).letters == "åæø"


def test_a_stray_decomposed_token_changes_nothing(vocabs):
    """One token spelt in NFD in a composed vocab is reported, and its mark not kept."""
    vocab = [*vocabs["danish"], "e\u0301"]
    rule = rule_for(vocab)
    assert (rule.keep_letters, rule.keep_marks, rule.compose) == ("å", "", True)
    assert vocab_report(vocab).never_produced["accents"] == ["e\u0301"]  # é is not kept


@pytest.mark.parametrize("forced", [{}, {"strip_accents": True}, {"strip_accents": False}])
def test_rule_in_python_is_the_written_normaliser(vocabs, forced):
    """Rule.normalize, which verify checks tokenizers against, includes BERT's clean-up:
    control characters dropped, whitespace made spaces, CJK ideographs set apart."""
    rule = rule_for([*vocabs["danish"], "一"], **forced)
    text = "Idé\x07 på\t一二 Århus\u2028“x” ǻ\u200b"
    assert rule.normalizer().normalize_str(text) == rule.normalize(text)


# --- the vocab report (item 2) -------------------------------------------------------------


def test_report_counts_and_rule(vocabs):
    vocab = vocabs["danish"]
    r = vocab_report(vocab, vocab_size=len(vocab) + 252)
    pieces = sum(t.startswith("##") for t in vocab)
    assert (r.tokens, r.rows_without_token, r.special, r.markers) == (len(vocab), 252, 5, 0)
    assert (r.pieces, r.whole_words) == (pieces, len(vocab) - 5 - pieces)
    assert r.letters == "åæø" and r.casing == "uncased"
    assert r.rule.describe().startswith(
        "lowercase; strip accents except å; compose (NFC); ‘’‚‛‹› -> '"
    )
    assert not any(r.never_produced.values())
    lines = r.lines()
    assert lines[0] == f"{len(vocab)} tokens for vocab_size {len(vocab) + 252}; 252 embedding " \
                       "rows with no token"  # fmt: skip
    assert "  letters beyond ASCII: å æ ø" in lines and "  never produced: none" in lines


def test_report_tokens_never_produced(vocabs):
    danish = vocabs["danish"]
    # Forced stripping: every token with å is out of reach (æ and ø survive stripping).
    stripped = vocab_report(danish, strip_accents=True).never_produced["accents"]
    assert "på" in stripped and all("å" in t for t in stripped)
    assert not any("å" not in t and ("æ" in t or "ø" in t) for t in stripped)
    # Forced lowercasing of a cased vocab: its capitals.
    cased = vocabs["danish-cased"]
    upper = vocab_report(cased, lowercase=True).never_produced["uppercase"]
    assert set(upper) == {t for t in cased if t != t.lower() and not t.startswith("[")}
    # A SentencePiece marker leaked into a WordPiece vocab (the Norwegian release), tokens
    # BERT's steps split, and a decomposed token where the rule composes.
    odd = ["▁og", "##_en", "_ikke", "...", "e.g.", "##.", "##", "\u200b", "a\u030a"]
    never = vocab_report([*danish, *odd]).never_produced
    assert never["sentencepiece"] == ["▁og", "##_en", "_ikke"]
    assert never["split"] == ["...", "e.g.", "##.", "##", "\u200b"]
    assert never["form"] == ["a\u030a"]


def test_stray_capitals_leave_a_vocab_uncased(vocabs):
    """A few capitals in a lowercased vocab (at most 1% of its cased tokens) are reported, not
    taken as a cased vocab."""
    vocab = [*vocabs["danish"], "Foo", "BAR"]
    r = vocab_report(vocab)
    assert r.casing == "uncased" and r.never_produced["uppercase"] == ["Foo", "BAR"]
    assert vocab_report(vocabs["danish-cased"]).casing == "cased"


# --- end to end: convert, the manifest, verify ---------------------------------------------


def test_convert_and_verify_a_danish_vocab(vocabs, release, tmp_path):
    vocab = vocabs["danish"]
    src = release("wordfreq-danish", vocab=vocab, cfg={**TINY_CONFIG, "vocab_size": len(vocab) + 8})
    out = tmp_path / "model"
    result = convert(src, out)
    assert not result.warnings[1:], result.warnings  # only the rows without a token
    m = json.loads((out / "danbert-manifest.json").read_text("utf-8"))
    assert m["settings"]["strip_accents"] == "vocab"
    v = m["settings"]["vocab"]
    assert v["rows_without_token"] == 8 and v["rule"]["keep_letters"] == "å"
    assert v["rule"]["transliterate"]["…"] == "..."
    report = verify(out)
    assert report.ok, report.table()
    check = next(c for c in report.checks if c.name == "tokenizer")
    assert check.data["failing"] == 0 and check.data["normalising_otherwise"] == 0
    assert "å æ ø kept; rule: lowercase; strip accents except å" in check.detail


@pytest.mark.parametrize("flag", ["--strip-accents", "--no-strip-accents"])
def test_cli_flags_force_all_or_nothing(full_release, tmp_path, flag):
    """Item 4: the flags still give BERT's own setting, recorded and warned about."""
    from click.testing import CliRunner

    from danbert_convert.cli import cli

    out = tmp_path / "m"
    r = CliRunner().invoke(cli, ["convert", str(full_release), str(out), flag])
    assert r.exit_code == 0, r.output
    strip = flag == "--strip-accents"
    m = json.loads((out / "danbert-manifest.json").read_text("utf-8"))
    assert m["settings"]["strip_accents"] is strip
    assert m["settings"]["vocab"]["rule"]["text"] == (
        "lowercase; strip all accents" if strip else "lowercase; keep all accents"
    )
    normalizer = json.loads((out / "tokenizer.json").read_text("utf-8"))["normalizer"]
    assert normalizer["type"] == "BertNormalizer" and normalizer["strip_accents"] is strip
    tok = _auto(out)
    assert (_ids(tok, "sål") == _ids(tok, "sal")) is strip
    assert (_ids(tok, "hús") == _ids(tok, "hus")) is strip
    never = m["settings"]["vocab"]["never_produced"]["accents"]
    if strip:  # the vocab's words with å are out of reach, and convert says so
        assert never == {"count": 3, "examples": ["på", "sål", "å"]}
        assert ("tokens can never be produced: they have accents the tokenizer strips "
                "(--strip-accents strips them all); e.g. 'på', 'sål', 'å'") in r.output  # fmt: skip
    else:
        assert never["count"] == 0 and "never be produced" not in r.output
    assert verify(out).ok  # verify follows the recorded setting

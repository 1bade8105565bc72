"""Benchmark: the vocab-relative tokenizer on a Danish-like vocab of 31748 lines.

    .venv/bin/python benchmarks/bench_tokenizer.py [--repeat N]

Builds the vocab from wordfreq's Danish words as the Nordic BERT's training text had them
(lowercase, ASCII or æ ø å), writes the tokenizer files as convert does, and prints (best
of N):
  - the vocab report (rule and tokens never produced), as convert and inspect compute it;
  - verify's tokenizer check alone (the tokenizers already loaded once, so imports are out);
  - encoding the built-in Danish sample 200 times with the rule's normaliser and with BERT's
    plain BertNormalizer (strip_accents off), to show what the rule costs per text.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from danbert_convert.output.tokenizer import (  # noqa: E402
    TokenizerSettings,
    rule_for,
    vocab_report,
    write_tokenizer,
)

LINES = 31748
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def danish_vocab() -> list[str]:
    from collections import Counter

    from wordfreq import top_n_list

    def ascii_or_danish(w: str) -> str:
        return "".join(
            c if c in "æøå" else "".join(x for x in unicodedata.normalize("NFD", c)
                                         if unicodedata.category(x) != "Mn")
            for c in w
        )  # fmt: skip

    words = [w for w in map(ascii_or_danish, top_n_list("da", LINES)) if w.isalpha()]
    chars = sorted({c for w in words for c in w}) + list(".,!?-'\"():;")
    vocab = [*SPECIALS, *chars, *(f"##{c}" for c in chars if c.isalpha())]
    vocab += [w for w in dict.fromkeys(words) if w not in vocab]
    endings = Counter(w[-k:] for w in words for k in (2, 3, 4, 5) if len(w) > k + 1)
    vocab += [f"##{e}" for e, _ in endings.most_common(LINES)]
    return list(dict.fromkeys(vocab))[:LINES]


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from tokenizers import Tokenizer, normalizers
    from transformers import AutoConfig

    from danbert_convert.stages import verify as v

    vocab = danish_vocab()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        rule = rule_for(vocab)
        write_tokenizer(out, out / "vocab.txt", vocab, TokenizerSettings(rule, 512))
        (out / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 32000}))
        print(f"vocab: {len(vocab)} lines; rule: {rule.describe()}")

        report = best(lambda: vocab_report(vocab, 32000), args.repeat)
        print(f"vocab report (rule, tokens never produced): {report * 1000:.0f} ms")

        st = v._State(out)
        st.config = AutoConfig.from_pretrained(out)
        v._check_tokenizer(st)  # imports and first loads
        check = v._check_tokenizer(st)
        assert check.status == "pass", check
        seconds = best(lambda: v._check_tokenizer(st), args.repeat)
        print(f"verify's tokenizer check: {seconds:.2f} s ({check.detail[:80]}...)")

        tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        text = v.danish_sample() * 200
        with_rule = best(lambda: tok.encode_batch(text), args.repeat)
        tok.normalizer = normalizers.BertNormalizer(strip_accents=False, lowercase=True)
        plain = best(lambda: tok.encode_batch(text), args.repeat)
        print(f"encode {len(text)} sentences: rule {with_rule * 1000:.0f} ms, "
              f"BertNormalizer {plain * 1000:.0f} ms ({with_rule / plain:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()

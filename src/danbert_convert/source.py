"""The source folder: where its checkpoint, bert_config.json and vocab.txt are, and reading them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from danbert_convert.checkpoint import data_files, find_checkpoint, normalize_prefix
from danbert_convert.errors import InputError

if TYPE_CHECKING:
    from danbert_convert._fs import StrPath

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
REQUIRED_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)


@dataclass(frozen=True)
class Source:
    checkpoint: Path  # prefix
    config_path: Path
    vocab_path: Path
    config: dict
    vocab: list[str]
    state_path: Path | None = None  # the `checkpoint` state file, when it was read

    def small_files(self) -> list[Path]:
        """The files read whole: the manifest hashes them in full."""
        index = Path(f"{self.checkpoint}.index")
        state = [self.state_path] if self.state_path else []
        return [self.config_path, self.vocab_path, index, *state]

    def files(self) -> list[Path]:
        """Every file the conversion reads."""
        return [*self.small_files(), *data_files(self.checkpoint)]


def _find_file(src: Path, name: str, override: StrPath | None, what: str) -> Path:
    path = Path(override) if override is not None else src / name
    if not path.is_file():
        raise InputError(f"{path}: {what} not found" + ("" if override else f" in {src}"))
    return path


def _read_text(path: Path, not_utf8: str) -> str:
    """A source text file as UTF-8; InputError naming the file otherwise."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: {not_utf8} ({e})") from None


def read_config(path: Path) -> dict:
    """bert_config.json as a dict, checked for the keys a BERT needs and for NaN/Infinity."""
    text = _read_text(path, "not valid JSON")
    try:
        config = json.loads(text)
    except RecursionError:
        raise InputError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as e:  # JSONDecodeError, and ints of more than 4300 digits
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a JSON object")
    bad = _nonfinite(config)
    if bad is not None:
        # json reads NaN, Infinity and numbers like 1e400 (as inf); config.json must not hold them.
        raise InputError(f"{path}: {bad[0]} is {bad[1]}; numbers must be finite")
    for key in REQUIRED_CONFIG_KEYS:
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InputError(f"{path}: key {key!r} missing or not an integer")
        if value < 1:
            raise InputError(f"{path}: {key} is {value}; it must be a positive integer")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise InputError(
            f"{path}: hidden_size {config['hidden_size']} is not a multiple of "
            f"num_attention_heads {config['num_attention_heads']}"
        )
    return config


def _nonfinite(obj: object) -> tuple[str, float] | None:
    """The key path and value of the first NaN/Infinity in a parsed JSON value, if any."""
    stack: list[tuple[str, object]] = [("", obj)]
    while stack:  # a loop, not recursion: no depth limit of its own
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where, value
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else k, v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(value))))
    return None


def read_vocab(path: Path, vocab_size: int) -> list[str]:
    """vocab.txt as a list of tokens; longer than vocab_size, with a token twice or lacking
    BERT's specials: error."""
    text = _read_text(path, "not UTF-8 text")
    if text.startswith("\ufeff"):
        # Line N is id N: BERT's loaders would read the mark as part of the first token.
        raise InputError(f"{path}: starts with a byte-order mark (U+FEFF); save it as UTF-8 "
                         "without one")  # fmt: skip
    vocab = text.split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    vocab = [t.rstrip("\r") for t in vocab]
    if len(vocab) > vocab_size:
        raise InputError(
            f"{path}: {len(vocab)} tokens, more than vocab_size {vocab_size} in the config"
        )
    # A repeated token has two ids: config.json, tokenizer.json and BERT's own load_vocab
    # would each pick a different one (pad_token_id 0 here, 5 there).
    first: dict[str, int] = {}
    for line, token in enumerate(vocab, 1):
        if token in first:
            raise InputError(
                f"{path}: token {token!r} appears twice, on lines {first[token]} and {line}"
            )
        first[token] = line
    missing = [t for t in SPECIAL_TOKENS if t not in first]
    if missing:
        raise InputError(f"{path}: special token {missing[0]} is missing")
    return vocab


def discover(
    src: StrPath,
    *,
    checkpoint: StrPath | None = None,
    config: StrPath | None = None,
    vocab: StrPath | None = None,
) -> Source:
    """Locate and read the parts of a Google-BERT release folder; overrides win."""
    src = Path(src)
    if not src.is_dir() and not (checkpoint and config and vocab):
        raise InputError(f"{src}: not a folder")
    prefix = normalize_prefix(Path(checkpoint)) if checkpoint else find_checkpoint(src)
    config_path = _find_file(src, "bert_config.json", config, "bert_config.json")
    vocab_path = _find_file(src, "vocab.txt", vocab, "vocab.txt")
    cfg = read_config(config_path)
    state = src / "checkpoint"
    return Source(
        prefix, config_path, vocab_path, cfg, read_vocab(vocab_path, cfg["vocab_size"]),
        state if checkpoint is None and state.is_file() else None,
    )  # fmt: skip

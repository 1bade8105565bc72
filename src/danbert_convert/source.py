"""The source folder: where its checkpoint, config and vocab.txt are, and reading the files.

Discovery lives here, in one place: the `checkpoint` state file, the checkpoint prefix and
its `.data-*` shards, the config (bert_config.json when the release has one) and the vocab.
What the config must say is the model family's business (families/): `families.load_source`
reads a `SourceFiles` into a `Source`.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from danbert_convert.errors import InputError

if TYPE_CHECKING:
    from danbert_convert._fs import StrPath

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONFIG_NAME = "bert_config.json"  # found beside the checkpoint without being named
SPM_SUFFIX = ".model"  # a SentencePiece model (ALBERT's 30k-clean.model), when no vocab.txt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceFiles:
    """Where a release's parts are; nothing read yet."""

    folder: Path  # where files are looked for (the prefix's folder when only overrides)
    checkpoint: Path  # prefix
    config_path: Path | None  # None: none given and no known config file beside it
    vocab_path: Path  # vocab.txt (WordPiece), or a SentencePiece model
    state_path: Path | None = None  # the `checkpoint` state file, when it was read
    # vocab.txt was not given and not beside the checkpoint but found above it: whether that
    # may be the model's is the family's to say (families.load_source).
    vocab_above: bool = False


@dataclass(frozen=True)
class Source:
    checkpoint: Path  # prefix
    config_path: Path | None
    vocab_path: Path
    config: dict  # the converted part's sizes, in transformers config keys
    vocab: list[str]
    state_path: Path | None = None  # the `checkpoint` state file, when it was read
    family: str = "bert"  # families.FAMILIES' name
    part: str = ""  # which network of the checkpoint ("" when it holds one)
    # Sizes that did not come from a config file: key -> where from ("shape of X", "rule").
    config_origin: dict[str, str] = field(default_factory=dict)

    @property
    def tokenizer(self) -> str:
        """ "wordpiece" (vocab.txt) or "sentencepiece" (a .model file)."""
        return tokenizer_kind(self.vocab_path)

    def small_files(self) -> list[Path]:
        """The files read whole: the manifest hashes them in full."""
        index = Path(f"{self.checkpoint}.index")
        state = [self.state_path] if self.state_path else []
        config = [self.config_path] if self.config_path else []
        return [*config, self.vocab_path, index, *state]

    def files(self) -> list[Path]:
        """Every file the conversion reads."""
        return [*self.small_files(), *data_files(self.checkpoint)]


def data_files(prefix: Path) -> list[Path]:
    """The `.data-*` shards that exist beside `prefix` (for hashing and size reports)."""
    return sorted(prefix.parent.glob(prefix.name + ".data-*-of-*"))


def find_checkpoint(src: Path) -> Path:
    """The checkpoint prefix inside folder `src`.

    Order: the `checkpoint` state file, then `bert_model.ckpt`, then a single `*.index`.
    """
    state = src / "checkpoint"
    stale = ""
    if state.is_file():
        named = _state_file_prefix(src, state)
        if isinstance(named, Path):
            return named
        stale = f"; {state} names {named}, which is not here"
        log.warning("%s names %s, which is not here; looking for another checkpoint", state, named)
    if (src / "bert_model.ckpt.index").is_file():
        return src / "bert_model.ckpt"
    candidates = sorted(src.glob("*.index"))
    if len(candidates) == 1:
        return candidates[0].with_suffix("")
    if not candidates:
        raise InputError(f"{src}: no checkpoint (*.index) found{stale}")
    names = ", ".join(c.with_suffix("").name for c in candidates)
    raise InputError(f"{src}: several checkpoints ({names}){stale or ' and no `checkpoint` file'}; "
                     "choose with --checkpoint")  # fmt: skip


def _state_file_prefix(src: Path, state: Path) -> Path | str:
    """The prefix the state file names, if it is in `src`; else the name as written.

    A name outside `src` (absolute, or with `..`) is used only as its base name inside `src`
    (the training machine's path, copied here); a checkpoint that exists out there is refused,
    so that config and vocab from `src` are never paired with another folder's weights.
    """
    try:
        text = state.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise InputError(f"{state}: cannot read: {e.strerror or e}") from None
    m = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', text, re.M)
    if not m:
        raise InputError(f"{state}: no model_checkpoint_path line")
    # A text-format string: C escapes, as in a Windows path C:\\run\\model.ckpt or the
    # octal UTF-8 bytes older TF wrote for non-ASCII names.
    try:
        raw = codecs.escape_decode(m.group(1).encode("utf-8"))[0]
    except ValueError as e:
        raise InputError(f'{state}: model_checkpoint_path "{m.group(1)}": {e}') from None
    written = raw.decode("utf-8", errors="replace")
    named = Path(written) if Path(written).is_absolute() else src / written
    inside = _lexically_inside(Path(f"{named}.index"), src)
    if inside and _has_index(named):
        return named
    base = re.split(r"[\\/]", written)[-1]
    if base not in ("", ".", "..") and _has_index(src / base):
        return src / base
    if not inside and _has_index(named):
        raise InputError(
            f"{state} names the checkpoint {written}, outside {src}; to convert it with the "
            f"config and vocab of {src}, say so with --checkpoint"
        )
    return written


def _has_index(prefix: Path) -> bool:
    try:
        return Path(f"{prefix}.index").is_file()
    except (OSError, ValueError):  # a name too long, or with a NUL byte
        return False


def _lexically_inside(path: Path, folder: Path) -> bool:
    """Whether `path`, with `..` resolved on paper (links not followed), lies in `folder`."""
    p, f = os.path.abspath(path), os.path.abspath(folder)
    try:
        return os.path.commonpath([p, f]) == f
    except ValueError:  # Windows: another drive
        return False


def normalize_prefix(path: Path) -> Path:
    """Accept a prefix, or a path to its `.index` or one of its `.data-*` files."""
    s = str(path)
    s = re.sub(r"\.(index|meta|data-\d{5}-of-\d{5})$", "", s)
    prefix = Path(s)
    if not Path(f"{prefix}.index").is_file():
        raise InputError(f"{prefix}.index: checkpoint index not found")
    return prefix


# ELECTRA's run_pretraining.py keeps vocab.txt in its data folder and the checkpoints in
# data/models/NAME/: two levels up. (releases/archive.py finds it the same way in a zip.)
VOCAB_LEVELS_UP = 2


def _find_file(src: Path, name: str, override: StrPath | None, what: str, look_up: int = 0) -> Path:
    """`override`, else `name` in `src`, else in one of `look_up` folders above it."""
    path = Path(override) if override is not None else src / name
    if path.is_file():
        return path
    if override is None:
        for above in list(src.resolve().parents)[:look_up]:
            if (above / name).is_file():
                return above / name
    raise InputError(f"{path}: {what} not found" + ("" if override else f" in {src}"))


def _read_text(path: Path, not_utf8: str) -> str:
    """A source text file as UTF-8; InputError naming the file otherwise."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: {not_utf8} ({e})") from None


def read_json(path: Path) -> dict:
    """A config file as a dict: a JSON object without NaN/Infinity (what it must hold is the
    family's to say)."""
    text = _read_text(path, "not valid JSON")
    try:
        config = json.loads(text)
    except RecursionError:
        raise InputError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as e:  # JSONDecodeError, and ints of more than 4300 digits
        raise InputError(f"{path}: not valid JSON ({e})") from None
    # json reads NaN, Infinity and numbers like 1e400 (as inf); config.json must not hold them.
    return _finite_mapping(config, path, "a JSON object")


def _finite_mapping(config: object, path: Path, what: str) -> dict:
    """`config` if it is a mapping without NaN/Infinity; one line naming the file otherwise."""
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected {what}")
    bad = _nonfinite(config)
    if bad is not None:
        raise InputError(f"{path}: {bad[0]} is {bad[1]}; numbers must be finite")
    return config


def read_config_file(path: Path) -> dict:
    """`read_json`, or a YAML mapping for a .yaml/.yml file (Model Garden's params.yaml), with
    the same checks. YAML aliases are refused: a few lines of them expand to a huge tree."""
    if path.suffix.lower() not in (".yaml", ".yml"):
        return read_json(path)
    import yaml

    class _NoAliases(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.MarkedYAMLError(None, None, "aliases are not supported", mark)
            return super().compose_node(parent, index)

    text = _read_text(path, "not valid YAML")
    try:
        config = yaml.load(text, Loader=_NoAliases)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, RecursionError) as e:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    return _finite_mapping(config, path, "a YAML mapping")


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


def tokenizer_kind(vocab: Path) -> str:
    return "sentencepiece" if vocab.suffix == SPM_SUFFIX else "wordpiece"


def locate(
    src: StrPath,
    *,
    checkpoint: StrPath | None = None,
    config: StrPath | None = None,
    vocab: StrPath | None = None,
    config_names: tuple[str, ...] = (CONFIG_NAME,),
) -> SourceFiles:
    """Locate the parts of a release folder; overrides win. The config is optional here
    (ELECTRA releases have none): the first of `config_names` found is used. The vocab is
    vocab.txt, else the folder's one SentencePiece model (ALBERT's 30k-clean.model)."""
    src = Path(src)
    if not src.is_dir() and not (checkpoint and vocab):
        raise InputError(f"{src}: not a folder")
    prefix = normalize_prefix(Path(checkpoint)) if checkpoint else find_checkpoint(src)
    folder = src if src.is_dir() else prefix.parent
    if config is not None:
        config_path: Path | None = _find_file(folder, CONFIG_NAME, config, "config")
    else:
        config_path = next((folder / n for n in config_names if (folder / n).is_file()), None)
    models = sorted(folder.glob(f"*{SPM_SUFFIX}")) if vocab is None else []
    if vocab is None and not (folder / "vocab.txt").is_file() and len(models) == 1:
        vocab_path = models[0]
    else:
        vocab_path = _find_file(folder, "vocab.txt", vocab, "vocab.txt",
                                look_up=VOCAB_LEVELS_UP)  # fmt: skip
    state = src / "checkpoint"
    return SourceFiles(
        folder, prefix, config_path, vocab_path,
        state if checkpoint is None and state.is_file() else None,
        vocab_above=vocab is None and vocab_path.parent != folder,
    )  # fmt: skip

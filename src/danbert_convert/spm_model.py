"""SentencePiece model files (ALBERT's 30k-clean.model): reading and checking one.

The file is untrusted: its size is checked before it is read, SentencePiece itself parses and
validates it, and the few settings SentencePiece does not expose are read from the protobuf
(_proto.py). Anything else than the unigram model with default normalisation that ALBERT's
tokenizer has is refused by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from danbert_convert._proto import proto_fields
from danbert_convert.errors import InputError

MAX_MODEL_BYTES = 64 << 20  # ALBERT's is 0.7 MB; a 250k-piece multilingual model is ~5 MB
# SentencePiece piece types (sentencepiece_model.proto).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
MODEL_TYPES = {1: "unigram", 2: "BPE", 3: "word", 4: "char"}


@dataclass(frozen=True)
class SpmModel:
    """What a SentencePiece model holds that the tokenizer files need."""

    path: Path
    data: bytes
    pieces: list[tuple[str, float, int]]  # piece, score, type, by id
    unk_id: int
    precompiled_charsmap: bytes


def _spec(buf: bytes, message: int) -> dict[int, int | bytes]:
    """The last value of each field of ModelProto's sub-message `message` (later ones win)."""
    out: dict[int, int | bytes] = {}
    for number, _, value in proto_fields(buf):
        if number == message and isinstance(value, bytes):
            out.update((n, v) for n, _, v in proto_fields(value))
    return out


def read_spm_model(path: Path) -> SpmModel:
    """Read and check a SentencePiece model (untrusted): InputError naming the file if it is
    not a unigram model that SentencePiece itself loads."""
    import sentencepiece as spm

    path = Path(path)
    try:
        with open(path, "rb") as f:
            # The size is checked before reading, and no more is read (the file may grow).
            size = os.fstat(f.fileno()).st_size
            data = b"" if size > MAX_MODEL_BYTES else f.read(MAX_MODEL_BYTES + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read the SentencePiece model ({e.strerror})") from None
    if max(size, len(data)) > MAX_MODEL_BYTES:
        raise InputError(
            f"{path}: more than the {MAX_MODEL_BYTES} bytes a SentencePiece model may have here"
        )
    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(data)
    except Exception as e:  # sentencepiece raises RuntimeError or OSError, with its status
        msg = " ".join(str(e).split()) or type(e).__name__
        raise InputError(f"{path}: not a SentencePiece model ({msg})") from None
    # SentencePiece has parsed and checked it; what it does not expose comes from the proto:
    # TrainerSpec (field 2) model_type 3, byte_fallback 35; NormalizerSpec (field 3)
    # precompiled_charsmap 2, add_dummy_prefix 3, remove_extra_whitespaces 4, escape_whitespaces 5.
    try:
        trainer, normalizer = _spec(data, 2), _spec(data, 3)
    except ValueError as e:
        raise InputError(f"{path}: malformed SentencePiece model ({e})") from None
    model_type = trainer.get(3, 1)
    if model_type != 1:
        name = (
            MODEL_TYPES.get(model_type, f"type {model_type}")
            if isinstance(model_type, int)
            else "?"
        )
        raise InputError(
            f"{path}: a {name} SentencePiece model; only unigram models (ALBERT's) are supported"
        )
    unsupported = [
        what
        for what, value, default in (
            ("byte_fallback", trainer.get(35, 0), 0),
            ("add_dummy_prefix", normalizer.get(3, 1), 1),
            ("remove_extra_whitespaces", normalizer.get(4, 1), 1),
            ("escape_whitespaces", normalizer.get(5, 1), 1),
        )
        if bool(value) != bool(default)
    ]
    if unsupported:
        raise InputError(
            f"{path}: SentencePiece settings not supported: {', '.join(unsupported)} "
            "differ from the defaults ALBERT's model has"
        )
    charsmap = normalizer.get(2, b"")
    pieces = []
    for i in range(sp.get_piece_size()):
        kind = (
            UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i)
            else UNUSED if sp.is_unused(i) else BYTE if sp.is_byte(i) else NORMAL
        )  # fmt: skip
        pieces.append((sp.id_to_piece(i), sp.get_score(i), kind))
    return SpmModel(
        path, data, pieces, sp.unk_id(), charsmap if isinstance(charsmap, bytes) else b""
    )

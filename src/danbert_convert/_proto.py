"""The protobuf wire format, just enough to read TensorFlow's bundle index entries
(BundleHeaderProto, BundleEntryProto) and a SentencePiece ModelProto without protobuf itself.

The messages come from untrusted files: every length is checked against the buffer, and
anything malformed is a ValueError for the caller to name the file in.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at `pos`; returns (value, next position). Raises ValueError."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def int64(v: int) -> int:
    """Reinterpret a decoded varint as a two's-complement int64 (negative ints use 10 bytes)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) of a serialized message; value is an int for
    varint and fixed wire types, bytes for length-delimited ones. Raises ValueError."""
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ValueError("truncated fixed64")
            (value,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
        elif wire == 2:
            n, pos = read_varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated length-delimited field")
            value = bytes(buf[pos : pos + n])
            pos += n
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ValueError("truncated fixed32")
            (value,) = struct.unpack_from("<I", buf, pos)
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if field == 0:
            raise ValueError("field number 0")
        yield field, wire, value


def as_int(value: int | bytes) -> int:
    if isinstance(value, bytes):
        raise ValueError("expected a scalar field, found a length-delimited one")
    return value


def as_bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError("expected a length-delimited field, found a scalar")
    return value

"""Length-prefixed orjson frames between the server and its sandbox workers.

A frame is a 4-byte big-endian length, then an orjson object, then optionally a tail: a
newline and raw bytes. A success reply's result travels as the tail (its JSON text, as the
worker's orjson wrote it), so the server can pass it on without parsing it and encoding it
again; decoded, it is the reply's "result", as bytes. orjson writes no whitespace and
escapes control characters in strings, so the first newline of a frame ends its object.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

import orjson

__all__ = [
    "MAX_FRAME_BYTES", "RESULT", "FrameError", "decode", "encode", "frame", "read_frame_blocking",
    "write_frame_blocking",
]  # fmt: skip

_HEADER = struct.Struct(">I")
# Results, logs and arguments are all capped well below this; a bigger frame means a broken peer.
MAX_FRAME_BYTES = 64 * 1024 * 1024


# The field a frame's tail is decoded into.
RESULT = "result"
_NEWLINE = b"\n"


class FrameError(Exception):
    """The peer sent something that is not a valid frame (or closed mid-frame)."""


def frame(payload: bytes) -> bytes:
    """The frame of an already encoded payload."""
    return _HEADER.pack(len(payload)) + payload


def encode(message: dict[str, Any], tail: bytes | None = None) -> bytes:
    """A frame of `message`, and of `tail` after it (see the module docstring)."""
    payload = orjson.dumps(message)
    if tail is None:
        return _HEADER.pack(len(payload)) + payload
    return b"".join((_HEADER.pack(len(payload) + 1 + len(tail)), payload, _NEWLINE, tail))


def decode(payload: bytes | bytearray, start: int = 0) -> dict[str, Any]:
    """The message of a frame's payload, `payload[start:]`; its tail, if any, as bytes
    under RESULT. Without a tail the payload is read in place, not copied."""
    end = payload.find(_NEWLINE, start)
    try:
        if end < 0:
            message = orjson.loads(memoryview(payload)[start:] if start else payload)
        else:
            message = orjson.loads(payload[start:end])
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"invalid frame payload: {exc}") from None
    if type(message) is not dict:
        raise FrameError("frame payload is not an object")
    if RESULT in message:
        raise FrameError(f"{RESULT!r} travels as the frame's tail, not in its object")
    if end >= 0:
        message[RESULT] = bytes(payload[end + 1 :])
    return message


def _length(header: bytes) -> int:
    length: int = _HEADER.unpack(header)[0]
    if length > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
    return length


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = stream.read(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def read_frame_blocking(stream: BinaryIO) -> dict[str, Any] | None:
    """Read one frame from a blocking binary stream; None on clean EOF."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    payload = _read_exactly(stream, _length(header))
    if payload is None:
        raise FrameError("peer closed the stream mid-frame")
    return decode(payload)


def write_frame_blocking(stream: BinaryIO, message: dict[str, Any]) -> None:
    stream.write(encode(message))
    stream.flush()

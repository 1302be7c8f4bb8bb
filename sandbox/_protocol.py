"""Length-prefixed orjson frames between the server and its sandbox workers."""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

import orjson

__all__ = ["MAX_FRAME_BYTES", "FrameError", "encode", "decode", "read_frame_blocking", "write_frame_blocking"]

_HEADER = struct.Struct(">I")
# Results, logs and arguments are all capped well below this; a bigger frame means a broken peer.
MAX_FRAME_BYTES = 64 * 1024 * 1024


class FrameError(Exception):
    """The peer sent something that is not a valid frame (or closed mid-frame)."""


def encode(message: dict[str, Any]) -> bytes:
    payload = orjson.dumps(message)
    return _HEADER.pack(len(payload)) + payload


def decode(payload: bytes | memoryview) -> dict[str, Any]:
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"invalid frame payload: {exc}") from None
    if not isinstance(message, dict):
        raise FrameError("frame payload is not an object")
    return message


def _length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
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

"""Response envelopes: the bytes every invocation answers with (always HTTP 200, JSON)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from wtpy.contract import DEFAULT_ERROR_NAME, SERIALIZE_ERROR

__all__ = [
    "DEFAULT_ERROR_NAME",
    "SERIALIZE_FAILED",
    "error_envelope",
    "failure_envelope",
    "success_envelope",
]

SERIALIZE_FAILED = SERIALIZE_ERROR
_UNKNOWN_MESSAGE = "Unknown error"
_CORE_KEYS = ("message", "name", "stack")


def _stack_for(name: str, message: str) -> str:
    # What a JavaScript stack starts with, minus the frames: the runtime never exposes its own.
    return f"{name}: {message}" if message else name


def _dump_error(data: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps({"status": "error", "data": data})
    except (TypeError, ValueError):
        # An extra key that is not JSON-able: keep the three core keys, coerced to text.
        core = {key: _as_text(data.get(key)) for key in _CORE_KEYS}
        return orjson.dumps({"status": "error", "data": core})


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        # Lone surrogates cannot be encoded as JSON; replace them rather than fail.
        return value.encode("utf-8", "replace").decode("utf-8")
    return "" if value is None else _as_text(str(value))


def error_envelope(name: str, message: str, /, **extra: Any) -> bytes:
    """`{"status":"error","data":{"message","name","stack", **extra}}` as bytes.

    `stack` defaults to "<name>: <message>"; pass `stack=` to override. Extra keys follow
    the three core keys in the order given; `message`/`name` in `extra` are ignored.
    """
    stack = extra.pop("stack", None)
    data: dict[str, Any] = {
        "message": message,
        "name": name,
        "stack": stack if isinstance(stack, str) else _stack_for(name, message),
    }
    for key, value in extra.items():
        if key not in _CORE_KEYS:
            data[key] = value
    return _dump_error(data)


def failure_envelope(error: Mapping[str, Any]) -> bytes:
    """Error envelope for an error dict as the sandbox reports it (name, message, stack, extras)."""
    name = error.get("name")
    message = error.get("message")
    name = name if isinstance(name, str) and name else DEFAULT_ERROR_NAME
    message = message if isinstance(message, str) else _UNKNOWN_MESSAGE
    extra = {
        key: value
        for key, value in error.items()
        if isinstance(key, str) and key not in ("name", "message")
    }
    return error_envelope(name, message, **extra)


def success_envelope(result: Any, has_result: bool) -> bytes:
    """`{"statusCode":200,"headers":{},"status":"success","data":<result>}`; no `data` without a result.

    `result` may be an `orjson.Fragment`: JSON text, written into `data` as it is."""
    envelope: dict[str, Any] = {"statusCode": 200, "headers": {}, "status": "success"}
    if has_result:
        envelope["data"] = result
    try:
        return orjson.dumps(envelope)
    except (TypeError, ValueError):
        return error_envelope(DEFAULT_ERROR_NAME, SERIALIZE_FAILED)

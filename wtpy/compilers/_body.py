"""Request body reading as the original adapter does it, and the Node-style header view."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, Final

import orjson

__all__ = [
    "INVALID_JSON",
    "INVALID_JSON_BODY",
    "NO_BODY",
    "BodyState",
    "NodeHeaders",
    "is_json_media_type",
    "node_headers",
    "read_body",
]

INVALID_JSON = "Invalid request payload JSON format"

_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Node's http module keeps only the first value of these request headers...
_FIRST_WINS = frozenset(
    {
        "age", "authorization", "content-length", "content-type", "etag", "expires", "from",
        "host", "if-modified-since", "if-unmodified-since", "last-modified", "location",
        "max-forwards", "proxy-authorization", "referer", "retry-after", "server", "user-agent",
    }
)  # fmt: skip
# ...joins repeated `cookie` with "; " and every other repeated header with ", ".


class BodyState(Enum):
    """What `read_body` returns instead of a JSON value."""

    NO_BODY = "no body"  # bodyless method, empty body, or a content type that is not JSON
    INVALID_JSON = "invalid json"  # a JSON content type whose body does not parse


NO_BODY: Final = BodyState.NO_BODY
INVALID_JSON_BODY: Final = BodyState.INVALID_JSON


class NodeHeaders(dict[str, str]):
    """Headers already merged by `node_headers`: passing them again costs nothing."""


def node_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str] | tuple[bytes, bytes]],
) -> NodeHeaders:
    """Header names lowercased, repeated headers merged the way Node's `req.headers` does.

    Takes a mapping (starlette `Headers` yields every raw pair) or the (name, value) pairs,
    as text or as the bytes an ASGI scope carries (decoded as Latin-1, as Node does).
    """
    if type(headers) is NodeHeaders:
        return headers
    merged = NodeHeaders()
    for raw_key, raw_value in headers.items() if isinstance(headers, Mapping) else headers:
        key = (raw_key.decode("latin-1") if isinstance(raw_key, bytes) else raw_key).lower()
        value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
        if key not in merged:
            merged[key] = value
        elif key in _FIRST_WINS:
            continue
        elif key == "cookie":
            merged[key] = f"{merged[key]}; {value}"
        else:
            merged[key] = f"{merged[key]}, {value}"
    return merged


def is_json_media_type(content_type: str | None) -> bool:
    """`application/json` or any `type/subtype+json`; parameters (charset...) and case ignored."""
    if not content_type:
        return False
    essence = content_type.split(";", 1)[0].strip().lower()
    if essence == "application/json":
        return True
    kind, slash, subtype = essence.partition("/")
    return bool(kind and slash and len(subtype) > len("+json") and subtype.endswith("+json"))


def read_body(method: str, content_type: str | None, body: bytes) -> Any:
    """The parsed JSON value, `NO_BODY`, or `INVALID_JSON_BODY`."""
    if method.upper() in _BODYLESS_METHODS or not body or not is_json_media_type(content_type):
        return NO_BODY
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return INVALID_JSON_BODY

"""The wire format, without I/O: request bodies and headers out, envelopes in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from wtpy import __version__

from ._errors import HookProtocolError, HookUnavailableError, hook_error_from

__all__ = [
    "MAX_RESPONSE_BYTES",
    "HookResult",
    "client_credentials_body",
    "parse_envelope",
    "password_body",
    "redact_url",
    "request_headers",
]

MAX_RESPONSE_BYTES = 1024 * 1024
_MISSING = object()


@dataclass(frozen=True)
class HookResult:
    """What the hook returned (`data` is None when the envelope carried no data)."""

    data: Any = None

    @property
    def scope(self) -> list[Any] | None:
        """The returned `scope` when it is a list; None when absent or not a list."""
        if isinstance(self.data, Mapping):
            scope = self.data.get("scope")
            if isinstance(scope, list):
                return list(scope)
        return None

    @property
    def claims(self) -> dict[str, Any]:
        """The returned object without its `scope`; {} when the data is not an object."""
        if isinstance(self.data, Mapping):
            return {key: value for key, value in self.data.items() if key != "scope"}
        return {}


def _context(
    ip: str | None, user_agent: str | None, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError("extra_context must be a mapping")
    context: dict[str, Any] = dict(extra or {})
    if ip is not None:
        context["ip"] = ip
    if user_agent is not None:
        context["userAgent"] = user_agent
    return context


def _check(client: Any, scope: Any, audience: Any) -> None:
    if not isinstance(client, Mapping):
        raise TypeError("client must be a mapping")
    if scope is not None and (isinstance(scope, str | bytes) or not isinstance(scope, Sequence)):
        raise TypeError("scope must be a list of strings or None")
    if not isinstance(audience, str):
        raise TypeError("audience must be a string")


def client_credentials_body(
    client: Mapping[str, Any],
    scope: Sequence[str] | None,
    audience: str,
    ip: str | None = None,
    user_agent: str | None = None,
    extra_context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`{client, scope, audience, context: {ip, userAgent, ...}}` (scope omitted when None)."""
    _check(client, scope, audience)
    body: dict[str, Any] = {"client": dict(client)}
    if scope is not None:
        body["scope"] = list(scope)
    body["audience"] = audience
    body["context"] = _context(ip, user_agent, extra_context)
    return body


def password_body(
    user: Mapping[str, Any],
    client: Mapping[str, Any],
    scope: Sequence[str] | None,
    audience: str,
    ip: str | None = None,
    user_agent: str | None = None,
    extra_context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The client-credentials body plus `user`."""
    if not isinstance(user, Mapping):
        raise TypeError("user must be a mapping")
    body = {"user": dict(user)}
    body.update(client_credentials_body(client, scope, audience, ip, user_agent, extra_context))
    return body


def request_headers(secret: str | None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"wtpy-client/{__version__}",
    }
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    return headers


def check_secret(secret: str | None) -> None:
    if secret is None:
        return
    if not isinstance(secret, str):
        raise TypeError("secret must be a string or None")
    if any(ch in secret for ch in "\r\n\0"):
        raise ValueError("secret must not contain CR, LF or NUL")


def check_url(url: str) -> None:
    if not isinstance(url, str):
        raise TypeError("url must be a string")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"hook URL must be an absolute http(s) URL, not {redact_url(url)!r}")


def redact_url(url: str) -> str:
    """The URL without user info, query or fragment: safe to log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<invalid url>"


def _runtime_message(content: bytes) -> str:
    """The `message` of a management-style error body (`{"error", "message"}`), if any."""
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return f": {value['message'][:200]}"
    return ""


def parse_envelope(status_code: int, content: bytes) -> tuple[bool, Any]:
    """(has_data, data) for a success envelope; raises for everything else."""
    if status_code != 200:
        detail = _runtime_message(content)
        if status_code >= 500 or status_code == 429:
            raise HookUnavailableError(
                f"extensibility point answered HTTP {status_code}{detail}", status_code=status_code
            )
        raise HookProtocolError(
            f"extensibility point answered HTTP {status_code}{detail}", status_code=status_code
        )
    try:
        envelope = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise HookProtocolError(
            "extensibility point answered something that is not JSON", status_code=status_code
        ) from None
    if not isinstance(envelope, dict):
        raise HookProtocolError("envelope is not a JSON object", status_code=status_code)
    status = envelope.get("status")
    if status == "success":
        data = envelope.get("data", _MISSING)
        if data is _MISSING:
            return False, None
        return True, data
    if status == "error":
        data = envelope.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("message"), str):
            raise HookProtocolError(
                "error envelope without a data.message string", status_code=status_code
            )
        raise hook_error_from(data)
    raise HookProtocolError("envelope has no status 'success' or 'error'", status_code=status_code)

"""Scoped management tokens: format, verification, scopes, the in-memory registry.

Besides the admin token (data_dir/admin.token, reaches everything) an administrator can
issue tokens scoped to one container, or to one webtask of a container, optionally with
an expiry, and revoke them (POST/GET/DELETE /api/tokens).

A scoped token reads ``wtpy_t_<id>_<secret>``: `id` is 16 hex digits (public: listings
and revocation use it), `secret` 256 random bits in urlsafe base64. The store keeps only
the SHA-256 of the whole token string; verification looks the row up by id and compares
hashes in constant time. SHA-256 (not a slow password hash) is right here: the secret is
random and 256 bits long, so there is nothing to brute-force.

Every token row lives in memory (`TokenRegistry`), loaded at start and updated by the same
calls that write the store (this process is the data dir's only writer), so checking a
token never touches SQLite and a revocation takes effect for the very next request.

Scopes:

* admin -- every container, and the token endpoints;
* container C -- every webtask of C (create, change, list, inspect with decrypt, delete,
  logs); nothing else;
* webtask C/N -- only C/N: it may create/replace, patch, inspect (with decrypt), delete it
  and read its logs. Listing C with it answers only N (an empty list when N does not
  exist or does not match the filters); following C's logs follows only N's records.

Failures: no token, or an expired or revoked one -> Unauthorized (401); a token that is
not recognised or whose scope does not cover the request -> Forbidden (403). An expired
or revoked token is only reported as such when its secret verifies, so the answers are
no oracle for ids.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from wtpy.contract import format_time, parse_time, valid_name
from wtpy.storage import StoredToken

from ._access import ADMIN, Kind, Principal
from ._auth import tokens_equal
from ._errors import Forbidden, Invalid, Unauthorized

__all__ = [
    "MAX_DESCRIPTION_CHARS",
    "MAX_EXPIRES_IN",
    "SCOPED_TOKEN_PREFIX",
    "TokenRegistry",
    "TokenRequest",
    "format_time",
    "hash_token",
    "new_scoped_token",
    "parse_time",
    "token_request",
    "token_view",
]

SCOPED_TOKEN_PREFIX = "wtpy_t_"
_ID_HEX = 16
_SCOPED_RE = re.compile(r"wtpy_t_([0-9a-f]{16})_[A-Za-z0-9_-]{43}", re.ASCII)
MAX_DESCRIPTION_CHARS = 1024
MAX_EXPIRES_IN = 10 * 366 * 24 * 3600  # ten years
_DUMMY_HASH = hashlib.sha256(b"wtpy: no such token").hexdigest()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_scoped_token() -> tuple[str, str]:
    """(id, token) for a fresh scoped token."""
    token_id = secrets.token_hex(_ID_HEX // 2)
    return token_id, f"{SCOPED_TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


@dataclass(slots=True)
class _Entry:
    row: StoredToken
    expires_ts: float | None
    revoked: bool


class TokenRegistry:
    """Every token row in memory, keyed by id; kept in step with the store by the runtime."""

    def __init__(self, rows: Iterable[StoredToken] = ()) -> None:
        self._entries: dict[str, _Entry] = {}
        for row in rows:
            self.put(row)

    def put(self, row: StoredToken) -> None:
        try:
            expires_ts = parse_time(row.expires_at) if row.expires_at else None
        except ValueError:
            expires_ts = 0.0  # unreadable expiry: treat as expired, never as "never"
        self._entries[row.id] = _Entry(row, expires_ts, row.revoked_at is not None)

    def get(self, token_id: str) -> StoredToken | None:
        entry = self._entries.get(token_id)
        return None if entry is None else entry.row

    def rows(self) -> list[StoredToken]:
        return [entry.row for entry in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str, admin_token: str, now: float | None = None) -> Principal:
        """The principal of a presented bearer token; Unauthorized or Forbidden otherwise."""
        if tokens_equal(token, admin_token):
            return ADMIN
        match = _SCOPED_RE.fullmatch(token)
        entry = self._entries.get(match.group(1)) if match else None
        presented = hash_token(token)
        stored = entry.row.hash if entry is not None else _DUMMY_HASH
        if not hmac.compare_digest(presented, stored) or entry is None:
            raise Forbidden("This token is not a valid wtpy management token")
        row = entry.row
        if entry.revoked:
            raise Unauthorized(f"This token (id {row.id}) was revoked at {row.revoked_at}")
        if (
            entry.expires_ts is not None
            and (time.time() if now is None else now) >= entry.expires_ts
        ):
            raise Unauthorized(f"This token (id {row.id}) expired at {row.expires_at}")
        kind: Kind = "container" if row.name is None else "webtask"
        return Principal(kind, row.container, row.name, row.id)


def token_status(row: StoredToken, now: float | None = None) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None:
        try:
            expired = (time.time() if now is None else now) >= parse_time(row.expires_at)
        except ValueError:
            expired = True
        if expired:
            return "expired"
    return "active"


def token_view(row: StoredToken) -> dict[str, object]:
    """The public description of a token: never the token, never its hash."""
    return {
        "id": row.id,
        "container": row.container,
        "name": row.name,
        "description": row.description,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "status": token_status(row),
    }


# --- what POST /api/tokens may ask for ---------------------------------------------------

_TOKEN_FIELDS = frozenset({"container", "name", "description", "expires_in", "expires_at"})


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A validated request for a new scoped token."""

    container: str
    name: str | None
    description: str
    expires_ts: float | None


def token_request(body: Mapping[str, Any], now: float) -> TokenRequest:
    """Check a token request's fields; Invalid (code invalid_token or invalid_name) otherwise."""
    unknown = sorted(set(body) - _TOKEN_FIELDS)
    if unknown:
        raise Invalid(f"Unknown field(s): {', '.join(map(repr, unknown))}", code="invalid_token")
    container, name = body.get("container"), body.get("name")
    if not isinstance(container, str) or not valid_name(container):
        raise Invalid("'container' must be a valid container name", code="invalid_name")
    if name is not None and (not isinstance(name, str) or not valid_name(name)):
        raise Invalid("'name' must be a valid webtask name or null", code="invalid_name")
    description = body.get("description")
    if description is None:
        description = ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        raise Invalid(
            f"'description' must be a string of at most {MAX_DESCRIPTION_CHARS} characters",
            code="invalid_token",
        )
    try:
        description.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid("'description' is not valid Unicode text", code="invalid_token") from None
    return TokenRequest(container, name, description, _expiry(body, now))


def _expiry(body: Mapping[str, Any], now: float) -> float | None:
    expires_in, expires_at = body.get("expires_in"), body.get("expires_at")
    if expires_in is not None and expires_at is not None:
        raise Invalid("Give 'expires_in' or 'expires_at', not both", code="invalid_token")
    if expires_in is not None:
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise Invalid("'expires_in' must be a number of seconds", code="invalid_token")
        if not 1 <= expires_in <= MAX_EXPIRES_IN:
            raise Invalid(
                f"'expires_in' must be from 1 to {MAX_EXPIRES_IN} seconds", code="invalid_token"
            )
        return now + float(expires_in)
    if expires_at is not None:
        try:
            when = parse_time(expires_at)
        except (ValueError, TypeError, OverflowError):
            raise Invalid(
                "'expires_at' must be an ISO 8601 time such as 2030-01-31T12:00:00Z",
                code="invalid_token",
            ) from None
        if not now < when <= now + MAX_EXPIRES_IN:
            raise Invalid(
                "'expires_at' must be in the future, at most ten years ahead", code="invalid_token"
            )
        return when
    return None

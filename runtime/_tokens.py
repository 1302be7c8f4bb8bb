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

Failures: no token, or an expired or revoked one -> 401; a token that is not recognised
or whose scope does not cover the request -> 403. An expired or revoked token is only
reported as such when its secret verifies, so the answers are no oracle for ids.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from wtpy.storage import StoredToken

from ._auth import tokens_equal
from ._http import ApiError

__all__ = [
    "MAX_DESCRIPTION_CHARS",
    "MAX_EXPIRES_IN",
    "SCOPED_TOKEN_PREFIX",
    "Principal",
    "TokenRegistry",
    "format_time",
    "hash_token",
    "new_scoped_token",
    "parse_time",
    "token_view",
]

SCOPED_TOKEN_PREFIX = "wtpy_t_"
_ID_HEX = 16
_SCOPED_RE = re.compile(r"wtpy_t_([0-9a-f]{16})_[A-Za-z0-9_-]{43}", re.ASCII)
MAX_DESCRIPTION_CHARS = 1024
MAX_EXPIRES_IN = 10 * 366 * 24 * 3600  # ten years
_DUMMY_HASH = hashlib.sha256(b"wtpy: no such token").hexdigest()

Kind = Literal["admin", "container", "webtask"]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_scoped_token() -> tuple[str, str]:
    """(id, token) for a fresh scoped token."""
    token_id = secrets.token_hex(_ID_HEX // 2)
    return token_id, f"{SCOPED_TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    """Epoch seconds of an ISO 8601 time; a time without zone is UTC. Raises ValueError."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("not a time")
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a management request is: the admin, or a token scoped to a container/webtask."""

    kind: Kind
    container: str | None = None
    name: str | None = None
    token_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    def allows(self, container: str | None, name: str | None = None, *, narrow: bool = False) -> bool:
        """May this principal act on `container` (name None: the whole container) or on
        `container/name`? With narrow=True a webtask token may ask for its whole container
        and the caller promises to restrict the answer to `self.name`."""
        if self.kind == "admin":
            return True
        if container is None or container != self.container:
            return False
        if self.kind == "container":
            return True
        if name is None:
            return narrow
        return name == self.name

    def require(self, container: str | None, name: str | None = None, *, narrow: bool = False) -> None:
        if not self.allows(container, name, narrow=narrow):
            raise ApiError(403, "forbidden", self._forbidden_message(container, name))

    def describe(self) -> str:
        if self.kind == "admin":
            return "the admin token"
        if self.kind == "container":
            return f"a token scoped to container {self.container!r}"
        return f"a token scoped to webtask {self.container}/{self.name}"

    def _forbidden_message(self, container: str | None, name: str | None) -> str:
        if container is None:
            return f"This call needs the admin token; this is {self.describe()}"
        target = f"container {container!r}" if name is None else f"webtask {container}/{name}"
        return f"This token may not access {target}: it is {self.describe()}"


ADMIN = Principal("admin")


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
        """The principal of a presented bearer token, or ApiError 401/403."""
        if tokens_equal(token, admin_token):
            return ADMIN
        match = _SCOPED_RE.fullmatch(token)
        entry = self._entries.get(match.group(1)) if match else None
        presented = hash_token(token)
        stored = entry.row.hash if entry is not None else _DUMMY_HASH
        if not hmac.compare_digest(presented, stored) or entry is None:
            raise ApiError(403, "forbidden", "This token is not a valid wtpy management token")
        row = entry.row
        if entry.revoked:
            raise ApiError(
                401, "unauthorized", f"This token (id {row.id}) was revoked at {row.revoked_at}"
            )
        if entry.expires_ts is not None and (time.time() if now is None else now) >= entry.expires_ts:
            raise ApiError(
                401, "unauthorized", f"This token (id {row.id}) expired at {row.expires_at}"
            )
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

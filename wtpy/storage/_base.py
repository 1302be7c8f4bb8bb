"""The storage interface: records, errors, and the Protocols every backend implements.

Two layers:

* a `Backend` stores webtasks with their secrets already sealed (`SealedWebtask`: opaque
  blobs), scoped tokens, and a change feed. SQLite (`_sqlite.py`) and memory
  (`_memory.py`) are backends; issue 15 adds PostgreSQL.
* `Storage` is what the runtime uses: the same calls with plaintext `Webtask`s. The one
  implementation, `SealedStorage` (`_sealing.py`), wraps any backend and seals/opens
  secrets with SecretBox, so no backend ever sees a secret in clear.

Nothing here assumes one process: several servers may share a backend (SQLite on one
machine, PostgreSQL across machines). A write that would lose a concurrent one is refused
with `VersionConflict` (put with `expected_version`), and every write appends to the
change feed, which servers read (`changes_since`) to drop cached webtasks and reload
tokens written by the others. (SQLite itself is still one server per data dir: the
runtime holds the data dir's lock file; a database outside the data dir may be shared.)

Inputs are validated once, by the domain (the runtime) before it calls storage; storage
only asserts the types whose violation would store data it could not read back.

Room for later issues, in the same shape: webtask versions/history (`history(container,
name)`, `get(container, name, version=...)`) and per-webtask storage documents (their own
get/put with `expected_version`, and a "document" change kind).

The calls are synchronous and thread-safe; the runtime runs them in worker threads.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

__all__ = [
    "Backend",
    "Change",
    "ChangeBatch",
    "ChangeFeed",
    "ChangeKind",
    "SealedContent",
    "SealedWebtask",
    "SealedWebtaskStore",
    "Storage",
    "StorageError",
    "StoredToken",
    "TokenExists",
    "TokenStore",
    "VersionConflict",
    "Webtask",
    "WebtaskStore",
]


class StorageError(Exception):
    """The storage cannot be used (closed, newer schema, corrupt record)."""


class VersionConflict(StorageError):
    """put(expected_version=...) found another version: someone else wrote in between."""

    def __init__(self, container: str, name: str, expected: int, found: int | None) -> None:
        self.expected, self.found = expected, found
        super().__init__(
            f"webtask {container}/{name} is at version {found}, not {expected}"
            if found is not None
            else f"webtask {container}/{name} no longer exists (expected version {expected})"
        )


class TokenExists(StorageError):
    """add_token() with an id that is already stored."""


@dataclass(frozen=True)
class Webtask:
    container: str
    name: str
    code: str = field(repr=False)
    meta: dict[str, str]
    secrets: dict[str, str] = field(repr=False)  # decrypted; never in repr()
    version: int  # bumps on every write (cache key together with code hash)
    created_at: str  # ISO 8601 UTC, e.g. 2026-11-23T10:00:00Z
    updated_at: str
    code_hash: str  # sha256 hex of code


@dataclass(frozen=True)
class StoredToken:
    """A row of the tokens table. `hash` is the SHA-256 hex of the token, never the token."""

    id: str
    hash: str = field(repr=False)
    container: str
    name: str | None
    description: str
    created_at: str  # ISO 8601 UTC
    expires_at: str | None
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class SealedContent:
    """What one write of a webtask gives a backend: code, clear meta, sealed blobs."""

    code: str = field(repr=False)
    code_hash: str  # sha256 hex of the UTF-8 code
    meta: Mapping[str, str | None]  # None where the value is sealed in meta_sealed
    meta_sealed: bytes | None = field(repr=False)  # SecretBox blob (purpose "meta")
    secrets: bytes = field(repr=False)  # SecretBox blob (purpose "secrets")


@dataclass(frozen=True, slots=True)
class SealedWebtask:
    """A webtask as a backend stores it; the backend assigns version and times."""

    container: str
    name: str
    content: SealedContent
    version: int
    created_at: str  # ISO 8601 UTC
    updated_at: str


ChangeKind = Literal["webtask", "token"]


class Change(NamedTuple):
    """One write in the change feed: what changed (not how; read it again to know)."""

    cursor: int
    kind: ChangeKind
    key: tuple[str, ...]  # webtask: (container, name); token: (token id,)


class ChangeBatch(NamedTuple):
    """changes_since()'s answer. complete=False: the feed no longer holds every change
    after the cursor asked for (pruned, or the database was replaced), so a reader must
    drop everything it cached. `cursor` is where to ask next."""

    cursor: int
    changes: list[Change]
    complete: bool


class ChangeFeed(Protocol):
    def change_cursor(self) -> int:
        """The cursor of the latest change (0 before any). Read it before loading a cache."""
        ...

    def changes_since(self, cursor: int, limit: int = 1000) -> ChangeBatch:
        """Changes after `cursor`, oldest first, at most `limit` (ask again from the
        returned cursor while a full batch comes back)."""
        ...


class TokenStore(Protocol):
    def add_token(self, token: StoredToken) -> None:
        """Store a new token; raises TokenExists when the id is taken."""
        ...

    def get_token(self, token_id: str) -> StoredToken | None: ...

    def list_tokens(self) -> list[StoredToken]:
        """Every token (active, expired and revoked), oldest first."""
        ...

    def revoke_token(self, token_id: str, revoked_at: str) -> StoredToken | None:
        """Mark a token revoked (the first revocation time stays); the token as it is
        now, or None when there is no such token."""
        ...


class WebtaskStore(Protocol):
    """Webtasks with plaintext secrets (what the runtime uses)."""

    def put(
        self,
        container: str,
        name: str,
        code: str,
        meta: Mapping[str, str] | None,
        secrets: Mapping[str, str] | None,
        *,
        expected_version: int | None = None,
    ) -> tuple[Webtask, bool]:
        """Create or replace; (webtask, created). With expected_version, replace only that
        version (else VersionConflict)."""
        ...

    def get(self, container: str, name: str) -> Webtask | None: ...

    def list(self, container: str, meta_filter: Mapping[str, str] | None = None) -> list[Webtask]:
        """Webtasks of `container` sorted by name whose meta has every filter key=value."""
        ...

    def delete(self, container: str, name: str) -> bool: ...

    def count(self, container: str | None = None) -> int: ...

    def containers(self) -> builtins.list[str]: ...


class SealedWebtaskStore(Protocol):
    """Webtasks as backends keep them: secrets only as sealed blobs."""

    def put_sealed(
        self,
        container: str,
        name: str,
        content: SealedContent,
        *,
        expected_version: int | None = None,
    ) -> tuple[SealedWebtask, bool]: ...

    def get_sealed(self, container: str, name: str) -> SealedWebtask | None: ...

    def list_sealed(self, container: str, meta_filter: Mapping[str, str]) -> list[SealedWebtask]:
        """Webtasks of `container` sorted by name that may match the filter: every clear
        meta value must equal the filter's; a sealed (None) value is the caller's to check."""
        ...

    def delete(self, container: str, name: str) -> bool: ...

    def count(self, container: str | None = None) -> int: ...

    def containers(self) -> list[str]: ...


class Backend(SealedWebtaskStore, TokenStore, ChangeFeed, Protocol):
    def close(self) -> None: ...


class Storage(WebtaskStore, TokenStore, ChangeFeed, Protocol):
    def close(self) -> None: ...


def may_match(plain: Mapping[str, str | None], wanted: Mapping[str, str]) -> bool:
    """False when the clear meta already rules a webtask out (None = sealed, decide later)."""
    for key, value in wanted.items():
        if key not in plain:
            return False
        stored = plain[key]
        if stored is not None and stored != value:
            return False
    return True

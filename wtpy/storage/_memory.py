"""The in-memory backend: the SQLite backend's semantics without a file.

For tests and for servers that need no durability (`memory://`). It stores the same
sealed records as every backend, so the sealing layer is exercised exactly as with SQLite.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Mapping
from types import MappingProxyType

from wtpy.contract import format_time

from ._base import (
    Change,
    ChangeBatch,
    ChangeKind,
    SealedContent,
    SealedWebtask,
    StorageError,
    StoredToken,
    TokenExists,
    VersionConflict,
    may_match,
)

__all__ = ["MemoryBackend"]

CHANGES_KEPT = 10_000


class MemoryBackend:
    """Dicts behind one lock. Records are immutable, so reads hand them out as they are."""

    def __init__(self, changes_kept: int = CHANGES_KEPT) -> None:
        self._lock = threading.Lock()
        self._webtasks: dict[tuple[str, str], SealedWebtask] = {}
        self._tokens: dict[str, StoredToken] = {}
        self._changes: deque[Change] = deque(maxlen=changes_kept)
        self._seq = 0
        self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the store is closed")

    def _record(self, kind: ChangeKind, key: tuple[str, ...]) -> None:
        self._seq += 1
        self._changes.append(Change(self._seq, kind, key))

    # -- webtasks ----------------------------------------------------------------------------

    def put_sealed(
        self,
        container: str,
        name: str,
        content: SealedContent,
        *,
        expected_version: int | None = None,
    ) -> tuple[SealedWebtask, bool]:
        # A private copy of the clear meta: the caller's mapping may change later.
        content = SealedContent(
            content.code, content.code_hash, MappingProxyType(dict(content.meta)),
            content.meta_sealed, content.secrets,
        )  # fmt: skip
        with self._lock:
            self._check_open()
            now = format_time(time.time())
            current = self._webtasks.get((container, name))
            found = None if current is None else current.version
            if expected_version is not None and found != expected_version:
                raise VersionConflict(container, name, expected_version, found)
            if current is None:
                stored = SealedWebtask(container, name, content, 1, now, now)
            else:
                stored = SealedWebtask(
                    container, name, content, current.version + 1, current.created_at, now
                )
            self._webtasks[(container, name)] = stored
            self._record("webtask", (container, name))
        return stored, current is None

    def delete(self, container: str, name: str) -> bool:
        with self._lock:
            self._check_open()
            if self._webtasks.pop((container, name), None) is None:
                return False
            self._record("webtask", (container, name))
            return True

    def get_sealed(self, container: str, name: str) -> SealedWebtask | None:
        with self._lock:
            self._check_open()
            return self._webtasks.get((container, name))

    def list_sealed(self, container: str, meta_filter: Mapping[str, str]) -> list[SealedWebtask]:
        with self._lock:
            self._check_open()
            found = [w for (c, _), w in self._webtasks.items() if c == container]
        found.sort(key=lambda webtask: webtask.name)
        return [webtask for webtask in found if may_match(webtask.content.meta, meta_filter)]

    def count(self, container: str | None = None) -> int:
        with self._lock:
            self._check_open()
            if container is None:
                return len(self._webtasks)
            return sum(1 for c, _ in self._webtasks if c == container)

    def containers(self) -> list[str]:
        with self._lock:
            self._check_open()
            return sorted({c for c, _ in self._webtasks})

    # -- management tokens -----------------------------------------------------------------

    def add_token(self, token: StoredToken) -> None:
        with self._lock:
            self._check_open()
            if token.id in self._tokens:
                raise TokenExists(f"token id {token.id!r} exists")
            self._tokens[token.id] = token
            self._record("token", (token.id,))

    def get_token(self, token_id: str) -> StoredToken | None:
        with self._lock:
            self._check_open()
            return self._tokens.get(token_id)

    def revoke_token(self, token_id: str, revoked_at: str) -> StoredToken | None:
        with self._lock:
            self._check_open()
            token = self._tokens.get(token_id)
            if token is not None and token.revoked_at is None:
                token = dataclasses.replace(token, revoked_at=revoked_at)
                self._tokens[token_id] = token
                self._record("token", (token_id,))
            return token

    def list_tokens(self) -> list[StoredToken]:
        with self._lock:
            self._check_open()
            tokens = list(self._tokens.values())
        return sorted(tokens, key=lambda token: (token.created_at, token.id))

    # -- change feed -------------------------------------------------------------------------

    def change_cursor(self) -> int:
        with self._lock:
            self._check_open()
            return self._seq

    def changes_since(self, cursor: int, limit: int = 1000) -> ChangeBatch:
        with self._lock:
            self._check_open()
            low = self._changes[0].cursor if self._changes else self._seq + 1
            if cursor > self._seq or cursor < low - 1:
                return ChangeBatch(self._seq, [], False)
            changes = [change for change in self._changes if change.cursor > cursor][:limit]
        return ChangeBatch(changes[-1].cursor if changes else cursor, changes, True)

"""The SQLite backend: one file (WAL, synchronous=FULL), secrets only as sealed blobs.

Durability: every write is a single `BEGIN IMMEDIATE ... COMMIT` transaction and put
returns only after COMMIT, which with synchronous=FULL has fsynced the WAL. A crash
(kill -9, power loss) therefore leaves either the old row or the new one, never a mix,
and every write that put acknowledged is there after restart.

Secrets at rest: the `secrets` column holds SecretBox blobs bound to (container, name).
Meta values that equal one of the webtask's secret values (the documented samples copy
`auth0-extension-secret` into meta) are not written in clear either: they are null in the
`meta` JSON and sealed in `meta_sealed` (the sealing layer, _sealing.py, decides which).

Several processes may open the same file (SQLite locks it); each write also appends a row
to `changes` in the same transaction, the change feed other processes read.

Schema changes: bump SCHEMA_VERSION and append a migration step to _MIGRATIONS (the step
at index i upgrades user_version i to i + 1). Steps run in one transaction at open time.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from wtpy.contract import format_time

from ._base import (
    Change,
    ChangeBatch,
    SealedContent,
    SealedWebtask,
    StorageError,
    StoredToken,
    TokenExists,
    VersionConflict,
    may_match,
)

__all__ = ["SCHEMA_VERSION", "SqliteBackend"]

SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 5000
# The change feed keeps this many latest changes; a reader further behind starts over.
CHANGES_KEPT = 10_000

# Index i: the statements that upgrade schema version i to i + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE webtasks (
            container   TEXT    NOT NULL,
            name        TEXT    NOT NULL,
            code        TEXT    NOT NULL,
            meta        TEXT    NOT NULL,   -- JSON object; null where the value is in meta_sealed
            meta_sealed BLOB,               -- SecretBox blob (purpose "meta") or NULL
            secrets     BLOB    NOT NULL,   -- SecretBox blob (purpose "secrets")
            version     INTEGER NOT NULL CHECK (version >= 1),
            code_hash   TEXT    NOT NULL,   -- sha256 hex of the UTF-8 code
            created_at  TEXT    NOT NULL,   -- ISO 8601 UTC
            updated_at  TEXT    NOT NULL,
            PRIMARY KEY (container, name)
        )
        """,
    ),
    # 1 -> 2: scoped management tokens (see wtpy/runtime/_tokens.py). Only a SHA-256 of each
    # token is stored: the token itself is shown once, when it is created.
    (
        """
        CREATE TABLE tokens (
            id          TEXT    NOT NULL PRIMARY KEY,
            hash        TEXT    NOT NULL,   -- sha256 hex of the whole token string
            container   TEXT    NOT NULL,
            name        TEXT,               -- NULL: every webtask of the container
            description TEXT    NOT NULL DEFAULT '',
            created_at  TEXT    NOT NULL,   -- ISO 8601 UTC
            expires_at  TEXT,               -- ISO 8601 UTC or NULL (never)
            revoked_at  TEXT                -- ISO 8601 UTC or NULL (active)
        )
        """,
    ),
    # 2 -> 3: the change feed. AUTOINCREMENT: a seq is never reused, even after pruning.
    (
        """
        CREATE TABLE changes (
            seq         INTEGER PRIMARY KEY AUTOINCREMENT,
            kind        TEXT    NOT NULL,   -- 'webtask' or 'token'
            key         TEXT    NOT NULL    -- JSON array: [container, name] or [token id]
        )
        """,
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_TOKEN_COLUMNS = "id, hash, container, name, description, created_at, expires_at, revoked_at"

_COLUMNS = (
    "container, name, code, meta, meta_sealed, secrets, version, code_hash, created_at, updated_at"
)


class SqliteBackend:
    """SQLite (WAL, synchronous=FULL). Thread-safe.

    Two connections, each behind its own lock, after datasette (datasette/database.py):
    one writes (so writes are serialised, as SQLite does anyway), one reads, so a read
    never waits for a write's fsync (WAL readers see the last commit). Every call is a
    short primary-key or container scan, and sealing/opening happens outside (in the
    sealing layer). datasette also moves the writes onto a thread of their own behind an
    async facade; this interface is synchronous and the runtime calls it from threads.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        # Create the file private before SQLite does (it would use the umask); SQLite gives
        # the -wal and -shm files the database file's mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        conn = self._connect()
        try:
            self._migrate(conn)
            reader = self._connect()
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn
        self._reader: sqlite3.Connection | None = reader

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path),
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # guarded by a lock
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            for conn in (self._reader, self._conn):  # the writer last: it checkpoints the WAL
                if conn is not None:
                    conn.close()
            self._conn = self._reader = None

    def __enter__(self) -> SqliteBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._read() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def _db(self) -> sqlite3.Connection:
        """The write connection (call with the write lock held)."""
        if self._conn is None:
            raise StorageError("the store is closed")
        return self._conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock:
            if self._reader is None:
                raise StorageError("the store is closed")
            yield self._reader

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current > SCHEMA_VERSION:
                raise StorageError(
                    f"database schema version {current} is newer than this wtpy supports "
                    f"({SCHEMA_VERSION}); upgrade wtpy"
                )
            for step in _MIGRATIONS[current:]:
                for statement in step:
                    conn.execute(statement)
            if current != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE ... COMMIT transaction under the write lock."""
        with self._write_lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    @staticmethod
    def _record(conn: sqlite3.Connection, kind: str, key: tuple[str, ...]) -> None:
        """Append to the change feed (inside the write's transaction) and prune it."""
        cursor = conn.execute(
            "INSERT INTO changes (kind, key) VALUES (?, ?)",
            (kind, orjson.dumps(list(key)).decode()),
        )
        seq = cursor.lastrowid or 0
        if seq > CHANGES_KEPT:
            conn.execute("DELETE FROM changes WHERE seq <= ?", (seq - CHANGES_KEPT,))

    # -- webtasks ----------------------------------------------------------------------------

    def put_sealed(
        self,
        container: str,
        name: str,
        content: SealedContent,
        *,
        expected_version: int | None = None,
    ) -> tuple[SealedWebtask, bool]:
        """Create or replace container/name; (webtask, created)."""
        meta_json = orjson.dumps(dict(content.meta)).decode("utf-8")
        with self._write() as conn:
            now = format_time(time.time())
            row = conn.execute(
                "SELECT version, created_at FROM webtasks WHERE container = ? AND name = ?",
                (container, name),
            ).fetchone()
            found = None if row is None else int(row[0])
            if expected_version is not None and found != expected_version:
                raise VersionConflict(container, name, expected_version, found)
            if row is None:
                version, created_at = 1, now
                conn.execute(
                    f"INSERT INTO webtasks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (container, name, content.code, meta_json, content.meta_sealed,
                     content.secrets, version, content.code_hash, created_at, now),
                )  # fmt: skip
            else:
                version, created_at = int(row[0]) + 1, str(row[1])
                conn.execute(
                    "UPDATE webtasks SET code = ?, meta = ?, meta_sealed = ?, secrets = ?,"
                    " version = ?, code_hash = ?, updated_at = ?"
                    " WHERE container = ? AND name = ?",
                    (content.code, meta_json, content.meta_sealed, content.secrets, version,
                     content.code_hash, now, container, name),
                )  # fmt: skip
            self._record(conn, "webtask", (container, name))
        stored = SealedWebtask(container, name, content, version, created_at, now)
        return stored, row is None

    def delete(self, container: str, name: str) -> bool:
        """Remove container/name; False when it did not exist."""
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM webtasks WHERE container = ? AND name = ?", (container, name)
            )
            if cursor.rowcount > 0:
                self._record(conn, "webtask", (container, name))
            return cursor.rowcount > 0

    def get_sealed(self, container: str, name: str) -> SealedWebtask | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM webtasks WHERE container = ? AND name = ?",
                (container, name),
            ).fetchone()
        return None if row is None else self._decode(row)

    def list_sealed(self, container: str, meta_filter: Mapping[str, str]) -> list[SealedWebtask]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM webtasks WHERE container = ? ORDER BY name", (container,)
            ).fetchall()
        found = (self._decode(row) for row in rows)
        return [webtask for webtask in found if may_match(webtask.content.meta, meta_filter)]

    def count(self, container: str | None = None) -> int:
        """Number of webtasks, in one container or in all."""
        with self._read() as conn:
            if container is None:
                row = conn.execute("SELECT COUNT(*) FROM webtasks").fetchone()
            else:
                row = conn.execute(
                    "SELECT COUNT(*) FROM webtasks WHERE container = ?", (container,)
                ).fetchone()
        return int(row[0])

    def containers(self) -> list[str]:
        """Containers holding at least one webtask, sorted."""
        with self._read() as conn:
            rows = conn.execute("SELECT DISTINCT container FROM webtasks ORDER BY container")
            return [str(row[0]) for row in rows]

    # -- management tokens -----------------------------------------------------------------

    def add_token(self, token: StoredToken) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    f"INSERT INTO tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (token.id, token.hash, token.container, token.name, token.description,
                     token.created_at, token.expires_at, token.revoked_at),
                )  # fmt: skip
                self._record(conn, "token", (token.id,))
        except sqlite3.IntegrityError:
            raise TokenExists(f"token id {token.id!r} exists") from None

    def get_token(self, token_id: str) -> StoredToken | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id = ?", (token_id,)
            ).fetchone()
        return None if row is None else StoredToken(*row)

    def revoke_token(self, token_id: str, revoked_at: str) -> StoredToken | None:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (revoked_at, token_id),
            )
            if cursor.rowcount > 0:
                self._record(conn, "token", (token_id,))
            row = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id = ?", (token_id,)
            ).fetchone()
        return None if row is None else StoredToken(*row)

    def list_tokens(self) -> list[StoredToken]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id"
            ).fetchall()
        return [StoredToken(*row) for row in rows]

    # -- change feed -------------------------------------------------------------------------

    def change_cursor(self) -> int:
        with self._read() as conn:
            row = conn.execute("SELECT MAX(seq) FROM changes").fetchone()
        return int(row[0] or 0)

    def changes_since(self, cursor: int, limit: int = 1000) -> ChangeBatch:
        with self._read() as conn:
            # One read transaction: the bounds and the rows come from the same snapshot.
            conn.execute("BEGIN")
            try:
                low, high = conn.execute("SELECT MIN(seq), MAX(seq) FROM changes").fetchone()
                rows = conn.execute(
                    "SELECT seq, kind, key FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                    (cursor, limit),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        head = int(high or 0)
        # Changes up to low - 1 were pruned (AUTOINCREMENT never reuses a seq); a cursor
        # beyond the head comes from another database (restored from a backup, replaced).
        complete = cursor <= head and (low is None or cursor >= int(low) - 1)
        changes = [Change(int(seq), kind, tuple(orjson.loads(key))) for seq, kind, key in rows]
        if not complete:
            return ChangeBatch(head, [], False)
        return ChangeBatch(changes[-1].cursor if changes else cursor, changes, True)

    # -- decoding --------------------------------------------------------------------------

    @staticmethod
    def _decode(row: tuple[Any, ...]) -> SealedWebtask:
        container, name, code, meta_json, meta_sealed, secrets, version, code_hash, created, updated = row  # fmt: skip
        try:
            meta = orjson.loads(meta_json)
        except orjson.JSONDecodeError:
            meta = None
        if not isinstance(meta, dict) or not all(
            isinstance(v, str) or v is None for v in meta.values()
        ):
            raise StorageError(f"webtask {container}/{name}: stored meta is corrupt")
        content = SealedContent(code, code_hash, meta, meta_sealed, secrets)
        return SealedWebtask(container, name, content, int(version), created, updated)

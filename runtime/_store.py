"""The webtask store: one SQLite file (WAL, synchronous=FULL), secrets sealed by SecretBox.

Durability: every write is a single `BEGIN IMMEDIATE ... COMMIT` transaction and put()
returns only after COMMIT, which with synchronous=FULL has fsynced the WAL. A crash
(kill -9, power loss) therefore leaves either the old row or the new one, never a mix,
and every write that put() acknowledged is there after restart.

Secrets at rest: the `secrets` column holds SecretBox blobs bound to (container, name).
Meta values that equal one of the webtask's secret values (the documented samples copy
`auth0-extension-secret` into meta) are not written in clear either: they are null in the
`meta` JSON and sealed in `meta_sealed`. The API still returns the full meta.

Schema changes: bump SCHEMA_VERSION and append a migration step to _MIGRATIONS (the step
at index i upgrades user_version i to i + 1). Steps run in one transaction at open time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

import orjson

from ._crypto import SecretBox
from ._names import MAX_CODE_BYTES, MAX_NAME_LENGTH, valid_name

__all__ = ["SCHEMA_VERSION", "Store", "StoreError", "StoredToken", "Webtask"]

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 5000

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
    # 1 -> 2: scoped management tokens (see _tokens.py). Only a SHA-256 of each token is
    # stored: the token itself is shown once, when it is created.
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
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_TOKEN_COLUMNS = "id, hash, container, name, description, created_at, expires_at, revoked_at"

_COLUMNS = (
    "container, name, code, meta, meta_sealed, secrets, version, code_hash, created_at, updated_at"
)
_NO_FILTER: Mapping[str, str] = MappingProxyType({})


class StoreError(Exception):
    """The database cannot be used (closed, newer schema, corrupt row)."""


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


def _utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not valid_name(value):
        raise ValueError(
            f"invalid {what} name {value!r}: use 1 to {MAX_NAME_LENGTH} of the characters "
            "a-z A-Z 0-9 - . _ ~ ! $ + = : @ (not '.' or '..')"
        )
    return value


def _check_text(value: str, what: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode text (lone surrogate)") from None


def _check_map(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping of strings to strings, not {type(value).__name__}")
    checked: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError(f"{what} keys must be strings, got {type(key).__name__} {key!r}")
        if not isinstance(item, str):
            raise ValueError(f"{what} value for {key!r} must be a string, not {type(item).__name__}")
        _check_text(key, f"{what} key {key!r}")
        _check_text(item, f"{what} value for {key!r}")
        checked[key] = item
    return checked


def _check_code(code: object) -> str:
    if not isinstance(code, str):
        raise ValueError(f"code must be a string, not {type(code).__name__}")
    size = len(_check_text(code, "code"))
    if size > MAX_CODE_BYTES:
        raise ValueError(f"code is {size} bytes, above the limit of {MAX_CODE_BYTES}")
    return code


def _may_match(plain: Mapping[str, str | None], wanted: Mapping[str, str]) -> bool:
    """False when the clear meta already rules the row out (None = sealed, decide later)."""
    for key, value in wanted.items():
        if key not in plain:
            return False
        stored = plain[key]
        if stored is not None and stored != value:
            return False
    return True


class Store:
    """SQLite (WAL, synchronous=FULL). One writer lock, many readers. Thread-safe.

    One connection serialised by a lock: every call is a short primary-key or container
    scan, and decryption happens outside the lock. Returned Webtask objects hold fresh
    dicts; the store never keeps references to them.
    """

    def __init__(self, path: Path, box: SecretBox) -> None:
        self.path = Path(path)
        self._box = box
        self._lock = threading.Lock()
        # Create the file private before SQLite does (it would use the umask); SQLite gives
        # the -wal and -shm files the database file's mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        conn = sqlite3.connect(
            str(self.path),
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # guarded by self._lock
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db().execute("PRAGMA user_version").fetchone()[0])

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is closed")
        return self._conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current > SCHEMA_VERSION:
                raise StoreError(
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

    # -- writes ----------------------------------------------------------------------------

    def put(
        self,
        container: str,
        name: str,
        code: str,
        meta: Mapping[str, str] | None,
        secrets: Mapping[str, str] | None,
    ) -> tuple[Webtask, bool]:
        """Create or replace container/name; returns (webtask, created). Raises ValueError."""
        _check_name(container, "container")
        _check_name(name, "webtask")
        code = _check_code(code)
        meta = _check_map(meta, "meta")
        secrets = _check_map(secrets, "secrets")

        # Seal before taking the lock. Meta values equal to a secret value are sealed too.
        secret_values = set(secrets.values())
        hidden = {key: value for key, value in meta.items() if value in secret_values}
        plain = {key: (None if key in hidden else value) for key, value in meta.items()}
        meta_json = orjson.dumps(plain).decode("utf-8")
        meta_sealed = self._box.seal(container, name, hidden, purpose="meta") if hidden else None
        secrets_blob = self._box.seal(container, name, secrets)
        code_hash = hashlib.sha256(code.encode("utf-8")).hexdigest()

        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = _utcnow()
                row = conn.execute(
                    "SELECT version, created_at FROM webtasks WHERE container = ? AND name = ?",
                    (container, name),
                ).fetchone()
                if row is None:
                    version, created_at = 1, now
                    conn.execute(
                        f"INSERT INTO webtasks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (container, name, code, meta_json, meta_sealed, secrets_blob,
                         version, code_hash, created_at, now),
                    )  # fmt: skip
                else:
                    version, created_at = int(row[0]) + 1, str(row[1])
                    conn.execute(
                        "UPDATE webtasks SET code = ?, meta = ?, meta_sealed = ?, secrets = ?,"
                        " version = ?, code_hash = ?, updated_at = ?"
                        " WHERE container = ? AND name = ?",
                        (code, meta_json, meta_sealed, secrets_blob, version, code_hash, now,
                         container, name),
                    )  # fmt: skip
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        webtask = Webtask(
            container=container,
            name=name,
            code=code,
            meta=dict(meta),
            secrets=dict(secrets),
            version=version,
            created_at=created_at,
            updated_at=now,
            code_hash=code_hash,
        )
        return webtask, row is None

    def delete(self, container: str, name: str) -> bool:
        """Remove container/name; False when it did not exist."""
        if not (valid_name(container) and valid_name(name)):
            return False
        with self._lock:
            conn = self._db()
            cursor = conn.execute(
                "DELETE FROM webtasks WHERE container = ? AND name = ?", (container, name)
            )  # autocommit: one statement is one transaction
            return cursor.rowcount > 0

    # -- reads -----------------------------------------------------------------------------

    def get(self, container: str, name: str) -> Webtask | None:
        """Primary-key lookup; None when absent. Raises SecretsError if the row will not open."""
        if not (valid_name(container) and valid_name(name)):
            return None  # the store only ever holds valid names
        with self._lock:
            row = (
                self._db()
                .execute(
                    f"SELECT {_COLUMNS} FROM webtasks WHERE container = ? AND name = ?",
                    (container, name),
                )
                .fetchone()
            )
        return None if row is None else self._decode(row)

    def list(
        self, container: str, meta_filter: Mapping[str, str] | None = _NO_FILTER
    ) -> list[Webtask]:
        """Webtasks of `container` sorted by name whose meta has every filter key=value (AND)."""
        wanted = _check_map(meta_filter, "meta filter")
        if not valid_name(container):
            return []
        with self._lock:
            rows = (
                self._db()
                .execute(
                    f"SELECT {_COLUMNS} FROM webtasks WHERE container = ? ORDER BY name",
                    (container,),
                )
                .fetchall()
            )
        result = []
        for row in rows:
            # Cheap pre-check on the clear meta; sealed (null) values are checked after opening.
            plain = self._load_meta(row)
            if not _may_match(plain, wanted):
                continue
            webtask = self._decode(row, plain)
            if all(webtask.meta.get(k) == v for k, v in wanted.items()):
                result.append(webtask)
        return result

    def count(self, container: str | None = None) -> int:
        """Number of webtasks, in one container or in all."""
        with self._lock:
            if container is None:
                row = self._db().execute("SELECT COUNT(*) FROM webtasks").fetchone()
            else:
                row = (
                    self._db()
                    .execute("SELECT COUNT(*) FROM webtasks WHERE container = ?", (container,))
                    .fetchone()
                )
        return int(row[0])

    def containers(self) -> list[str]:
        """Containers holding at least one webtask, sorted."""
        with self._lock:
            rows = self._db().execute("SELECT DISTINCT container FROM webtasks ORDER BY container")
            return [str(row[0]) for row in rows]

    # -- management tokens -----------------------------------------------------------------

    def add_token(self, token: StoredToken) -> None:
        """Insert a new token row (one autocommitted statement). Raises sqlite3.IntegrityError
        when the id exists."""
        with self._lock:
            self._db().execute(
                f"INSERT INTO tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (token.id, token.hash, token.container, token.name, token.description,
                 token.created_at, token.expires_at, token.revoked_at),
            )  # fmt: skip

    def revoke_token(self, token_id: str, revoked_at: str) -> StoredToken | None:
        """Mark a token revoked (an already revoked one keeps its first revocation time).
        Returns the row as it is now, or None when there is no such token."""
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                    (revoked_at, token_id),
                )
                row = conn.execute(
                    f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id = ?", (token_id,)
                ).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        return None if row is None else StoredToken(*row)

    def tokens(self) -> list[StoredToken]:
        """Every token row (active, expired and revoked), oldest first."""
        with self._lock:
            rows = self._db().execute(
                f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id"
            ).fetchall()
        return [StoredToken(*row) for row in rows]

    # -- decoding --------------------------------------------------------------------------

    @staticmethod
    def _load_meta(row: Iterable[Any]) -> dict[str, str | None]:
        container, name, _code, meta_json = tuple(row)[:4]
        try:
            meta = orjson.loads(meta_json)
        except orjson.JSONDecodeError:
            meta = None
        if not isinstance(meta, dict) or not all(
            isinstance(v, str) or v is None for v in meta.values()
        ):
            raise StoreError(f"webtask {container}/{name}: stored meta is corrupt")
        return meta

    def _decode(self, row: tuple[Any, ...], plain: dict[str, str | None] | None = None) -> Webtask:
        container, name, code, _meta, meta_sealed, secrets_blob, version, code_hash, created, updated = row  # fmt: skip
        if plain is None:
            plain = self._load_meta(row)
        secrets = self._box.open(container, name, secrets_blob)
        hidden = (
            self._box.open(container, name, meta_sealed, purpose="meta")
            if meta_sealed is not None
            else {}
        )
        meta: dict[str, str] = {}
        for key, value in plain.items():
            if value is None:
                if key not in hidden:
                    raise StoreError(f"webtask {container}/{name}: stored meta is corrupt")
                value = hidden[key]
            meta[key] = value
        return Webtask(
            container=container,
            name=name,
            code=code,
            meta=meta,
            secrets=secrets,
            version=int(version),
            created_at=created,
            updated_at=updated,
            code_hash=code_hash,
        )

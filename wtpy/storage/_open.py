"""open_storage(url): the backend named by a database URL, behind the sealing layer."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from ._base import Backend, StorageError
from ._crypto import SecretBox
from ._memory import MemoryBackend
from ._sealing import SealedStorage
from ._sqlite import SqliteBackend

__all__ = ["DB_FILE", "DatabaseURL", "default_database_url", "open_storage", "parse_database_url"]

# The SQLite file in the data dir (the name wtpy has always used).
DB_FILE = "wtpy.sqlite3"
_SUPPORTED = "sqlite:///ABSOLUTE/PATH or memory://"


class DatabaseURL(NamedTuple):
    scheme: str  # "sqlite" or "memory"
    path: Path | None  # the SQLite file


def default_database_url(data_dir: Path) -> str:
    return f"sqlite://{(Path(data_dir).expanduser().absolute() / DB_FILE).as_posix()}"


def parse_database_url(url: str) -> DatabaseURL:
    """Check a database URL; StorageError (saying what is accepted) when wtpy cannot use it."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise StorageError(f"database URL {url!r} has no scheme; use {_SUPPORTED}")
    if scheme == "memory":
        if rest:
            raise StorageError(f"database URL {url!r}: memory:// takes nothing after the scheme")
        return DatabaseURL("memory", None)
    if scheme == "sqlite":
        if not rest.startswith("/") or rest.rstrip("/") == "":
            raise StorageError(
                f"database URL {url!r}: give the SQLite file's absolute path, sqlite:///ABSOLUTE/PATH"
            )
        return DatabaseURL("sqlite", Path(rest))
    # postgresql:// comes with issue 15.
    raise StorageError(f"database URL scheme {scheme!r} is not supported; use {_SUPPORTED}")


def open_storage(url: str, box: SecretBox) -> SealedStorage:
    """The Storage for `url` (see parse_database_url), its secrets sealed by `box`."""
    parsed = parse_database_url(url)
    backend: Backend
    if parsed.scheme == "memory":
        backend = MemoryBackend()
    else:
        assert parsed.path is not None
        backend = SqliteBackend(parsed.path)
    return SealedStorage(backend, box)

"""wtpy.storage: where webtasks and scoped tokens live.

`open_storage(url, box)` gives a `Storage` (see _base.py for the interface): a backend
(SQLite file, or memory) behind the one sealing layer that keeps secrets encrypted.
"""

from __future__ import annotations

from ._base import (
    Backend,
    Change,
    ChangeBatch,
    ChangeFeed,
    ChangeKind,
    SealedContent,
    SealedWebtask,
    SealedWebtaskStore,
    Storage,
    StorageError,
    StoredToken,
    TokenExists,
    TokenStore,
    VersionConflict,
    Webtask,
    WebtaskStore,
)
from ._crypto import (
    ENV_KEY,
    KEY_BYTES,
    KEY_FILE,
    SecretBox,
    SecretKeyError,
    SecretsError,
    encode_key,
    generate_key,
)
from ._memory import MemoryBackend
from ._open import DB_FILE, DatabaseURL, default_database_url, open_storage, parse_database_url
from ._sealing import SealedStorage
from ._sqlite import SCHEMA_VERSION, SqliteBackend

__all__ = [
    "DB_FILE",
    "ENV_KEY",
    "KEY_BYTES",
    "KEY_FILE",
    "SCHEMA_VERSION",
    "Backend",
    "Change",
    "ChangeBatch",
    "ChangeFeed",
    "ChangeKind",
    "DatabaseURL",
    "MemoryBackend",
    "SealedContent",
    "SealedStorage",
    "SealedWebtask",
    "SealedWebtaskStore",
    "SecretBox",
    "SecretKeyError",
    "SecretsError",
    "SqliteBackend",
    "Storage",
    "StorageError",
    "StoredToken",
    "TokenExists",
    "TokenStore",
    "VersionConflict",
    "Webtask",
    "WebtaskStore",
    "default_database_url",
    "encode_key",
    "generate_key",
    "open_storage",
    "parse_database_url",
]

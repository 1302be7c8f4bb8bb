"""Secrets sealing, shared by every backend: Storage over a Backend of opaque blobs.

`SealedStorage` seals a webtask's secrets (and the meta values that equal one of them)
with SecretBox before a backend sees them, and opens them on the way back, so a backend
stores only blobs bound to their webtask and column. Tokens and the change feed pass
through: a token row holds only a hash.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Mapping
from types import MappingProxyType, TracebackType

from ._base import (
    Backend,
    ChangeBatch,
    SealedContent,
    SealedWebtask,
    StorageError,
    StoredToken,
    Webtask,
)
from ._crypto import SecretBox

__all__ = ["SealedStorage"]

_NO_FILTER: Mapping[str, str] = MappingProxyType({})


def _str_map(value: Mapping[str, str] | None, what: str) -> dict[str, str]:
    """A private copy. Only a type check: the domain validated the content; a non-string
    here would be stored and then refused on every read."""
    if value is None:
        return {}
    copy = dict(value)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in copy.items()):
        raise TypeError(f"{what} must map strings to strings")
    return copy


class SealedStorage:
    """The runtime's Storage: any Backend, with secrets sealed by `box`. Thread-safe when
    the backend is. Returned Webtask objects hold fresh dicts."""

    def __init__(self, backend: Backend, box: SecretBox) -> None:
        self.backend = backend
        self._box = box

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> SealedStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- webtasks ----------------------------------------------------------------------------

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
        if not isinstance(code, str):
            raise TypeError("code must be a string")
        meta = _str_map(meta, "meta")
        secrets = _str_map(secrets, "secrets")
        # Meta values equal to a secret value are sealed too.
        secret_values = set(secrets.values())
        hidden = {key: value for key, value in meta.items() if value in secret_values}
        content = SealedContent(
            code=code,
            code_hash=hashlib.sha256(code.encode("utf-8")).hexdigest(),
            meta={key: (None if key in hidden else value) for key, value in meta.items()},
            meta_sealed=self._box.seal(container, name, hidden, purpose="meta") if hidden else None,
            secrets=self._box.seal(container, name, secrets),
        )
        stored, created = self.backend.put_sealed(
            container, name, content, expected_version=expected_version
        )
        return self._webtask(stored, meta, secrets), created

    def get(self, container: str, name: str) -> Webtask | None:
        """None when absent. Raises SecretsError if the secrets will not open."""
        stored = self.backend.get_sealed(container, name)
        return None if stored is None else self._open(stored)

    def list(
        self, container: str, meta_filter: Mapping[str, str] | None = _NO_FILTER
    ) -> list[Webtask]:
        wanted = _str_map(meta_filter, "meta filter")
        # The backend already dropped what the clear meta rules out; sealed values are
        # checked here, after opening.
        opened = (self._open(stored) for stored in self.backend.list_sealed(container, wanted))
        return [w for w in opened if all(w.meta.get(k) == v for k, v in wanted.items())]

    def delete(self, container: str, name: str) -> bool:
        return self.backend.delete(container, name)

    def count(self, container: str | None = None) -> int:
        return self.backend.count(container)

    def containers(self) -> builtins.list[str]:
        return self.backend.containers()

    def _open(self, stored: SealedWebtask) -> Webtask:
        container, name, content = stored.container, stored.name, stored.content
        secrets = self._box.open(container, name, content.secrets)
        hidden = (
            self._box.open(container, name, content.meta_sealed, purpose="meta")
            if content.meta_sealed is not None
            else {}
        )
        meta: dict[str, str] = {}
        for key, value in content.meta.items():
            if value is None:
                if key not in hidden:
                    raise StorageError(f"webtask {container}/{name}: stored meta is corrupt")
                value = hidden[key]
            meta[key] = value
        return self._webtask(stored, meta, secrets)

    @staticmethod
    def _webtask(stored: SealedWebtask, meta: dict[str, str], secrets: dict[str, str]) -> Webtask:
        return Webtask(
            container=stored.container,
            name=stored.name,
            code=stored.content.code,
            meta=dict(meta),
            secrets=dict(secrets),
            version=stored.version,
            created_at=stored.created_at,
            updated_at=stored.updated_at,
            code_hash=stored.content.code_hash,
        )

    # -- tokens and the change feed: nothing secret, straight through ------------------------

    def add_token(self, token: StoredToken) -> None:
        self.backend.add_token(token)

    def get_token(self, token_id: str) -> StoredToken | None:
        return self.backend.get_token(token_id)

    def list_tokens(self) -> builtins.list[StoredToken]:
        return self.backend.list_tokens()

    def revoke_token(self, token_id: str, revoked_at: str) -> StoredToken | None:
        return self.backend.revoke_token(token_id, revoked_at)

    def change_cursor(self) -> int:
        return self.backend.change_cursor()

    def changes_since(self, cursor: int, limit: int = 1000) -> ChangeBatch:
        return self.backend.changes_since(cursor, limit)

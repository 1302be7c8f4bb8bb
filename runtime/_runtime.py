"""The server's state: store, secrets box, admin token, worker pool and the webtask cache."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from ._access import Principal
from ._auth import load_or_create_admin_token
from ._crypto import SecretBox
from ._datadir import acquire_data_dir_lock, ensure_data_dir
from ._logs import LogHub
from ._pool import WorkerPool
from ._settings import UNSAFE_NO_OS_SANDBOX_ENV, Settings
from ._store import Store, StoredToken, Webtask
from ._tokens import TokenRegistry, format_time, hash_token, new_scoped_token
from ._webtasks import check_meta, merge_patch

__all__ = ["Runtime"]

logger = logging.getLogger("wtpy.runtime")


class Runtime:
    """Owns everything that lives as long as the server. Hot-path reads come from memory.

    Only this process writes the data dir (enforced by a lock file), so the in-memory
    cache is invalidated right here on every write and never goes stale.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.admin_token = ""
        self.admin_token_created = False
        self.pool = WorkerPool(
            settings.workers,
            memory_mb=settings.worker_memory_mb,
            max_jobs_per_worker=settings.worker_max_jobs,
            os_sandbox=settings.os_sandbox,
        )
        # Real-time logs (history ring buffer + SSE followers).
        self.logs = LogHub(settings.log_history, ping_interval=settings.log_ping_interval)
        self._store: Store | None = None
        self._lock_handle: Any = None
        self._cache: dict[tuple[str, str], Webtask] = {}
        self._write_lock = asyncio.Lock()
        # Scoped management tokens, all in memory (see _tokens.py); loaded at start.
        self.tokens = TokenRegistry()

    async def start(self) -> None:
        data_dir = ensure_data_dir(self.settings.data_dir)
        self._lock_handle = acquire_data_dir_lock(data_dir)
        box = SecretBox.from_data_dir(data_dir)
        self._store = Store(data_dir / "wtpy.sqlite3", box)
        self.tokens = TokenRegistry(self._store.tokens())
        self.admin_token, self.admin_token_created = load_or_create_admin_token(data_dir)
        if not self.settings.os_sandbox:
            logger.warning(
                "*** the OS sandbox is OFF (%s / --unsafe-no-os-sandbox): hooks run under "
                "RestrictedPython and rlimits only; a hook that escapes the language layer owns "
                "the worker process and whatever it can reach. Development only. ***",
                UNSAFE_NO_OS_SANDBOX_ENV,
            )
        await self.pool.start()

    async def close(self) -> None:
        await self.pool.close()
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("runtime is not started")
        return self._store

    def cached(self, container: str, name: str) -> Webtask | None:
        """The webtask if it is in memory (no store read); None says nothing about the store."""
        return self._cache.get((container, name))

    async def get(self, container: str, name: str) -> Webtask | None:
        key = (container, name)
        webtask = self._cache.get(key)
        if webtask is None:
            webtask = await asyncio.to_thread(self.store.get, container, name)
            if webtask is not None:
                self._cache[key] = webtask
        return webtask

    async def list(self, container: str, meta_filter: Mapping[str, str]) -> list[Webtask]:
        return await asyncio.to_thread(self.store.list, container, dict(meta_filter))

    def authenticate(self, token: str) -> Principal:
        """Who presents `token`: the admin or a scoped token (Unauthorized, Forbidden)."""
        return self.tokens.authenticate(token, self.admin_token)

    async def put(
        self, container: str, name: str, code: str, meta: dict[str, str], secrets: dict[str, str]
    ) -> tuple[Webtask, bool]:
        """Create or replace a webtask; Invalid when its meta breaks the rules (_webtasks.py)."""
        check_meta(meta, self.settings.max_timeout)
        async with self._write_lock:
            return await self._put(container, name, code, meta, secrets)

    async def patch(
        self,
        container: str,
        name: str,
        code: str | None,
        meta_patch: Mapping[str, Any],
        secrets_patch: Mapping[str, Any],
    ) -> Webtask | None:
        # Read-modify-write under the write lock so concurrent patches never lose an update,
        # and the merged meta is checked on the very version it replaces: a bad patch
        # (Invalid) changes nothing. None when there is no such webtask.
        async with self._write_lock:
            current = await asyncio.to_thread(self.store.get, container, name)
            if current is None:
                return None
            meta = merge_patch(current.meta, meta_patch)
            check_meta(meta, self.settings.max_timeout)
            webtask, _ = await self._put(
                container,
                name,
                current.code if code is None else code,
                meta,
                merge_patch(current.secrets, secrets_patch),
            )
            return webtask

    async def create_token(
        self, container: str, name: str | None, description: str, expires_ts: float | None
    ) -> tuple[str, StoredToken]:
        """(token, row): the token string exists only in this return value."""
        token_id, token = new_scoped_token()
        row = StoredToken(
            id=token_id,
            hash=hash_token(token),
            container=container,
            name=name,
            description=description,
            created_at=format_time(time.time()),
            expires_at=None if expires_ts is None else format_time(expires_ts),
            revoked_at=None,
        )
        async with self._write_lock:
            await asyncio.to_thread(self.store.add_token, row)
            self.tokens.put(row)
        return token, row

    async def revoke_token(self, token_id: str) -> StoredToken | None:
        """Revoke for good; effective for the next request once this returns."""
        async with self._write_lock:
            row = await asyncio.to_thread(self.store.revoke_token, token_id, format_time(time.time()))
            if row is not None:
                self.tokens.put(row)
            return row

    async def delete(self, container: str, name: str) -> bool:
        async with self._write_lock:
            self._cache.pop((container, name), None)
            return await asyncio.to_thread(self.store.delete, container, name)

    async def _put(
        self, container: str, name: str, code: str, meta: dict[str, str], secrets: dict[str, str]
    ) -> tuple[Webtask, bool]:
        # Drop the cached copy first: if the write fails, the next read reloads from disk.
        self._cache.pop((container, name), None)
        webtask, created = await asyncio.to_thread(
            self.store.put, container, name, code, meta, secrets
        )
        self._cache[(container, name)] = webtask
        return webtask, created

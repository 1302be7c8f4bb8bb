"""The server's state: storage, admin token, worker pool and the webtask cache."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from wtpy.files import acquire_data_dir_lock, ensure_data_dir
from wtpy.sandbox import WorkerPool
from wtpy.storage import SecretBox, Storage, StoredToken, VersionConflict, Webtask, open_storage

from ._access import Principal
from ._auth import load_or_create_admin_token
from ._logs import LogHub
from ._settings import UNSAFE_NO_OS_SANDBOX_ENV, Settings
from ._tokens import TokenRegistry, format_time, hash_token, new_scoped_token
from ._webtasks import check_meta, merge_patch

__all__ = ["Runtime"]

logger = logging.getLogger("wtpy.runtime")


class Runtime:
    """Owns everything that lives as long as the server. Hot-path reads come from memory.

    This process's writes update the in-memory cache and token registry right away.
    Writes by other servers sharing the database arrive through the storage's change
    feed, read every `settings.sync_interval` seconds (`sync`). One server per data dir
    (a lock file) still holds: the data dir keeps the admin token and the secret key.
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
        self._storage: Storage | None = None
        self._lock_handle: Any = None
        self._cache: dict[tuple[str, str], Webtask] = {}
        # Bumped by every cache invalidation: a read that raced one does not cache.
        self._generation = 0
        self._write_lock = asyncio.Lock()
        # Scoped management tokens, all in memory (see _tokens.py); loaded at start.
        self.tokens = TokenRegistry()
        self._cursor = 0  # the change feed position this process has applied
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        data_dir = ensure_data_dir(self.settings.data_dir)
        self._lock_handle = acquire_data_dir_lock(data_dir)
        box = SecretBox.from_data_dir(data_dir)
        storage = self._storage = open_storage(self.settings.database_url, box)
        # The cursor before the load: a change in between is applied again, never lost.
        self._cursor = storage.change_cursor()
        self.tokens = TokenRegistry(storage.list_tokens())
        self.admin_token, self.admin_token_created = load_or_create_admin_token(data_dir)
        if not self.settings.os_sandbox:
            logger.warning(
                "*** the OS sandbox is OFF (%s / --unsafe-no-os-sandbox): hooks run under "
                "RestrictedPython and rlimits only; a hook that escapes the language layer owns "
                "the worker process and whatever it can reach. Development only. ***",
                UNSAFE_NO_OS_SANDBOX_ENV,
            )
        await self.pool.start()
        self._follower = asyncio.create_task(self._follow_changes())

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        await self.pool.close()
        if self._storage is not None:
            self._storage.close()
            self._storage = None
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            raise RuntimeError("runtime is not started")
        return self._storage

    async def sync(self) -> None:
        """Apply the change feed: drop cached webtasks and reload tokens that changed
        (written by any process; this one's own writes come back too, harmlessly)."""
        async with self._write_lock:  # a token reload never overtakes a local revocation
            while True:
                batch = await asyncio.to_thread(self.storage.changes_since, self._cursor)
                if not batch.complete:  # too far behind: start over from the storage
                    self._invalidate(None)
                    self.tokens = TokenRegistry(await asyncio.to_thread(self.storage.list_tokens))
                for change in batch.changes:
                    if change.kind == "webtask":
                        self._invalidate((change.key[0], change.key[1]))
                    elif change.kind == "token":
                        row = await asyncio.to_thread(self.storage.get_token, change.key[0])
                        if row is not None:
                            self.tokens.put(row)
                self._cursor = batch.cursor
                if not batch.changes:
                    return

    async def _follow_changes(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sync_interval)
            try:
                await self.sync()
            except Exception:  # a storage hiccup must not end the follower
                logger.exception("reading the storage change feed failed")

    def _invalidate(self, key: tuple[str, str] | None) -> None:
        self._generation += 1
        if key is None:
            self._cache.clear()
        else:
            self._cache.pop(key, None)

    def cached(self, container: str, name: str) -> Webtask | None:
        """The webtask if it is in memory (no store read); None says nothing about the store."""
        return self._cache.get((container, name))

    async def get(self, container: str, name: str) -> Webtask | None:
        key = (container, name)
        webtask = self._cache.get(key)
        if webtask is None:
            generation = self._generation
            webtask = await asyncio.to_thread(self.storage.get, container, name)
            if webtask is not None and generation == self._generation:
                self._cache[key] = webtask
        return webtask

    async def list(self, container: str, meta_filter: Mapping[str, str]) -> list[Webtask]:
        return await asyncio.to_thread(self.storage.list, container, dict(meta_filter))

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
        # (Invalid) changes nothing. expected_version catches a write by another server in
        # between (then merge again). None when there is no such webtask.
        async with self._write_lock:
            while True:
                current = await asyncio.to_thread(self.storage.get, container, name)
                if current is None:
                    return None
                meta = merge_patch(current.meta, meta_patch)
                check_meta(meta, self.settings.max_timeout)
                try:
                    webtask, _ = await self._put(
                        container,
                        name,
                        current.code if code is None else code,
                        meta,
                        merge_patch(current.secrets, secrets_patch),
                        expected_version=current.version,
                    )
                except VersionConflict:
                    continue
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
            await asyncio.to_thread(self.storage.add_token, row)
            self.tokens.put(row)
        return token, row

    async def revoke_token(self, token_id: str) -> StoredToken | None:
        """Revoke for good; effective for the next request once this returns."""
        async with self._write_lock:
            row = await asyncio.to_thread(
                self.storage.revoke_token, token_id, format_time(time.time())
            )
            if row is not None:
                self.tokens.put(row)
            return row

    async def delete(self, container: str, name: str) -> bool:
        async with self._write_lock:
            self._invalidate((container, name))
            try:
                return await asyncio.to_thread(self.storage.delete, container, name)
            finally:
                self._invalidate((container, name))  # a read that overlapped it does not cache

    async def _put(
        self,
        container: str,
        name: str,
        code: str,
        meta: dict[str, str],
        secrets: dict[str, str],
        *,
        expected_version: int | None = None,
    ) -> tuple[Webtask, bool]:
        # Drop the cached copy first: if the write fails, the next read reloads from storage.
        self._invalidate((container, name))
        webtask, created = await asyncio.to_thread(
            partial(self.storage.put, expected_version=expected_version),
            container, name, code, meta, secrets,
        )  # fmt: skip
        self._invalidate((container, name))  # a read that overlapped the write does not cache
        self._cache[(container, name)] = webtask
        return webtask, created

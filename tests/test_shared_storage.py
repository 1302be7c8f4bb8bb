"""The runtime over wtpy.storage: two servers sharing one database see each other's writes
and revocations through the change feed; `memory://`; database URLs; and a data dir
written by schema version 2 (before the change feed) opens and serves."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import CC_BODY, WtpyServer, cc_meta

from wtpy.runtime import Runtime, Settings
from wtpy.runtime._tokens import hash_token, new_scoped_token
from wtpy.storage import (
    ENV_KEY,
    SCHEMA_VERSION,
    SecretBox,
    StorageError,
    encode_key,
    generate_key,
    open_storage,
    parse_database_url,
)

HOOK = (
    "def hook(client, scope, audience, context):\n"
    "    return {'secret': context['webtask']['secrets'].get('auth0-extension-secret')}\n"
)


class _NoPool:
    """The worker pool is not under test here."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@asynccontextmanager
async def running(data_dir: Path, **fields: Any) -> AsyncIterator[Runtime]:
    settings = Settings(data_dir=data_dir, announce_token=False, workers=1, **fields)
    runtime = Runtime(settings)
    runtime.pool = _NoPool()  # type: ignore[assignment]
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.close()


@pytest.fixture
def shared_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Servers sharing a database share the secrets key (each has its own data dir).
    monkeypatch.setenv(ENV_KEY, encode_key(generate_key()))


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "the change never arrived"
        await asyncio.sleep(0.02)


def test_a_revocation_by_one_server_reaches_the_other(tmp_path: Path, shared_key: None) -> None:
    database = f"sqlite://{tmp_path / 'shared.sqlite3'}"

    async def scenario() -> None:
        async with (
            running(tmp_path / "one", database=database, sync_interval=3600) as one,
            running(tmp_path / "two", database=database, sync_interval=3600) as two,
        ):
            token, row = await one.create_token("acme", None, "", None)
            with pytest.raises(Exception, match="not a valid"):  # two has not read the feed yet
                two.tokens.authenticate(token, two.admin_token)
            await two.sync()
            assert two.tokens.authenticate(token, two.admin_token).container == "acme"

            await one.revoke_token(row.id)
            assert two.tokens.authenticate(token, two.admin_token).container == "acme"  # cached
            await two.sync()  # the next check
            with pytest.raises(Exception, match=f"id {row.id}\\) was revoked"):
                two.tokens.authenticate(token, two.admin_token)

    asyncio.run(scenario())


_REVOKER = """
import sys
from wtpy.storage import SecretBox, open_storage

with open_storage(sys.argv[1], SecretBox.from_data_dir(sys.argv[2])) as storage:
    print(storage.revoke_token(sys.argv[3], "2030-01-01T00:00:00Z").revoked_at)
"""


def test_a_revocation_by_another_process_is_seen_on_the_next_check(
    tmp_path: Path, shared_key: None
) -> None:
    database = f"sqlite://{tmp_path / 'shared.sqlite3'}"

    async def scenario() -> None:
        async with running(tmp_path / "server", database=database, sync_interval=3600) as server:
            token, row = await server.create_token("acme", "rule", "", None)
            assert server.tokens.authenticate(token, server.admin_token).name == "rule"
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _REVOKER, database, str(tmp_path / "other"), row.id,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await child.communicate()
            assert child.returncode == 0 and out.decode().strip() == "2030-01-01T00:00:00Z"
            await server.sync()
            with pytest.raises(Exception, match="revoked at 2030-01-01T00:00:00Z"):
                server.tokens.authenticate(token, server.admin_token)

    asyncio.run(scenario())


def test_webtask_writes_reach_the_other_servers_cache(tmp_path: Path, shared_key: None) -> None:
    database = f"sqlite://{tmp_path / 'shared.sqlite3'}"

    async def scenario() -> None:
        async with (
            running(tmp_path / "one", database=database, sync_interval=3600) as one,
            # This one follows the feed by itself, every 20 ms.
            running(tmp_path / "two", database=database, sync_interval=0.02) as two,
        ):
            await one.put("acme", "rule", HOOK, cc_meta(), {"s": "v1"})
            first = await two.get("acme", "rule")
            assert first is not None and two.cached("acme", "rule") == first
            await one.patch("acme", "rule", None, {}, {"s": "v2"})

            async def updated() -> bool:
                webtask = await two.get("acme", "rule")
                return webtask is not None and webtask.secrets == {"s": "v2"}

            await _eventually(updated)
            # A patch on two merges over one's latest write, never over a stale cache.
            patched = await two.patch("acme", "rule", None, {"extra": "x"}, {})
            assert patched is not None and patched.version == 3 and patched.secrets == {"s": "v2"}
            await one.sync()
            again = await one.get("acme", "rule")
            assert again is not None and again.version == 3 and again.meta["extra"] == "x"

            assert await one.delete("acme", "rule")

            async def deleted() -> bool:
                return await two.get("acme", "rule") is None

            await _eventually(deleted)

    asyncio.run(scenario())


def test_a_read_that_overlaps_a_write_does_not_cache_the_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with running(tmp_path, database="memory://") as runtime:
            await runtime.put("acme", "rule", HOOK, cc_meta(), {"s": "v1"})
            await runtime.sync()  # its own write comes back through the feed: not cached now
            assert runtime.cached("acme", "rule") is None
            storage = runtime.storage
            writing, write, read, answer = (threading.Event() for _ in range(4))
            real_put, real_get = storage.put, storage.get

            def slow_put(*args: Any, **kwargs: Any) -> Any:
                writing.set()
                write.wait(10)
                return real_put(*args, **kwargs)

            def slow_get(container: str, name: str) -> Any:
                webtask = real_get(container, name)
                read.set()
                answer.wait(10)
                return webtask

            monkeypatch.setattr(storage, "put", slow_put)
            monkeypatch.setattr(storage, "get", slow_get)
            writer = asyncio.create_task(runtime.put("acme", "rule", HOOK, cc_meta(), {"s": "v2"}))
            await asyncio.to_thread(writing.wait, 10)
            reader = asyncio.create_task(runtime.get("acme", "rule"))  # reads v1 ...
            await asyncio.to_thread(read.wait, 10)
            write.set()
            await writer  # ... v2 is written and cached ...
            answer.set()
            old = await reader  # ... and then the read of v1 returns
            assert old is not None and old.secrets == {"s": "v1"}
            cached = runtime.cached("acme", "rule")
            assert cached is not None and cached.secrets == {"s": "v2"}

    asyncio.run(scenario())


def test_memory_database(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path, database="memory://") as runtime:
            webtask, created = await runtime.put("acme", "rule", HOOK, cc_meta(), {"s": "v"})
            assert created and (await runtime.list("acme", {})) == [webtask]
            token, row = await runtime.create_token("acme", "rule", "", None)
            assert runtime.tokens.authenticate(token, runtime.admin_token).name == "rule"
            await runtime.sync()  # its own writes come back through the feed: harmless
            assert await runtime.get("acme", "rule") == webtask
        assert not (tmp_path / "wtpy.sqlite3").exists()
        async with running(tmp_path, database="memory://") as runtime:
            assert await runtime.get("acme", "rule") is None  # nothing kept

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://db.example/wtpy", "scheme 'postgresql' is not supported"),
        ("sqlite://relative.db", "absolute path"),
        ("sqlite:///", "absolute path"),
        ("memory://name", "nothing after"),
        ("/var/lib/wtpy.db", "no scheme"),
    ],
)
def test_unusable_database_urls(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        parse_database_url(url)
    with pytest.raises(StorageError, match=message):
        open_storage(url, SecretBox(generate_key()))


def test_settings_database_default_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WTPY_DATABASE_URL", raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.database is None
    assert settings.database_url == f"sqlite://{tmp_path / 'wtpy.sqlite3'}"
    monkeypatch.setenv("WTPY_DATABASE_URL", "memory://")
    assert Settings(data_dir=tmp_path).database_url == "memory://"


# -- a data dir from schema version 2 --------------------------------------------------------

# Frozen: what wtpy wrote before the change feed (schema version 2). Never edit.
_SCHEMA_2 = (
    """
    CREATE TABLE webtasks (
        container   TEXT    NOT NULL,
        name        TEXT    NOT NULL,
        code        TEXT    NOT NULL,
        meta        TEXT    NOT NULL,
        meta_sealed BLOB,
        secrets     BLOB    NOT NULL,
        version     INTEGER NOT NULL CHECK (version >= 1),
        code_hash   TEXT    NOT NULL,
        created_at  TEXT    NOT NULL,
        updated_at  TEXT    NOT NULL,
        PRIMARY KEY (container, name)
    )
    """,
    """
    CREATE TABLE tokens (
        id          TEXT    NOT NULL PRIMARY KEY,
        hash        TEXT    NOT NULL,
        container   TEXT    NOT NULL,
        name        TEXT,
        description TEXT    NOT NULL DEFAULT '',
        created_at  TEXT    NOT NULL,
        expires_at  TEXT,
        revoked_at  TEXT
    )
    """,
    "PRAGMA user_version = 2",
)


def _old_data_dir(data_dir: Path) -> tuple[str, str]:
    """A data dir as schema version 2 left it: one webtask (a secret copied into meta, so
    sealed in meta_sealed too) and one scoped token. Returns (token, token id)."""
    data_dir.mkdir(mode=0o700)
    box = SecretBox.from_data_dir(data_dir, env={})
    meta = cc_meta(secret="s3cret")
    plain = {key: (None if value == "s3cret" else value) for key, value in meta.items()}
    token_id, token = new_scoped_token()
    raw = sqlite3.connect(data_dir / "wtpy.sqlite3")
    for statement in _SCHEMA_2:
        raw.execute(statement)
    with raw:
        raw.execute(
            "INSERT INTO webtasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("default", "keep", HOOK, orjson.dumps(plain).decode(),
             box.seal("default", "keep", {"auth0-extension-secret": "s3cret"}, purpose="meta"),
             box.seal("default", "keep", {"auth0-extension-secret": "s3cret"}), 4,
             hashlib.sha256(HOOK.encode()).hexdigest(), "2026-01-01T00:00:00Z",
             "2026-01-02T00:00:00Z"),
        )  # fmt: skip
        raw.execute(
            "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token_id,
                hash_token(token),
                "default",
                "keep",
                "old",
                "2026-01-01T00:00:00Z",
                None,
                None,
            ),
        )
    raw.close()
    return token, token_id


def test_a_schema_2_data_dir_opens_and_serves(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    token, token_id = _old_data_dir(data_dir)
    server = WtpyServer(data_dir)
    server.start()
    try:
        scoped = {"Authorization": f"Bearer {token}"}
        with server.client() as admin:
            view = admin.get(
                "/api/webtask/default/keep", params={"decrypt": 1}, headers=scoped
            ).json()
            assert view["secrets"] == {"auth0-extension-secret": "s3cret"}
            assert view["meta"] == cc_meta(secret="s3cret") and view["version"] == 4
            assert view["created_at"] == "2026-01-01T00:00:00Z"
            envelope = server.run("keep", CC_BODY, secret="s3cret").json()
            assert envelope["status"] == "success" and envelope["data"] == {"secret": "s3cret"}, (
                envelope
            )
            listed = admin.get("/api/tokens").json()
            assert [(t["id"], t["status"]) for t in listed] == [(token_id, "active")]
            put = admin.put("/api/webtask/default/keep", headers=scoped,
                            json={"code": HOOK, "meta": cc_meta(secret="s3cret")})  # fmt: skip
            assert put.status_code == 200 and put.json()["version"] == 5
            assert admin.delete(f"/api/tokens/{token_id}").status_code == 204
            assert admin.get("/api/webtask/default/keep", headers=scoped).status_code == 401
    finally:
        server.stop()
    raw = sqlite3.connect(data_dir / "wtpy.sqlite3")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    kinds = [kind for (kind,) in raw.execute("SELECT kind FROM changes ORDER BY seq")]
    raw.close()
    assert kinds == ["webtask", "token"]

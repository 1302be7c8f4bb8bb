"""Scoped management tokens: format and registry (unit), then the API, scopes, expiry,
revocation, logs and the CLI against a real server."""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner
from conftest import CC_BODY, SAMPLES, WtpyServer, cc_meta

from wtpy.cli import cli
from wtpy.cli._tokens import parse_expiry
from wtpy.runtime._access import Principal
from wtpy.runtime._errors import Forbidden, Unauthorized
from wtpy.runtime._tokens import (
    TokenRegistry,
    format_time,
    hash_token,
    new_scoped_token,
    parse_time,
    token_status,
    token_view,
)
from wtpy.storage import (
    SCHEMA_VERSION,
    SealedStorage,
    SecretBox,
    SqliteBackend,
    StoredToken,
    TokenExists,
)

ADMIN = "wtpy_admin-token-for-unit-tests"
HOOK = "def hook(client, scope, audience, context):\n    return {'ok': True}\n"
TOKEN_RE = re.compile(r"wtpy_t_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def secret_part(token: str) -> str:
    """The 43 characters after wtpy_t_<id>_ (they may hold '_' themselves)."""
    return token[len("wtpy_t_") + 16 + 1 :]


def row(
    token: str, token_id: str, container: str = "acme", name: str | None = None, **fields: Any
) -> StoredToken:
    values: dict[str, Any] = {
        "id": token_id, "hash": hash_token(token), "container": container, "name": name,
        "description": "", "created_at": format_time(time.time()), "expires_at": None,
        "revoked_at": None,
    }  # fmt: skip
    values.update(fields)
    return StoredToken(**values)


# --- unit: format, registry, scopes --------------------------------------------------------


def test_new_tokens_are_unique_and_well_formed() -> None:
    tokens = [new_scoped_token() for _ in range(200)]
    assert len({token for _, token in tokens}) == 200
    for token_id, token in tokens:
        assert TOKEN_RE.fullmatch(token) and token.startswith(f"wtpy_t_{token_id}_")


def test_registry_authenticates_and_scopes() -> None:
    token_id, token = new_scoped_token()
    web_id, web_token = new_scoped_token()
    registry = TokenRegistry([row(token, token_id), row(web_token, web_id, name="rule")])
    assert registry.authenticate(ADMIN, ADMIN).is_admin
    container = registry.authenticate(token, ADMIN)
    assert container == Principal("container", "acme", None, token_id)
    assert container.allows("acme") and container.allows("acme", "anything")
    assert not container.allows("other") and not container.allows("other", "x")
    assert not container.allows(None)  # admin-only calls
    webtask = registry.authenticate(web_token, ADMIN)
    assert webtask.allows("acme", "rule") and not webtask.allows("acme", "Rule")
    assert not webtask.allows("acme") and webtask.allows("acme", narrow=True)
    assert not webtask.allows("other", "rule", narrow=True)
    with pytest.raises(Forbidden) as info:
        webtask.require("acme", "other")
    assert "acme/rule" in info.value.message


@pytest.mark.parametrize(
    "presented",
    ["nope", "wtpy_t_", "wtpy_t_0123456789abcdef_" + "A" * 43, "", "é" * 10, "wtpy_" + "x" * 43],
)
def test_registry_refuses_unknown_tokens_with_403(presented: str) -> None:
    token_id, token = new_scoped_token()
    registry = TokenRegistry([row(token, token_id)])
    with pytest.raises(Forbidden):
        registry.authenticate(presented, ADMIN)


def test_right_id_wrong_secret_is_403_even_when_revoked() -> None:
    token_id, token = new_scoped_token()
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    registry = TokenRegistry([row(token, token_id, revoked_at=format_time(time.time()))])
    with pytest.raises(Forbidden):
        registry.authenticate(forged, ADMIN)  # not "revoked": the answer is no oracle for ids


def test_expired_and_revoked_are_401_with_a_reason() -> None:
    token_id, token = new_scoped_token()
    now = time.time()
    registry = TokenRegistry([row(token, token_id, expires_at=format_time(now + 60))])
    assert registry.authenticate(token, ADMIN, now=now).container == "acme"
    with pytest.raises(Unauthorized) as info:
        registry.authenticate(token, ADMIN, now=now + 61)
    assert "expired" in info.value.message
    registry.put(row(token, token_id, revoked_at="2030-01-01T00:00:00Z"))
    with pytest.raises(Unauthorized) as info:
        registry.authenticate(token, ADMIN, now=now)
    assert "revoked at 2030-01-01T00:00:00Z" in info.value.message


def test_unreadable_expiry_counts_as_expired() -> None:
    token_id, token = new_scoped_token()
    registry = TokenRegistry([row(token, token_id, expires_at="garbage")])
    with pytest.raises(Unauthorized):
        registry.authenticate(token, ADMIN)
    assert token_status(row(token, token_id, expires_at="garbage")) == "expired"


def test_admin_token_wins_even_if_it_looks_scoped() -> None:
    token_id, token = new_scoped_token()
    registry = TokenRegistry([row(token, token_id)])
    assert registry.authenticate(token, token).is_admin  # an operator-chosen admin token


def test_token_view_never_shows_hash_or_token() -> None:
    token_id, token = new_scoped_token()
    view = token_view(row(token, token_id, description="ci"))
    assert set(view) == {"id", "container", "name", "description", "created_at", "expires_at",
                         "revoked_at", "status"}  # fmt: skip
    assert token not in str(view) and hash_token(token) not in str(view)


def test_parse_time() -> None:
    assert parse_time("2030-01-31T12:00:00Z") == parse_time("2030-01-31T12:00:00+00:00")
    assert parse_time("2030-01-31T12:00:00") == parse_time("2030-01-31T12:00:00Z")
    assert parse_time("2030-01-31T13:00:00+01:00") == parse_time("2030-01-31T12:00:00Z")
    for bad in ("", "tomorrow", "2030-13-01"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_parse_expiry_durations() -> None:
    assert parse_expiry("30d") == 30 * 86400
    assert parse_expiry("12h") == 43200 and parse_expiry("90m") == 5400
    assert parse_expiry("3600") == 3600 and parse_expiry("2w") == 14 * 86400
    assert parse_expiry("1.5h") == 5400
    for bad in ("", "soon", "-1d", "0", "3x"):
        with pytest.raises(Exception, match="expires"):
            parse_expiry(bad)


# --- unit: the store -------------------------------------------------------------------------


def test_store_keeps_tokens_hashed_and_revokes_once(tmp_path: Path) -> None:
    box = SecretBox.from_data_dir(tmp_path, env={})
    db = tmp_path / "wtpy.sqlite3"
    token_id, token = new_scoped_token()
    with SealedStorage(SqliteBackend(db), box) as store:
        store.add_token(row(token, token_id, description="ci deploys"))
        with pytest.raises(TokenExists):
            store.add_token(row(token, token_id))
        first = store.revoke_token(token_id, "2030-01-01T00:00:00Z")
        again = store.revoke_token(token_id, "2031-01-01T00:00:00Z")
        assert first is not None and again is not None
        assert first.revoked_at == again.revoked_at == "2030-01-01T00:00:00Z"
        assert store.revoke_token("0" * 16, "2030-01-01T00:00:00Z") is None
        assert [t.id for t in store.list_tokens()] == [token_id]
        assert store.get_token(token_id) == first and store.get_token("0" * 16) is None
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("wtpy.sqlite3*"))
    assert token.encode() not in on_disk and secret_part(token).encode() not in on_disk
    assert hash_token(token).encode() in on_disk  # sanity: we looked at the right bytes


def test_migration_from_schema_1_keeps_webtasks(tmp_path: Path) -> None:
    box = SecretBox.from_data_dir(tmp_path, env={})
    db = tmp_path / "wtpy.sqlite3"
    with SealedStorage(SqliteBackend(db), box) as store:
        store.put("default", "keep", HOOK, {"a": "b"}, {"s": "v"})
    raw = sqlite3.connect(db)
    raw.execute("DROP TABLE changes")
    raw.execute("DELETE FROM sqlite_sequence WHERE name = 'changes'")
    raw.execute("DROP TABLE tokens")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with SealedStorage(SqliteBackend(db), box) as store:
        assert store.backend.schema_version == SCHEMA_VERSION == 3  # type: ignore[attr-defined]
        kept = store.get("default", "keep")
        assert kept is not None and kept.secrets == {"s": "v"} and kept.meta == {"a": "b"}
        assert store.list_tokens() == []


# --- e2e: the API ----------------------------------------------------------------------------


def api(server: WtpyServer, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def create_token(server: WtpyServer, **body: Any) -> dict[str, Any]:
    with server.client() as admin:
        response = admin.post("/api/tokens", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def put(
    client: httpx.Client, container: str, name: str, secrets: dict[str, str] | None = None
) -> httpx.Response:
    return client.put(f"/api/webtask/{container}/{name}",
                      json={"code": HOOK, "meta": cc_meta(), "secrets": secrets or {}})  # fmt: skip


def test_create_token_answer_and_listing(server: WtpyServer) -> None:
    container = unique("acme")
    created = create_token(server, container=container, description="ci", expires_in=3600)
    assert TOKEN_RE.fullmatch(created["token"])
    assert created["token"].startswith(f"wtpy_t_{created['id']}_")
    assert created["container"] == container and created["name"] is None
    assert created["status"] == "active" and created["revoked_at"] is None
    assert parse_time(created["expires_at"]) - time.time() == pytest.approx(3600, abs=5)
    with server.client() as admin:
        listed = admin.get("/api/tokens", params={"container": container}).json()
        everything = admin.get("/api/tokens").text
    assert [t["id"] for t in listed] == [created["id"]]
    assert "token" not in listed[0] and "hash" not in listed[0]
    assert created["token"] not in everything and hash_token(created["token"]) not in everything


def test_container_token_reaches_only_its_container(server: WtpyServer) -> None:
    mine, other = unique("mine"), unique("other")
    with server.client() as admin:
        assert put(admin, other, "theirs", {"k": "their-secret"}).status_code == 201
    token = create_token(server, container=mine)["token"]
    with api(server, token) as client:
        assert put(client, mine, "rule", {"k": "my-secret"}).status_code == 201
        assert (
            client.patch(f"/api/webtask/{mine}/rule", json={"meta": {"x": "1"}}).status_code == 200
        )
        assert [w["name"] for w in client.get(f"/api/webtask/{mine}").json()] == ["rule"]
        view = client.get(f"/api/webtask/{mine}/rule", params={"decrypt": 1}).json()
        assert view["secrets"] == {"k": "my-secret"}
        assert server.run("rule", CC_BODY, container=mine).json()["status"] == "success"
        forbidden = [
            client.get(f"/api/webtask/{other}"),
            client.get(f"/api/webtask/{other}/theirs"),
            client.get(f"/api/webtask/{other}/theirs", params={"decrypt": 1}),
            put(client, other, "theirs"),
            client.patch(f"/api/webtask/{other}/theirs", json={"meta": {"x": "1"}}),
            client.delete(f"/api/webtask/{other}/theirs"),
            client.get(f"/api/webtask/{other}/missing"),  # 403, not 404: no existence oracle
            client.post("/api/tokens", json={"container": mine}),
            client.get("/api/tokens"),
            client.delete("/api/tokens/0123456789abcdef"),
        ]
        for response in forbidden:
            assert response.status_code == 403, (response.request.method, response.request.url)
            body = response.json()
            assert body["error"] == "forbidden" and "their-secret" not in response.text
        assert client.delete(f"/api/webtask/{mine}/rule").status_code == 204
    with server.client() as admin:  # the other container is untouched
        theirs = admin.get(f"/api/webtask/{other}/theirs", params={"decrypt": 1}).json()
    assert theirs["secrets"] == {"k": "their-secret"} and theirs["version"] == 1


def test_webtask_token_reaches_only_its_webtask(server: WtpyServer) -> None:
    container = unique("shop")
    with server.client() as admin:
        assert put(admin, container, "sibling", {"k": "sibling-secret"}).status_code == 201
    token = create_token(server, container=container, name="rule")["token"]
    with api(server, token) as client:
        assert client.get(f"/api/webtask/{container}").json() == []  # not created yet
        assert put(client, container, "rule", {"k": "mine"}).status_code == 201
        assert client.get(f"/api/webtask/{container}/rule", params={"decrypt": 1}).json()[
            "secrets"
        ] == {"k": "mine"}
        # Listing the container answers only its own webtask, with filters applied.
        assert [w["name"] for w in client.get(f"/api/webtask/{container}").json()] == ["rule"]
        assert client.get(f"/api/webtask/{container}", params={"meta": "x:1"}).json() == []
        for response in (
            client.get(f"/api/webtask/{container}/sibling"),
            client.get(f"/api/webtask/{container}/sibling", params={"decrypt": 1}),
            put(client, container, "sibling"),
            client.delete(f"/api/webtask/{container}/sibling"),
            client.get(f"/api/webtask/{container}/RULE"),  # names are case-sensitive
            client.get(f"/api/webtask/{unique('elsewhere')}/rule"),
        ):
            assert response.status_code == 403, response.request.url
            assert "sibling-secret" not in response.text


def test_no_token_and_garbage_tokens(server: WtpyServer) -> None:
    with api(server, None) as client:
        for response in (client.get("/api/tokens"), client.post("/api/tokens", json={}),
                         client.get("/api/webtask/default")):  # fmt: skip
            assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    for garbage in ("nope", "wtpy_t_0123456789abcdef_" + "A" * 43):
        with api(server, garbage) as client:
            response = client.get("/api/webtask/default")
            assert response.status_code == 403
            assert response.json()["message"] == "This token is not a valid wtpy management token"


def test_expiry_and_revocation_take_effect_at_once(server: WtpyServer) -> None:
    container = unique("temp")
    short = create_token(server, container=container, expires_in=1)
    doomed = create_token(server, container=container)
    with api(server, doomed["token"]) as client:
        assert client.get(f"/api/webtask/{container}").status_code == 200
        with server.client() as admin:
            assert admin.delete(f"/api/tokens/{doomed['id']}").status_code == 204
            assert admin.delete(f"/api/tokens/{doomed['id']}").status_code == 204  # idempotent
            assert admin.delete("/api/tokens/0123456789abcdef").status_code == 404
            listed = {t["id"]: t for t in admin.get("/api/tokens").json()}
        assert listed[doomed["id"]]["status"] == "revoked" and listed[doomed["id"]]["revoked_at"]
        revoked = client.get(f"/api/webtask/{container}")
        assert revoked.status_code == 401 and "was revoked at" in revoked.json()["message"]
    time.sleep(1.2)
    with api(server, short["token"]) as client:
        expired = client.get(f"/api/webtask/{container}")
    assert expired.status_code == 401 and "expired at" in expired.json()["message"]
    with server.client() as admin:
        statuses = {t["id"]: t["status"] for t in admin.get("/api/tokens").json()}
    assert statuses[short["id"]] == "expired"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"container": "bad name"}, 422),
        ({"container": 5}, 422),
        ({"container": "ok", "name": ".."}, 422),
        ({"container": "ok", "name": 7}, 422),
        ({"container": "ok", "expires_in": 0}, 422),
        ({"container": "ok", "expires_in": -5}, 422),
        ({"container": "ok", "expires_in": True}, 422),
        ({"container": "ok", "expires_in": "1d"}, 422),
        ({"container": "ok", "expires_in": 10**12}, 422),
        ({"container": "ok", "expires_at": "2001-01-01T00:00:00Z"}, 422),
        ({"container": "ok", "expires_at": "next tuesday"}, 422),
        ({"container": "ok", "expires_at": 12}, 422),
        ({"container": "ok", "expires_in": 60, "expires_at": "2099-01-01T00:00:00Z"}, 422),
        ({"container": "ok", "description": 5}, 422),
        ({"container": "ok", "description": "x" * 1025}, 422),
        ({"container": "ok", "scope": "admin"}, 422),
    ],
)
def test_create_token_validation(server: WtpyServer, body: dict[str, Any], status: int) -> None:
    with server.client() as admin:
        before = len(admin.get("/api/tokens").json())
        response = admin.post("/api/tokens", json=body)
        assert response.status_code == status, response.text
        assert response.json()["error"] in ("invalid_token", "invalid_name")
        assert len(admin.get("/api/tokens").json()) == before


def test_create_token_wrong_media_and_bad_json(server: WtpyServer) -> None:
    with server.client() as admin:
        form = admin.post("/api/tokens", content=b"container=x",
                          headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert form.status_code == 415
        assert (
            admin.post(
                "/api/tokens", content=b"{", headers={"content-type": "application/json"}
            ).status_code
            == 400
        )
        assert admin.post("/api/tokens", json=["container"]).status_code == 400
        expires_at = create_token(server, container="ok", expires_at="2030-01-01T00:00:00+01:00")
        assert expires_at["expires_at"] == "2029-12-31T23:00:00Z"


def test_tokens_persist_across_restart_and_stay_revoked(fresh_server: WtpyServer) -> None:
    keep = create_token(fresh_server, container="acme", name="rule", description="kept")
    gone = create_token(fresh_server, container="acme")
    with fresh_server.client() as admin:
        assert admin.delete(f"/api/tokens/{gone['id']}").status_code == 204
    fresh_server.kill()  # kill -9: the token writes were acknowledged, so they are on disk
    on_disk = b"".join(p.read_bytes() for p in fresh_server.data_dir.glob("wtpy.sqlite3*"))
    for token in (keep["token"], gone["token"]):
        assert token.encode() not in on_disk and secret_part(token).encode() not in on_disk
    fresh_server.start()
    with api(fresh_server, keep["token"]) as client:
        assert put(client, "acme", "rule").status_code == 201
        assert client.get("/api/webtask/acme/other").status_code == 403
    with api(fresh_server, gone["token"]) as client:
        assert client.get("/api/webtask/acme").status_code == 401


# --- e2e: logs -------------------------------------------------------------------------------


def read_records(server: WtpyServer, container: str, token: str, *, via_key: bool = False,
                 params: dict[str, str] | None = None, seconds: float = 1.5) -> list[dict[str, Any]]:  # fmt: skip
    """Records replayed (tail) plus whatever arrives within `seconds`."""
    query = {"tail": "1000", "ping": "0.1", **(params or {})}
    headers = {}
    if via_key:
        query["key"] = token
    else:
        headers["Authorization"] = f"Bearer {token}"
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "GET", f"{server.url}/api/logs/tenant/{container}", params=query, headers=headers
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data:") and line[5:].strip().startswith("{"):
                record = orjson.loads(line[5:].strip())
                if "container" in record:
                    records.append(record)
            if time.monotonic() > deadline:
                break
    return records


@pytest.fixture(scope="module")
def log_tenant(server: WtpyServer) -> Iterator[str]:
    container = unique("logs")
    code = "def hook(client, scope, audience, context):\n    log.info('hello from', context['who'])\n    return 1\n"
    with server.client() as admin:
        for name in ("mine", "theirs"):
            assert admin.put(f"/api/webtask/{container}/{name}",
                             json={"code": code, "meta": cc_meta()}).status_code == 201  # fmt: skip
    for name in ("mine", "theirs"):
        assert (
            server.run(name, {**CC_BODY, "context": {"who": name}}, container=container).status_code
            == 200
        )
    yield container


def test_logs_container_token(server: WtpyServer, log_tenant: str) -> None:
    token = create_token(server, container=log_tenant)["token"]
    names = {r["name"] for r in read_records(server, log_tenant, token)}
    assert names == {"mine", "theirs"}
    assert {r["name"] for r in read_records(server, log_tenant, token, via_key=True)} == names
    other = create_token(server, container=unique("other"))["token"]
    for via_key in (False, True):
        query = {"key": other} if via_key else {}
        headers = {} if via_key else {"Authorization": f"Bearer {other}"}
        response = httpx.get(
            f"{server.url}/api/logs/tenant/{log_tenant}", params=query, headers=headers
        )
        assert response.status_code == 403 and response.json()["error"] == "forbidden"


def test_logs_webtask_token_sees_only_its_webtask(server: WtpyServer, log_tenant: str) -> None:
    token = create_token(server, container=log_tenant, name="mine")["token"]
    records = read_records(server, log_tenant, token)  # the whole container was asked for
    assert records and {r["name"] for r in records} == {"mine"}
    assert all("theirs" not in r.get("message", "") for r in records)
    assert {
        r["name"] for r in read_records(server, log_tenant, token, params={"name": "mine"})
    } == {"mine"}
    response = httpx.get(f"{server.url}/api/logs/tenant/{log_tenant}", params={"name": "theirs"},
                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert response.status_code == 403


def test_logs_revoked_token_is_refused(server: WtpyServer, log_tenant: str) -> None:
    created = create_token(server, container=log_tenant)
    with server.client() as admin:
        assert admin.delete(f"/api/tokens/{created['id']}").status_code == 204
    response = httpx.get(
        f"{server.url}/api/logs/tenant/{log_tenant}", params={"key": created["token"]}
    )
    assert response.status_code == 401 and "revoked" in response.json()["message"]


# --- e2e: the CLI ----------------------------------------------------------------------------


def wtpy(server: WtpyServer, tmp_path: Path, *args: str, token: str | None = None) -> Any:
    env = {"WTPY_CONFIG_DIR": str(tmp_path), "WTPY_URL": server.url,
           "WTPY_TOKEN": token or server.token, "WTPY_PROFILE": "", "WTPY_CONTAINER": ""}  # fmt: skip
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_cli_token_create_ls_revoke(server: WtpyServer, tmp_path: Path) -> None:
    container = unique("cli")
    created = wtpy(server, tmp_path, "token", "create", "--container", container, "--name", "rule",
                   "--expires", "30d", "--description", "deploy bot")  # fmt: skip
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert TOKEN_RE.fullmatch(token)  # stdout holds the token and nothing else
    assert "shown only once" in created.stderr
    listed = wtpy(server, tmp_path, "token", "ls", "--json", "--container", container)
    rows = orjson.loads(listed.stdout)
    assert [(r["container"], r["name"], r["description"], r["status"]) for r in rows] == [
        (container, "rule", "deploy bot", "active")
    ]
    assert parse_time(rows[0]["expires_at"]) - time.time() == pytest.approx(30 * 86400, abs=60)
    table = wtpy(server, tmp_path, "token", "ls")
    assert table.exit_code == 0 and rows[0]["id"] in table.stdout and token not in table.stdout
    # The new token works through the CLI too, and only for its webtask.
    code_file = tmp_path / "rule.py"
    code_file.write_text((SAMPLES / "myrule.py").read_text())
    made = wtpy(server, tmp_path, "create", str(code_file), "--name", "rule", "-c", container,
                "--meta", "wt-compiler=auth0-ext-compilers/client-credentials-exchange", token=token)  # fmt: skip
    assert made.exit_code == 0, made.output
    refused = wtpy(server, tmp_path, "inspect", "rule", "-c", unique("x"), token=token)
    assert refused.exit_code == 8 and "forbidden" in refused.stderr
    not_admin = wtpy(server, tmp_path, "token", "ls", token=token)
    assert not_admin.exit_code == 8
    revoked = wtpy(server, tmp_path, "token", "revoke", rows[0]["id"])
    assert revoked.exit_code == 0 and "revoked" in revoked.stderr
    after = wtpy(server, tmp_path, "ls", "-c", container, token=token)
    assert after.exit_code == 8 and "revoked" in after.stderr
    assert wtpy(server, tmp_path, "token", "revoke", "0123456789abcdef").exit_code == 5
    assert wtpy(server, tmp_path, "token", "revoke", "not-an-id").exit_code == 2
    assert (
        wtpy(server, tmp_path, "token", "create", "-c", container, "--expires", "soon").exit_code
        == 2
    )

"""End to end over HTTP: a real `wtpy serve` process, real sandbox workers."""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import httpx
from conftest import CC_BODY, PE_BODY, SAMPLES, WtpyServer, cc_meta, pe_meta

SECRET = "s3cr3t-value-for-tests"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def envelope(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


# --- management API ---------------------------------------------------------------


def test_put_creates_then_replaces_and_masks_secret_meta(server: WtpyServer) -> None:
    name = unique("mgmt")
    code = (SAMPLES / "myrule.py").read_text()
    created = server.put(name, code, cc_meta(SECRET), {"auth0-extension-secret": SECRET})
    assert created.status_code == 201
    view = created.json()
    assert view["url"] == f"{server.url}/api/run/default/{name}"
    assert view["secrets"] == ["auth0-extension-secret"]
    assert view["meta"]["auth0-extension-secret"] == "********"
    assert SECRET not in created.text
    replaced = server.put(name, code, cc_meta(SECRET), {"auth0-extension-secret": SECRET})
    assert replaced.status_code == 200
    assert replaced.json()["version"] == view["version"] + 1

    with server.client() as client:
        inspected = client.get(f"/api/webtask/default/{name}")
        assert inspected.status_code == 200
        assert inspected.json()["code"] == code
        assert SECRET not in inspected.text
        decrypted = client.get(f"/api/webtask/default/{name}", params={"decrypt": "1"}).json()
        assert decrypted["secrets"] == {"auth0-extension-secret": SECRET}
        assert decrypted["meta"]["auth0-extension-secret"] == SECRET


def test_list_filters_by_meta_and_delete(server: WtpyServer) -> None:
    container = unique("c")
    code = (SAMPLES / "myrule.py").read_text()
    assert server.put("a", code, cc_meta(), container=container).status_code == 201
    assert server.put("b", code, pe_meta(), container=container).status_code == 201
    with server.client() as client:
        everything = client.get(f"/api/webtask/{container}").json()
        assert sorted(w["name"] for w in everything) == ["a", "b"]
        assert all("code" not in w for w in everything)
        filtered = client.get(
            f"/api/webtask/{container}", params={"meta": "auth0-extension-name:password-exchange"}
        ).json()
        assert [w["name"] for w in filtered] == ["b"]
        assert client.delete(f"/api/webtask/{container}/a").status_code == 204
        assert client.delete(f"/api/webtask/{container}/a").status_code == 404
        assert [w["name"] for w in client.get(f"/api/webtask/{container}").json()] == ["b"]
    assert server.run("a", CC_BODY, container=container).status_code == 404


def test_patch_merges_meta_and_secrets(server: WtpyServer) -> None:
    name = unique("patch")
    code = (SAMPLES / "myrule.py").read_text()
    server.put(name, code, cc_meta(), {"a": "1", "b": "2"})
    with server.client() as client:
        patched = client.patch(
            f"/api/webtask/default/{name}",
            json={"meta": {"extra": "x"}, "secrets": {"a": None, "c": "3"}},
        )
        assert patched.status_code == 200, patched.text
        view = client.get(f"/api/webtask/default/{name}", params={"decrypt": 1}).json()
    assert view["secrets"] == {"b": "2", "c": "3"}
    assert view["meta"]["extra"] == "x"
    assert view["code"] == code


def test_management_requires_the_admin_token(server: WtpyServer) -> None:
    missing = httpx.get(f"{server.url}/api/webtask/default")
    assert missing.status_code == 401
    assert missing.json()["error"] == "unauthorized"
    wrong = httpx.get(f"{server.url}/api/webtask/default", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert wrong.json()["error"] == "forbidden"


def test_management_rejects_bad_input_clearly(server: WtpyServer) -> None:
    code = (SAMPLES / "myrule.py").read_text()
    with server.client() as client:
        bad_name = client.put(
            "/api/webtask/default/bad%20name", json={"code": code, "meta": cc_meta()}
        )
        assert bad_name.status_code == 400
        assert bad_name.json()["error"] == "invalid_name"
        big = client.put(
            "/api/webtask/default/big", json={"code": "#" * (100 * 1024 + 1), "meta": cc_meta()}
        )
        assert big.status_code == 413
        unknown = client.put(
            "/api/webtask/default/unk", json={"code": code, "meta": {"wt-compiler": "nope"}}
        )
        assert unknown.status_code == 422
        assert "Unknown compiler 'nope'" in unknown.json()["message"]
        no_compiler = client.put("/api/webtask/default/unk", json={"code": code, "meta": {}})
        assert no_compiler.status_code == 422
        not_json = client.put(
            "/api/webtask/default/x", content=b"{", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400
        wrong_type = client.put(
            "/api/webtask/default/x", content=b"code", headers={"content-type": "text/plain"}
        )
        assert wrong_type.status_code == 415
        non_string = client.put(
            "/api/webtask/default/x", json={"code": code, "meta": {**cc_meta(), "n": 1}}
        )
        assert non_string.status_code == 422
        assert client.get("/api/webtask/default/x").status_code == 404


# --- invocation: the documented rule ------------------------------------------------


def test_client_credentials_sample_rule(server: WtpyServer) -> None:
    name = unique("cc")
    server.put(
        name,
        (SAMPLES / "myrule.py").read_text(),
        cc_meta(SECRET),
        {"auth0-extension-secret": SECRET},
    )
    response = server.run(name, CC_BODY, secret=SECRET)
    assert response.content == (
        b'{"statusCode":200,"headers":{},"status":"success",'
        b'"data":{"https://foo.com/claim":"bar","scope":["test","extra"]}}'
    )


def test_password_sample_rule_and_five_parameter_form(server: WtpyServer) -> None:
    name = unique("pe")
    server.put(
        name,
        (SAMPLES / "password_rule.py").read_text(),
        pe_meta(SECRET),
        {"auth0-extension-secret": SECRET},
    )
    data = envelope(server.run(name, PE_BODY, secret=SECRET))
    assert data == {
        "statusCode": 200, "headers": {}, "status": "success",
        "data": {"https://foo.com/claim": "bar", "scope": ["test", "extra"]},
    }  # fmt: skip
    five = unique("pe5")
    server.put(five, (SAMPLES / "myrule.py").read_text(), pe_meta())
    assert envelope(server.run(five, PE_BODY))["data"]["scope"] == ["test", "extra"]


def test_authorization_rules(server: WtpyServer) -> None:
    name = unique("auth")
    server.put(
        name,
        (SAMPLES / "myrule.py").read_text(),
        cc_meta(SECRET),
        {"auth0-extension-secret": SECRET},
    )
    for header in [None, "Bearer wrong", f"Basic {SECRET}", f"Bearer  {SECRET}", f"Bearer{SECRET}"]:
        headers = {"Authorization": header} if header else {}
        data = envelope(server.run(name, CC_BODY, headers=headers))
        assert data["status"] == "error", header
        assert data["data"]["message"] == "Unauthorized extensibility point"
        assert data["data"]["name"] == "Error"
        assert data["data"]["statusCode"] == 500
        assert SECRET not in str(data)
    for header in [f"bearer {SECRET}", f"BEARER {SECRET}", f"Bearer {SECRET}"]:
        assert (
            envelope(server.run(name, CC_BODY, headers={"Authorization": header}))["status"]
            == "success"
        )


def test_validation_order_and_messages(server: WtpyServer) -> None:
    name = unique("val")
    server.put(name, (SAMPLES / "myrule.py").read_text(), cc_meta())
    cases: list[tuple[object, str]] = [
        (None, "Body received by extensibility point is not an object"),
        ([1], "Body received by extensibility point is not an object"),
        ({}, "Body .client received by extensibility point is not an object"),
        (
            {"client": {}, "scope": "x"},
            "Body .scope received by extensibility point is neither empty nor an array",
        ),
        (
            {"client": {}, "scope": []},
            "Body .audience received by extensibility point is not a string",
        ),
    ]
    for body, message in cases:
        data = envelope(server.run(name, body))
        assert data["status"] == "error"
        assert data["data"]["message"] == message
    # A missing scope passes and reaches the hook.
    ok = envelope(server.run(name, {"client": {}, "audience": "a"}))
    assert ok["data"]["scope"] == ["extra"]


def test_password_validation_messages(server: WtpyServer) -> None:
    name = unique("pval")
    server.put(name, (SAMPLES / "password_rule.py").read_text(), pe_meta())
    cases = [
        ({}, "Body.audience received by extensibility point is not a string"),
        (
            {"audience": "a", "scope": {}},
            "Body.scope received by extensibility point is neither empty nor an array",
        ),
        ({"audience": "a"}, "Body.user received by extensibility point is not an object"),
        (
            {"audience": "a", "user": {}},
            "Body.client received by extensibility point is not an object",
        ),
    ]
    for body, message in cases:
        assert envelope(server.run(name, body))["data"]["message"] == message


def test_invalid_json_and_non_json_bodies(server: WtpyServer) -> None:
    name = unique("json")
    server.put(name, (SAMPLES / "myrule.py").read_text(), cc_meta())
    url = f"{server.url}/api/run/default/{name}"
    bad = envelope(httpx.post(url, content=b"{nope", headers={"content-type": "application/json"}))
    assert bad["status"] == "error"
    assert bad["data"]["message"] == "Invalid request payload JSON format"
    text = envelope(
        httpx.post(url, content=b'{"client":{}}', headers={"content-type": "text/plain"})
    )
    assert text["data"]["message"] == "Body received by extensibility point is not an object"
    vendor = envelope(
        httpx.post(
            url,
            content=b'{"client":{},"audience":"a"}',
            headers={"content-type": "application/vnd.api+json; charset=utf-8"},
        )
    )
    assert vendor["status"] == "success"
    assert httpx.post(url, content=b"x" * (1024 * 1024 + 1)).status_code == 413


HOOK_ERRORS = """
def hook(client, scope, audience, context, cb):
    kind = context.get("kind")
    if kind == "raise":
        raise ValueError("boom")
    if kind == "scope":
        cb(InvalidScopeError("scope not allowed"))
        return
    if kind == "twice":
        cb(None, {"first": True})
        cb(None, {"second": True})
        return
    if kind == "unserialisable":
        cb(None, {"value": {1, 2}})
        return
    if kind == "context":
        w = context["webtask"]
        cb(None, {"secret": w["secrets"]["k"], "meta": w["meta"]["custom"],
                  "path": w["path"], "query": w["query"], "keys": sorted(context)})
        return
    cb(None, None)
"""


def test_hook_errors_become_envelopes_and_server_keeps_serving(server: WtpyServer) -> None:
    name = unique("err")
    server.put(name, HOOK_ERRORS, cc_meta(custom="m"), {"k": "v"})

    def call(kind: str) -> dict:
        return envelope(server.run(name, {**CC_BODY, "context": {"kind": kind}}))

    raised = call("raise")["data"]
    assert raised["name"] == "ValueError"
    assert raised["message"] == "boom"
    assert "line 5" in raised["stack"] and f"<webtask default/{name}>" in raised["stack"]
    assert "/site-packages/" not in raised["stack"] and "/work/" not in raised["stack"]
    scope = call("scope")["data"]
    assert (scope["name"], scope["message"]) == ("InvalidScopeError", "scope not allowed")
    assert call("twice")["data"] == {"first": True}
    unserialisable = call("unserialisable")
    assert (
        unserialisable["data"]["message"]
        == "Error when JSON serializing the result of the extension point"
    )
    nothing = call("nothing")
    assert nothing == {"statusCode": 200, "headers": {}, "status": "success"}
    # Sub-path and query reach the hook; extra body fields do not.
    response = httpx.post(
        f"{server.url}/api/run/default/{name}/sub/path?x=1",
        json={**CC_BODY, "extra": "dropped", "context": {"kind": "context"}},
    )
    data = envelope(response)["data"]
    assert data == {
        "secret": "v",
        "meta": "m",
        "path": "/sub/path",
        "query": {"x": "1"},
        "keys": ["kind", "webtask"],
    }


def test_compile_errors_answer_every_call(server: WtpyServer) -> None:
    name = unique("broken")
    server.put(name, "def hook(client, scope\n    return 1\n", cc_meta())
    for _ in range(2):
        data = envelope(server.run(name, CC_BODY))["data"]
        assert data["message"] == "Unable to compile the extensibility code as python"
        assert "line 1" in data["error_description"].lower()
    nohook = unique("nohook")
    server.put(nohook, "x = 1\n", cc_meta())
    assert envelope(server.run(nohook, CC_BODY))["data"]["message"] == (
        "Unable to compile the extensibility code as python"
    )


def test_timeout_kills_the_worker_and_others_keep_working(server: WtpyServer) -> None:
    slow = unique("loop")
    server.put(
        slow,
        "def hook(client, scope, audience, context):\n    while True:\n        pass\n",
        cc_meta(**{"wtpy-timeout": "1"}),
    )
    fast = unique("fast")
    server.put(fast, (SAMPLES / "myrule.py").read_text(), cc_meta())
    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        looping = executor.submit(server.run, slow, CC_BODY)
        quick = [executor.submit(server.run, fast, CC_BODY) for _ in range(5)]
        for future in quick:
            assert envelope(future.result())["status"] == "success"
        timed_out = envelope(looping.result())
    assert timed_out["status"] == "error"
    assert "timed out" in timed_out["data"]["message"]
    assert envelope(server.run(fast, CC_BODY))["status"] == "success"


def test_updates_take_effect_immediately(server: WtpyServer) -> None:
    name = unique("upd")
    server.put(
        name, "def hook(client, scope, audience, context):\n    return {'v': 1}\n", cc_meta()
    )
    assert envelope(server.run(name, CC_BODY))["data"] == {"v": 1}
    server.put(
        name, "def hook(client, scope, audience, context):\n    return {'v': 2}\n", cc_meta()
    )
    assert envelope(server.run(name, CC_BODY))["data"] == {"v": 2}


def test_unknown_webtask_is_404(server: WtpyServer) -> None:
    response = server.run("does-not-exist", CC_BODY)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


# --- persistence ----------------------------------------------------------------------


def test_restart_keeps_webtasks_and_secrets_are_encrypted_at_rest(fresh_server: WtpyServer) -> None:
    secret = "plaintext-marker-" + uuid.uuid4().hex
    fresh_server.put(
        "keep", (SAMPLES / "myrule.py").read_text(), cc_meta(), {"auth0-extension-secret": secret}
    )
    fresh_server.stop()
    for path in fresh_server.data_dir.iterdir():
        if path.name.startswith("wtpy.sqlite3"):
            assert secret.encode() not in path.read_bytes()
    fresh_server.start()
    assert envelope(fresh_server.run("keep", CC_BODY, secret=secret))["status"] == "success"
    assert envelope(fresh_server.run("keep", CC_BODY, secret="wrong"))["status"] == "error"


def test_concurrent_invocations_updates_and_a_log_follower_lose_nothing(server: WtpyServer) -> None:
    """The hot path's shortcuts (one-write answers, lazy log records, deadline checks, the
    webtask cache) under concurrency: every answer right, every summary streamed, no secret."""
    import json
    import threading

    secret = f"soak-{uuid.uuid4().hex}"
    name = f"soak-{uuid.uuid4().hex[:8]}"
    code = (
        "def hook(client, scope, audience, context):\n"
        "    log.info('hello ' + client['id'])\n"
        "    print('secret is', context['webtask']['secrets']['auth0-extension-secret'])\n"
        "    if client['id'].startswith('boom'):\n"
        "        raise ValueError('bad client')\n"
        "    return {'scope': scope, 'client': client['id']}\n"
    )
    assert (
        server.put(name, code, cc_meta(secret), {"auth0-extension-secret": secret}).status_code
        == 201
    )
    summaries: set[str] = set()
    leaked: list[str] = []
    following = threading.Event()
    done = threading.Event()

    def follow() -> None:
        url = f"{server.url}/api/logs/tenant/default"
        headers = {"Authorization": f"Bearer {server.token}"}
        with httpx.stream(
            "GET", url, params={"name": name}, headers=headers, timeout=60
        ) as response:
            assert response.status_code == 200
            following.set()
            event = ""
            for line in response.iter_lines():
                if secret in line:
                    leaked.append(line)
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif not line:
                    event = ""
                if line.startswith("data:") and event != "ping":  # a slow run meets keep-alives
                    record = json.loads(line[5:])
                    if record.get("type") == "invocation":
                        summaries.add(record["request_id"])
                if len(summaries) >= calls:  # one summary per call: all of them are in
                    return

    def churn() -> None:  # every update drops the cached webtask; new code is compiled again
        version = 0
        while not done.wait(0.02):
            version += 1
            server.put(
                name, f"{code}\n# v{version}\n", cc_meta(secret), {"auth0-extension-secret": secret}
            )

    def call(index: int) -> str:
        client_id = f"boom-{index}" if index % 5 == 0 else f"c{index}"
        response = server.run(name, {**CC_BODY, "client": {"id": client_id}}, secret)
        assert response.status_code == 200
        envelope = response.json()
        if client_id.startswith("boom"):
            assert envelope["status"] == "error" and envelope["data"]["message"] == "bad client"
        else:
            assert envelope["data"] == {"scope": CC_BODY["scope"], "client": client_id}
        return response.headers["x-wtpy-request-id"]

    calls = 200
    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert following.wait(10)
    updater = threading.Thread(target=churn, daemon=True)
    updater.start()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        request_ids = set(pool.map(call, range(calls)))
    done.set()
    updater.join(10)
    follower.join(30)
    assert len(request_ids) == calls
    assert request_ids <= summaries, f"{len(request_ids - summaries)} summaries never streamed"
    assert leaked == []


def test_a_slow_hook_s_log_lines_are_streamed_while_it_runs(server: WtpyServer) -> None:
    import json
    import threading

    secret = f"live-{uuid.uuid4().hex}"
    name = f"live-{uuid.uuid4().hex[:8]}"
    code = (
        "import time\n"
        "def hook(client, scope, audience, context):\n"
        "    log.info('started ' + context['webtask']['secrets']['auth0-extension-secret'])\n"
        "    time.sleep(1.5)\n"
        "    log.info('finishing')\n"
        "    return {'ok': True}\n"
    )
    assert (
        server.put(name, code, cc_meta(secret), {"auth0-extension-secret": secret}).status_code
        == 201
    )
    seen: list[tuple[str, float]] = []  # (message, when it arrived)
    following = threading.Event()

    def follow() -> None:
        url = f"{server.url}/api/logs/tenant/default"
        with httpx.stream("GET", url, params={"name": name}, headers={"Authorization": f"Bearer {server.token}"},
                          timeout=30) as response:  # fmt: skip
            following.set()
            for line in response.iter_lines():
                if line.startswith("data:"):
                    record = json.loads(line[5:])
                    seen.append((record["message"], time.monotonic()))
                    if record["type"] == "invocation":
                        return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert following.wait(10)
    response = server.run(name, CC_BODY, secret)
    answered = time.monotonic()
    follower.join(20)
    assert response.json()["data"] == {"ok": True}
    # Masked, and streamed while the hook slept (1.5 s), not with the answer.
    assert seen[0][0] == "started ********" and answered - seen[0][1] > 0.7
    assert [message for message, _ in seen[1:]] == ["finishing", seen[-1][0]]
    assert seen[-1][0].startswith("success (")

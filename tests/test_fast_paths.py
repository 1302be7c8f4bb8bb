"""The shortcuts taken for speed behave exactly like the long way round.

* the pool cuts worker stdout into frames in its pipe callback (any chunking);
* the worker caches how to call a hook per (code object, argument order);
* the app hands invocations to a plain ASGI handler that answers everything itself.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import cc_meta, raw_request

from wtpy.runtime import Runtime, Settings, _invoke
from wtpy.sandbox._pool import ArgumentsNotEncodable, JobResult
from wtpy.sandbox._procs import WorkerProc
from wtpy.sandbox._protocol import FrameError, encode
from wtpy.sandbox._worker import Worker
from wtpy.server import _app

# --------------------------------------------------------------------------- pool frames


def _feed(chunks: list[bytes]) -> tuple[list[dict[str, Any]], Exception | None]:
    async def scenario() -> tuple[list[dict[str, Any]], Exception | None]:
        proc = WorkerProc()
        for chunk in chunks:
            proc.pipe_data_received(1, chunk)
        proc.pipe_connection_lost(1, None)
        frames: list[dict[str, Any]] = []
        try:
            while True:
                frames.append(await proc.read())
        except FrameError as exc:
            return frames, exc

    return asyncio.run(scenario())


# (message, tail): a success's result travels as the frame's tail, decoded under "result".
SENT: list[tuple[dict[str, Any], bytes | None]] = [
    ({"id": 1, "ok": True}, orjson.dumps({"a": "é✓\n" * 50})),
    ({"id": 2}, None),
    ({"id": 3, "logs": []}, None),
]
FRAMES = [{**message, "result": tail} if tail is not None else message for message, tail in SENT]
ENCODED = [encode(message, tail) for message, tail in SENT]
STREAM = b"".join(ENCODED)


@pytest.mark.parametrize("size", [1, 3, 4, 5, 17, len(STREAM)])
def test_frames_survive_any_chunking(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    frames, error = _feed(chunks)
    assert frames == FRAMES
    assert isinstance(error, FrameError) and "closed" in str(error)


def test_whole_frames_one_per_read_take_the_no_copy_path() -> None:
    frames, error = _feed(ENCODED)
    assert frames == FRAMES
    assert isinstance(error, FrameError) and "closed" in str(error)
    # A whole frame right after a partial one still goes through the buffer, in order.
    first, second = ENCODED[0], ENCODED[1]
    frames, _ = _feed([first[:3], first[3:], second, b"\x00\x00\x00\x02{x"])
    assert frames == FRAMES[:2]


def test_frames_before_garbage_are_kept_and_the_garbage_ends_the_stream() -> None:
    frames, error = _feed([encode({"id": 1}) + b"\x00\x00\x00\x02{x" + encode({"id": 2})])
    assert frames == [{"id": 1}]
    assert isinstance(error, FrameError)


def test_oversized_frame_ends_the_stream() -> None:
    frames, error = _feed([encode({"id": 1}), b"\xff\xff\xff\xff"])
    assert frames == [{"id": 1}]
    assert isinstance(error, FrameError) and "exceeds" in str(error)


def test_output_nobody_asked_for_is_not_buffered_without_bound() -> None:
    from wtpy.sandbox._protocol import MAX_FRAME_BYTES

    big = encode({"x": "y" * (MAX_FRAME_BYTES // 3)})
    frames, error = _feed([big] * 5)
    assert len(frames) == 2
    assert isinstance(error, FrameError) and "nobody asked for" in str(error)


def test_a_cancelled_read_loses_nothing() -> None:
    async def scenario() -> dict[str, Any]:
        proc = WorkerProc()
        reader = asyncio.ensure_future(proc.read())
        await asyncio.sleep(0)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        proc.pipe_data_received(1, encode({"id": 7}))
        return await proc.read()

    assert asyncio.run(scenario()) == {"id": 7}


# --------------------------------------------------------------------------- binding plans


def _run(worker: Worker, code: str, args: dict[str, Any], order: list[str]) -> dict[str, Any]:
    import hashlib

    source = textwrap.dedent(code)
    key = hashlib.sha256(source.encode()).hexdigest()
    frame = {"id": 1, "op": "run", "key": key, "code": source, "filename": "<webtask d/t>",
             "args": args, "order": order}  # fmt: skip
    reply = worker.handle(frame)
    if "result" in reply:  # the JSON text the worker would send
        reply["result"] = orjson.loads(reply["result"])
    reply.pop("logs", None)
    return reply


ARGS = {"user": {"id": "u"}, "client": {"id": "c"}, "scope": ["s"], "audience": "a", "context": {}}
CC = ["client", "scope", "audience", "context"]
PE = ["user", "client", "scope", "audience", "context"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        # by name (any order of parameters), callback by keyword
        ("def hook(scope, client, cb):\n    cb(None, [client['id'], scope])", ["c", ["s"]]),
        # positional prefix of `order`
        ("def hook(a, b):\n    return [a, b]", None),
        # *args: everything positionally
        ("def hook(*args):\n    return len(args)", None),
        # **kwargs: everything by name
        ("def hook(**kw):\n    return sorted(kw)", None),
        # positional-only callback, padded to its slot
        ("def hook(a, cb, /):\n    cb(None, a)", None),
    ],
)
def test_cached_binding_plans_follow_the_order_of_each_call(code: str, expected: Any) -> None:
    worker = Worker(memory_mb=0)
    # The same code (so the same cached code object) under both orders, twice each.
    results = {
        name: [_run(worker, code, ARGS, order) for _ in range(2)]
        for name, order in (("cc", CC), ("pe", PE))
    }
    for name, (first, second) in results.items():
        assert first == second, name
        assert first["ok"] is True, first
    cc, pe = results["cc"][0]["result"], results["pe"][0]["result"]
    if expected is not None:
        assert cc == pe == expected
    elif code.startswith("def hook(a, b)"):
        assert cc == [{"id": "c"}, ["s"]] and pe == [{"id": "u"}, {"id": "c"}]
    elif "*args" in code:
        assert (cc, pe) == (4, 5)
    elif "**kw" in code:
        assert (cc, pe) == (sorted(CC), sorted(PE))
    else:
        assert (cc, pe) == ({"id": "c"}, {"id": "u"})


def test_a_function_with_attributes_is_not_served_from_the_plan_cache() -> None:
    from wtpy.sandbox import _invocation

    def hook(client, scope):
        return client

    plain = _invocation._cached_plan(hook, CC)
    hook.extra = 1  # type: ignore[attr-defined]
    key = (hook.__code__, tuple(PE))
    _invocation._cached_plan(hook, PE)
    assert key not in _invocation._PLANS
    assert plain == ("names", ("client", "scope"), 0, None)


# --------------------------------------------------------------------------- invocation handler

SECRET = "s3cr3t-value-for-the-invoker-tests"
CC_COMPILER = "auth0-ext-compilers/client-credentials-exchange"
CC_BODY = {"audience": "https://api.example.com", "client": {"id": "c1"}, "scope": ["test"]}


class _RecordingPool:
    """Stands in for the worker pool: records each job and answers with `reply`."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.reply: JobResult | Exception = JobResult("success", result_json=b'{"ok":1}')

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def run(self, **job: Any) -> JobResult:
        self.jobs.append(job)
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def _invoke_app(tmp_path: Path, calls: Callable[[httpx.AsyncClient, _RecordingPool], Any]) -> Any:
    """Run `calls` against create_app() with a started runtime, one stored webtask
    (default/rule, client-credentials, secret SECRET) and a recording pool."""
    settings = Settings(data_dir=tmp_path, database="memory://", announce_token=False, workers=1,
                             max_body_bytes=1000)  # fmt: skip
    runtime = Runtime(settings)
    pool = _RecordingPool()
    runtime.pool = pool  # type: ignore[assignment]
    app = _app.create_app(settings, runtime)

    async def scenario() -> Any:
        await runtime.start()
        try:
            meta = {"wt-compiler": CC_COMPILER, "auth0-extension-secret": SECRET}
            await runtime.put("default", "rule", "def hook(client, scope, audience, context):\n    return {}\n",
                              meta, {"auth0-extension-secret": SECRET})  # fmt: skip
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://wtpy") as client:
                return await calls(client, pool)
        finally:
            await runtime.close()

    return asyncio.run(scenario())


AUTH = {"authorization": f"Bearer {SECRET}", "content-type": "application/json"}


def test_the_handler_passes_path_query_and_node_style_headers(tmp_path: Path) -> None:
    async def calls(client: httpx.AsyncClient, pool: _RecordingPool) -> list[httpx.Response]:
        headers = [
            *AUTH.items(),
            ("X-Multi", "a"),
            ("x-multi", "b"),
            ("Cookie", "c=1"),
            ("cookie", "d=2"),
        ]
        return [
            await client.post("/api/run/default/rule", json=CC_BODY, headers=AUTH),
            await client.post(
                "/api/run/default/rule/x/y%20z?q=1&q=2&e=", json=CC_BODY, headers=headers
            ),
        ]

    responses = None

    async def run(client: httpx.AsyncClient, pool: _RecordingPool) -> list[dict[str, Any]]:
        nonlocal responses
        responses = await calls(client, pool)
        return pool.jobs

    jobs = _invoke_app(tmp_path, run)
    assert responses is not None
    for response in responses:
        assert response.status_code == 200
        assert response.json() == {
            "statusCode": 200,
            "headers": {},
            "status": "success",
            "data": {"ok": 1},
        }
        assert len(response.headers["x-wtpy-request-id"]) == 32
    assert responses[0].headers["x-wtpy-request-id"] != responses[1].headers["x-wtpy-request-id"]
    first, second = (job["args"]["context"]["webtask"] for job in jobs)
    assert first["path"] == "" and first["query"] == {}
    assert second["path"] == "/x/y z"
    assert second["query"] == {"q": "2", "e": ""}
    assert second["headers"]["x-multi"] == "a, b" and second["headers"]["cookie"] == "c=1; d=2"
    assert second["secrets"] == {"auth0-extension-secret": SECRET}
    assert (second["container"], second["name"], second["method"]) == ("default", "rule", "POST")
    assert tuple(jobs[0]["order"]) == ("client", "scope", "audience", "context")
    assert (
        jobs[0]["args"]["client"] == {"id": "c1"}
        and jobs[0]["filename"] == "<webtask default/rule>"
    )


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("POST", "/api/run/default", 404, "not_found"),
        ("POST", "/api/run/default/", 404, "not_found"),
        ("POST", "/api/run//rule", 404, "not_found"),
        ("POST", "/api/run/default/missing", 404, "not_found"),
        ("POST", "/api/run/default/bad%20name", 400, "invalid_name"),
        ("TRACE", "/api/run/default/rule", 405, "method_not_allowed"),
    ],
)
def test_the_handler_refuses_with_the_management_error_body(
    tmp_path: Path, method: str, path: str, status: int, error: str
) -> None:
    async def calls(client: httpx.AsyncClient, pool: _RecordingPool) -> tuple[httpx.Response, int]:
        return await client.request(method, path, json=CC_BODY, headers=AUTH), len(pool.jobs)

    response, jobs = _invoke_app(tmp_path, calls)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.headers["content-type"] == "application/json"
    assert len(response.headers["x-wtpy-request-id"]) == 32
    assert jobs == 0
    if status == 405:
        assert "POST" in response.headers["allow"] and "TRACE" not in response.headers["allow"]


def test_an_oversize_body_is_refused_before_the_pool(tmp_path: Path) -> None:
    async def calls(
        client: httpx.AsyncClient, pool: _RecordingPool
    ) -> tuple[list[httpx.Response], int]:
        big = {**CC_BODY, "pad": "x" * 2000}
        chunks = [b"{", b'"a":"' + b"y" * 1500 + b'"}']

        async def stream() -> Any:  # no content-length: counted while it arrives
            for chunk in chunks:
                yield chunk

        return [
            await client.post("/api/run/default/rule", json=big, headers=AUTH),
            await client.post("/api/run/default/rule", content=stream(), headers=AUTH),
            await client.post(
                "/api/run/default/rule", content=b"{}", headers={**AUTH, "content-length": "x"}
            ),
        ], len(pool.jobs)

    (declared, streamed, garbage), jobs = _invoke_app(tmp_path, calls)
    assert declared.status_code == streamed.status_code == 413
    assert declared.json()["error"] == "payload_too_large"
    assert garbage.status_code == 400
    assert jobs == 0


def test_a_bug_behind_the_handler_is_a_500_that_logs_no_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from wtpy.compilers._base import ExchangeCompiler

    def broken(self: Any, request: Any, webtask: Any) -> Any:
        raise RuntimeError(f"boom {SECRET}")

    monkeypatch.setattr(ExchangeCompiler, "prepare", broken)

    async def calls(client: httpx.AsyncClient, pool: _RecordingPool) -> httpx.Response:
        return await client.post("/api/run/default/rule", json=CC_BODY, headers=AUTH)

    with caplog.at_level("ERROR", logger="wtpy.invoke"):
        response = _invoke_app(tmp_path, calls)
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "message": "Internal server error"}
    assert "RuntimeError" in caplog.text and "in broken" in caplog.text
    assert (
        SECRET not in caplog.text
        and "boom" not in caplog.text
        and "/" not in caplog.text.split("(")[-1]
    )


def test_arguments_that_cannot_be_framed_get_an_error_envelope(tmp_path: Path) -> None:
    async def calls(client: httpx.AsyncClient, pool: _RecordingPool) -> httpx.Response:
        pool.reply = ArgumentsNotEncodable("Recursion limit reached")
        return await client.post("/api/run/default/rule", json=CC_BODY, headers=AUTH)

    response = _invoke_app(tmp_path, calls)
    assert response.status_code == 200
    assert response.json()["status"] == "error"
    assert response.json()["data"]["message"] == _invoke.TOO_DEEP


def test_any_other_type_error_from_the_pool_is_not_mistaken_for_nesting(tmp_path: Path) -> None:
    async def calls(client: httpx.AsyncClient, pool: _RecordingPool) -> httpx.Response:
        pool.reply = TypeError("a bug")
        return await client.post("/api/run/default/rule", json=CC_BODY, headers=AUTH)

    assert _invoke_app(tmp_path, calls).status_code == 500


def test_a_client_gone_before_its_body_gets_no_answer_and_breaks_nothing(tmp_path: Path) -> None:
    sent: list[dict[str, Any]] = []

    async def calls(
        client: httpx.AsyncClient, pool: _RecordingPool
    ) -> tuple[list[dict[str, Any]], int]:
        app = client._transport.app  # type: ignore[attr-defined]
        scope = {"type": "http", "method": "POST", "path": "/api/run/default/rule", "query_string": b"",
                 "headers": [(b"content-length", b"100")]}  # fmt: skip

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent, len(pool.jobs)

    assert _invoke_app(tmp_path, calls) == ([], 0)


def test_request_ids_are_unique_and_shaped_like_uuid_hex() -> None:
    from wtpy.runtime._logs import new_request_id

    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in ids)


def test_iso_time_matches_datetime_to_the_millisecond() -> None:
    import random
    from datetime import UTC, datetime

    from wtpy.contract import format_time_ms as iso_time

    rng = random.Random(7)
    stamps = [1_700_000_000 + rng.random() * 1e6 for _ in range(20_000)]
    # Half-way cases, where rounding the float itself to microseconds differs from datetime's.
    stamps += [1.0005, 5.003, 1_700_000_000.9999996, 1_700_086_698.7339995, 1_700_453_691.1549995]
    for ts in sorted(stamps):  # in order and out of it: the cached second must never leak
        moment = datetime.fromtimestamp(ts, UTC)
        assert (
            iso_time(ts)
            == moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        ), ts
    for ts in reversed(stamps):
        moment = datetime.fromtimestamp(ts, UTC)
        assert (
            iso_time(ts)
            == moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        ), ts


# --------------------------------------------------------------------------- one-write answers (real server)


def _two_answers(received: bytes) -> bool:
    return received.count(b"HTTP/1.1 200") >= 2 and received.endswith(b"}")


def _post(path: str, body: bytes, *extra: str, version: str = "1.1", method: str = "POST") -> bytes:
    head = [f"{method} {path} HTTP/{version}", "Host: wtpy", "Content-Type: application/json",
            f"Authorization: Bearer {SECRET}", f"Content-Length: {len(body)}", *extra]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _answers(raw: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """Split a stream of HTTP/1.1 answers (Content-Length framed) into (status line, headers, body)."""
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        if status.startswith("HTTP/1.1 100"):
            size = 0
        answers.append((status, headers, rest[:size]))
        raw = rest[size:]
    return answers


@pytest.fixture(scope="module")
def echo_rule(server: Any) -> str:
    name = "one-write-echo"
    code = "def hook(client, scope, audience, context):\n    return {'client': client, 'method': context['webtask']['method']}\n"
    assert server.put(
        name, code, cc_meta(SECRET), {"auth0-extension-secret": SECRET}
    ).status_code in (200, 201)
    return f"/api/run/default/{name}"


BODY_A = orjson.dumps({**CC_BODY, "client": {"id": "a"}})
BODY_B = orjson.dumps({**CC_BODY, "client": {"id": "b"}})


def test_keep_alive_and_pipelined_invocations_answer_in_order(server: Any, echo_rule: str) -> None:
    raw = raw_request(
        server, _post(echo_rule, BODY_A) + _post(echo_rule, BODY_B), timeout=5, until=_two_answers
    )
    answers = _answers(raw)
    assert [status for status, _, _ in answers] == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]
    assert [orjson.loads(body)["data"]["client"]["id"] for _, _, body in answers] == ["a", "b"]
    for _, headers, body in answers:
        assert headers["content-type"] == "application/json"
        assert int(headers["content-length"]) == len(body)
        assert len(headers["x-wtpy-request-id"]) == 32
        assert "date" in headers and "connection" not in headers  # kept alive


def test_connection_close_and_http_1_0_close_after_the_answer(server: Any, echo_rule: str) -> None:
    for request in (
        _post(echo_rule, BODY_A, "Connection: close"),
        _post(echo_rule, BODY_A, version="1.0"),
    ):
        ((status, headers, body),) = _answers(
            raw_request(server, request)
        )  # returns: the server closed
        assert status == "HTTP/1.1 200 OK"
        assert headers["connection"] == "close"
        assert orjson.loads(body)["data"]["client"] == {"id": "a"}


def test_head_gets_the_headers_without_a_body(server: Any, echo_rule: str) -> None:
    raw = raw_request(server, _post(echo_rule, b"", "Connection: close", method="HEAD"))
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: " in head
    assert rest == b""


def test_expect_100_continue_then_the_answer(server: Any, echo_rule: str) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            _post(echo_rule, b"", "Expect: 100-continue").replace(
                b"Content-Length: 0", b"Content-Length: %d" % len(BODY_B)
            )
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(BODY_B + _post(echo_rule, BODY_A, "Connection: close"))
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    answers = _answers(raw)
    assert [orjson.loads(body)["data"]["client"]["id"] for _, _, body in answers] == ["b", "a"]


def test_errors_on_the_invocation_path_use_the_same_framing(server: Any, echo_rule: str) -> None:
    raw = raw_request(server, _post("/api/run/default/no-such-rule", BODY_A) + _post(echo_rule + "x/", BODY_A, method="TRACE")
                + _post(echo_rule, BODY_A, "Connection: close"))  # fmt: skip
    (s1, h1, b1), (s2, h2, b2), (s3, _, b3) = _answers(raw)
    assert s1.startswith("HTTP/1.1 404") and orjson.loads(b1)["error"] == "not_found"
    assert (
        s2.startswith("HTTP/1.1 405")
        and "POST" in h2["allow"]
        and orjson.loads(b2)["error"] == "method_not_allowed"
    )
    assert s3 == "HTTP/1.1 200 OK" and orjson.loads(b3)["status"] == "success"


def test_invocation_answers_are_one_write_and_other_paths_are_uvicorns() -> None:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from wtpy.server._httpproto import http_protocol

    body = b'{"status":"success"}'

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    class Transport(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[bytes] = []

        def write(self, data: bytes | bytearray | memoryview) -> None:
            self.writes.append(bytes(data))

        def is_closing(self) -> bool:
            return False

        def close(self) -> None: ...

        def pause_reading(self) -> None: ...

        def resume_reading(self) -> None: ...

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    async def scenario(path: str) -> list[bytes]:
        config = Config(app=app, proxy_headers=False, access_log=False)
        config.load()
        protocol_class = http_protocol()
        assert not isinstance(protocol_class, str)  # httptools is installed
        protocol = protocol_class(config, ServerState(), app_state={})
        transport = Transport()
        protocol.connection_made(transport)
        for _ in range(2):
            protocol.data_received(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode()
            )
            for _ in range(5):
                await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport.writes

    invocation = asyncio.run(scenario("/api/run/default/rule"))
    assert len(invocation) == 2 and all(write.endswith(b"\r\n\r\n" + body) for write in invocation)
    assert all(
        write.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 20\r\n" in write
        for write in invocation
    )
    other = asyncio.run(scenario("/api/webtask/default"))
    assert len(other) == 4 and other[1] == other[3] == body  # head, body, head, body


def test_an_unhandled_error_in_the_management_api_is_a_500_that_logs_no_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from starlette.routing import Route

    async def boom(request: Any) -> Any:
        raise RuntimeError(f"boom {SECRET}")

    settings = Settings(data_dir=tmp_path, database="memory://", announce_token=False, workers=1)
    app = _app.create_app(settings)
    app.router.routes.append(Route("/api/boom", boom))

    async def scenario() -> httpx.Response:
        # raise_app_exceptions=True: an exception leaving the app would fail the call here
        # (under uvicorn it would be logged with its traceback and message).
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://wtpy") as client:
            return await client.get("/api/boom?x=1")

    with caplog.at_level("ERROR", logger="wtpy"):
        response = asyncio.run(scenario())
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "message": "Internal server error"}
    assert "unhandled RuntimeError on GET /api/boom" in caplog.text and "in boom" in caplog.text
    assert SECRET not in caplog.text and "boom " not in caplog.text.replace("/api/boom ", "")


# --------------------------------------------------------------------------- result bytes passed on

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SAMPLE_ARGS: dict[str, Any] = {
    "user": {"id": "user-1", "email": "u@example.com"},
    "client": {"id": "client-1", "name": "Test", "metadata": {"tier": "gold"}},
    "scope": ["read"],
    "audience": "https://api.example.com",
    "context": {"ip": "127.0.0.1", "webtask": {"secrets": {"k": "v"}, "meta": {}}},
}


def _old_envelope(value: Any) -> bytes:
    """What the server answered when it parsed every result and wrote it again: the worker's
    orjson text, parsed, then written into the envelope."""
    from wtpy.compilers._envelope import success_envelope

    return success_envelope(orjson.loads(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)), True)


def _spliced_envelope(value: Any) -> bytes:
    from wtpy.compilers._envelope import success_envelope
    from wtpy.sandbox import _invocation

    payload = _invocation._serialize(value)
    assert isinstance(payload, bytes), payload
    return success_envelope(orjson.Fragment(payload), True)


class _Str(str):
    pass


UNUSUAL_RESULTS = [
    {"unicode": 'é✓😀\u2028\u0000\x1f"\\/', "ключ": "значение"},
    [2**63 - 1, -(2**63), 2**64 - 1, 0, -1, True, False],
    {"a": [{"b": [[], {}, [None, {"c": {"d": [1.5]}}]]}]},
    None,
    [
        0.1,
        -0.0,
        1e300,
        5e-324,
        1.7976931348623157e308,
        1e16,
        123456789.123456789,
        float("nan"),
        float("inf"),
    ],
    {7: "int key", 2.5: "float key", True: "bool key", None: "none key"},
    {1: "first", "1": "second", "a": 1},  # keys equal once written: the last one stays
    {_Str("sub"): _Str("class"), "x": (1, (2, 3))},
    "text",
    12,
]


@pytest.mark.parametrize("value", UNUSUAL_RESULTS, ids=range(len(UNUSUAL_RESULTS)))
def test_the_spliced_envelope_is_the_one_the_parsed_result_gave(value: Any) -> None:
    assert _spliced_envelope(value) == _old_envelope(value)


def test_the_spliced_envelope_of_generated_results_is_the_one_the_parsed_result_gave() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text()
    keys = st.text() | st.integers(-(2**63), 2**63 - 1) | st.booleans()
    values = st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=20,
    )

    @settings(max_examples=300, deadline=None)
    @given(values)
    def check(value: Any) -> None:
        assert _spliced_envelope(value) == _old_envelope(value)

    check()


@pytest.mark.parametrize(
    ("sample", "order"),
    [("myrule.py", CC), ("return_style.py", CC), ("password_rule.py", PE)],
)
def test_sample_hooks_answer_the_same_envelope_bytes(sample: str, order: list[str]) -> None:
    from wtpy.compilers._envelope import success_envelope

    code = (SAMPLES / sample).read_text()
    frame = {"id": 1, "op": "run", "key": sample, "code": code, "filename": "<webtask d/t>",
             "args": SAMPLE_ARGS, "order": order, "limits": {"cpu_seconds": None}}  # fmt: skip
    reply = Worker(memory_mb=0).handle(frame)
    assert reply["ok"] is True, reply
    spliced = success_envelope(orjson.Fragment(reply["result"]), True)
    assert spliced == success_envelope(orjson.loads(reply["result"]), True)
    assert spliced.startswith(b'{"statusCode":200,"headers":{},"status":"success","data":{')


def test_a_frame_carries_the_result_as_its_tail_and_never_in_its_object() -> None:
    from wtpy.sandbox._protocol import decode

    tail = orjson.dumps({"text": "line\nbreak", "é": [1]})
    frame = encode({"id": 1, "ok": True}, tail)
    assert decode(frame, 4) == {"id": 1, "ok": True, "result": tail}
    assert decode(bytearray(frame[4:])) == {"id": 1, "ok": True, "result": tail}
    with pytest.raises(FrameError, match="tail"):
        decode(encode({"id": 1, "ok": True, "result": 1}), 4)


def test_a_resent_job_reuses_its_encoded_arguments() -> None:
    from wtpy.sandbox._pool import _with_code

    message: dict[str, Any] = {"id": 3, "op": "run", "key": "k", "args": {"a": "é\n"}, "code": None}
    code = 'def hook(a):\n    return "\\u00e9"\n'
    assert _with_code(encode(message), code) == encode({**message, "code": code})

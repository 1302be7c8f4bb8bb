"""wtpy.client: body building, envelope parsing, typed errors, timeouts.

Two back ends: httpx.MockTransport (exact control of every answer) and a small real
Starlette "fake hook" served by uvicorn on a loopback port (real sockets, real timeouts).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from conftest import ThreadServer, free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wtpy.client import (
    MAX_RESPONSE_BYTES,
    AsyncHookClient,
    HookBadRequestError,
    HookClient,
    HookClientError,
    HookCompileError,
    HookConfigurationError,
    HookError,
    HookProtocolError,
    HookResult,
    HookTimeoutError,
    HookUnauthorizedError,
    HookUnavailableError,
)

SECRET = "hook-secret-for-tests"
CLIENT = {"tenant": "default", "id": "client-1", "name": "Test", "metadata": {}}
USER = {"tenant": "default", "id": "user-1", "username": "alice", "email": "a@example.com"}
AUDIENCE = "https://api.example.com"


def success(data: Any = None, *, has_data: bool = True) -> bytes:
    envelope: dict[str, Any] = {"statusCode": 200, "headers": {}, "status": "success"}
    if has_data:
        envelope["data"] = data
    return orjson.dumps(envelope)


def failure(name: str, message: str, **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "status": "error",
            "data": {"message": message, "name": name, "stack": f"{name}: {message}", **extra},
        }
    )


def documented_rule(body: dict[str, Any]) -> dict[str, Any]:
    return {"https://foo.com/claim": "bar", "scope": [*(body.get("scope") or []), "extra"]}


# ----------------------------------------------------------------------------- a real fake hook


async def fake_hook(request: Request) -> Response:
    mode = request.path_params["mode"]
    raw = await request.body()
    json = "application/json"
    if mode == "rule":
        if request.headers.get("authorization") != f"Bearer {SECRET}":
            return Response(
                failure("Error", "Unauthorized extensibility point", statusCode=500),
                media_type=json,
            )
        return Response(success(documented_rule(orjson.loads(raw))), media_type=json)
    if mode == "nodata":
        return Response(success(has_data=False), media_type=json)
    if mode == "error":
        return Response(
            failure("InvalidScopeError", "scope not allowed", error_description="x"),
            media_type=json,
        )
    if mode == "echo":
        return Response(
            success({"headers": dict(request.headers), "body": orjson.loads(raw)}), media_type=json
        )
    if mode == "slow":
        await asyncio.sleep(1.5)
        return Response(success({}), media_type=json)
    if mode == "malformed":
        return Response(b'{"statusCode": 200, "status": "weird"}', media_type=json)
    if mode == "notjson":
        return Response(b"<html>gateway</html>", media_type="text/html")
    if mode == "missing":
        return Response(
            b'{"error":"not_found","message":"Webtask default/x not found"}', 404, media_type=json
        )
    return Response(b"", 500)


@pytest.fixture(scope="module")
def hook_url() -> Iterator[str]:
    """The fake hook under uvicorn in a background thread; yields its base URL."""
    app = Starlette(routes=[Route("/api/run/default/{mode}", fake_hook, methods=["POST"])])
    with ThreadServer(app) as server:
        yield f"{server.url}/api/run/default"


def test_real_success_documented_rule(hook_url: str) -> None:
    with HookClient(f"{hook_url}/rule", SECRET) as hook:
        result = hook.client_credentials(CLIENT, ["test"], AUDIENCE, ip="127.0.0.1")
    assert result.data == {"https://foo.com/claim": "bar", "scope": ["test", "extra"]}
    assert result.scope == ["test", "extra"]
    assert result.claims == {"https://foo.com/claim": "bar"}


def test_real_async_success_and_password(hook_url: str) -> None:
    async def main() -> HookResult:
        async with AsyncHookClient(f"{hook_url}/rule", SECRET) as hook:
            return await hook.password(USER, CLIENT, ["test"], AUDIENCE, user_agent="ua")

    assert asyncio.run(main()).scope == ["test", "extra"]


def test_real_data_absent(hook_url: str) -> None:
    with HookClient(f"{hook_url}/nodata", SECRET) as hook:
        result = hook.client_credentials(CLIENT, None, AUDIENCE)
        assert hook.invoke({"client": {}}) is None
    assert result.data is None and result.scope is None and result.claims == {}


def test_real_error_envelope(hook_url: str) -> None:
    with HookClient(f"{hook_url}/error", SECRET) as hook, pytest.raises(HookError) as caught:
        hook.client_credentials(CLIENT, ["test"], AUDIENCE)
    error = caught.value
    assert type(error) is HookError
    assert (error.name, error.message) == ("InvalidScopeError", "scope not allowed")
    assert error.data["error_description"] == "x"
    assert error.stack == "InvalidScopeError: scope not allowed"
    assert str(error) == "InvalidScopeError: scope not allowed"


@pytest.mark.parametrize("secret", [None, "wrong-secret"])
def test_real_unauthorized(hook_url: str, secret: str | None) -> None:
    with (
        HookClient(f"{hook_url}/rule", secret) as hook,
        pytest.raises(HookUnauthorizedError) as caught,
    ):
        hook.client_credentials(CLIENT, ["test"], AUDIENCE)
    assert caught.value.message == "Unauthorized extensibility point"
    assert caught.value.data["statusCode"] == 500
    assert isinstance(caught.value, HookConfigurationError)


def test_real_headers_and_body_sent(hook_url: str) -> None:
    with HookClient(f"{hook_url}/echo", SECRET) as hook:
        result = hook.password(
            USER, CLIENT, ["a", "b"], AUDIENCE, ip="10.0.0.1", user_agent="curl/8",
            extra_context={"requestId": "r1"},
        )  # fmt: skip
    headers, body = result.data["headers"], result.data["body"]
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert headers["content-type"] == "application/json"
    assert body == {
        "user": USER,
        "client": CLIENT,
        "scope": ["a", "b"],
        "audience": AUDIENCE,
        "context": {"requestId": "r1", "ip": "10.0.0.1", "userAgent": "curl/8"},
    }


def test_real_timeout(hook_url: str) -> None:
    started = time.monotonic()
    with (
        HookClient(f"{hook_url}/slow", SECRET, timeout=0.3) as hook,
        pytest.raises(HookTimeoutError),
    ):
        hook.client_credentials(CLIENT, [], AUDIENCE)
    assert time.monotonic() - started < 1.2


def test_real_async_timeout(hook_url: str) -> None:
    async def main() -> None:
        async with AsyncHookClient(f"{hook_url}/slow", SECRET, timeout=0.3) as hook:
            await hook.client_credentials(CLIENT, [], AUDIENCE)

    started = time.monotonic()
    with pytest.raises(HookTimeoutError) as caught:
        asyncio.run(main())
    assert time.monotonic() - started < 1.2
    assert isinstance(caught.value, HookUnavailableError)


def test_connection_refused_sync_and_async() -> None:
    url = f"http://127.0.0.1:{free_port()}/api/run/default/rule"
    with HookClient(url, SECRET) as hook, pytest.raises(HookUnavailableError) as caught:
        hook.client_credentials(CLIENT, [], AUDIENCE)
    assert not isinstance(caught.value, HookTimeoutError)
    assert "cannot connect" in str(caught.value) and SECRET not in str(caught.value)

    async def main() -> None:
        async with AsyncHookClient(url, SECRET) as hook:
            await hook.client_credentials(CLIENT, [], AUDIENCE)

    with pytest.raises(HookUnavailableError):
        asyncio.run(main())


@pytest.mark.parametrize(
    ("mode", "status"), [("malformed", 200), ("notjson", 200), ("missing", 404)]
)
def test_real_protocol_errors(hook_url: str, mode: str, status: int) -> None:
    with (
        HookClient(f"{hook_url}/{mode}", SECRET) as hook,
        pytest.raises(HookProtocolError) as caught,
    ):
        hook.client_credentials(CLIENT, [], AUDIENCE)
    assert caught.value.status_code == status
    if mode == "missing":
        assert "Webtask default/x not found" in str(caught.value)


def test_real_server_error_is_unavailable(hook_url: str) -> None:
    with (
        HookClient(f"{hook_url}/other", SECRET) as hook,
        pytest.raises(HookUnavailableError) as caught,
    ):
        hook.invoke({})
    assert caught.value.status_code == 500


# ----------------------------------------------------------------------------- MockTransport


class Recorder:
    """A MockTransport handler answering `content` and remembering the requests."""

    def __init__(
        self, content: bytes = b"", status: int = 200, error: Exception | None = None
    ) -> None:
        self.content, self.status, self.error = content, status, error
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return httpx.Response(self.status, content=self.content)

    @property
    def body(self) -> Any:
        return orjson.loads(self.requests[-1].content)


def mock(
    content: bytes = b"",
    status: int = 200,
    error: Exception | None = None,
    secret: str | None = SECRET,
) -> tuple[HookClient, Recorder]:
    recorder = Recorder(content, status, error)
    return HookClient(
        "http://hook.test/api/run/c/n", secret, transport=httpx.MockTransport(recorder)
    ), recorder


def amock(
    content: bytes = b"", status: int = 200, error: Exception | None = None
) -> tuple[AsyncHookClient, Recorder]:
    recorder = Recorder(content, status, error)
    return AsyncHookClient(
        "http://hook.test/api/run/c/n", SECRET, transport=httpx.MockTransport(recorder)
    ), recorder


def test_mock_client_credentials_body_and_headers() -> None:
    hook, recorder = mock(success({"scope": ["s"]}))
    result = hook.client_credentials(CLIENT, ["s"], AUDIENCE, ip="1.2.3.4", user_agent="ua")
    request = recorder.requests[0]
    assert request.method == "POST" and str(request.url) == "http://hook.test/api/run/c/n"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["content-type"] == "application/json"
    assert recorder.body == {
        "client": CLIENT, "scope": ["s"], "audience": AUDIENCE,
        "context": {"ip": "1.2.3.4", "userAgent": "ua"},
    }  # fmt: skip
    assert "user" not in recorder.body
    assert result.scope == ["s"] and result.claims == {}


def test_mock_scope_none_omitted_and_context_always_present() -> None:
    hook, recorder = mock(success({}))
    hook.client_credentials(CLIENT, None, AUDIENCE)
    assert recorder.body == {"client": CLIENT, "audience": AUDIENCE, "context": {}}


def test_mock_explicit_ip_and_user_agent_win_over_extra_context() -> None:
    hook, recorder = mock(success({}))
    hook.password(USER, CLIENT, [], AUDIENCE, ip="9.9.9.9", extra_context={"ip": "x", "k": 1})
    assert recorder.body["context"] == {"ip": "9.9.9.9", "k": 1}
    assert recorder.body["user"] == USER and recorder.body["scope"] == []


def test_mock_no_secret_sends_no_authorization() -> None:
    hook, recorder = mock(success({}), secret=None)
    hook.invoke({"a": 1})
    assert "authorization" not in recorder.requests[0].headers
    assert recorder.body == {"a": 1}


def test_mock_invoke_returns_any_data() -> None:
    for data in ([1, 2], "text", 0, False, None, {"k": "v"}):
        hook, _ = mock(success(data))
        assert hook.invoke({}) == data


def test_mock_data_absent_vs_null() -> None:
    absent, _ = mock(success(has_data=False))
    result = absent.client_credentials(CLIENT, [], AUDIENCE)
    assert result == HookResult(None) and result.scope is None and result.claims == {}


@pytest.mark.parametrize(
    ("data", "scope", "claims"),
    [
        ({"scope": ["a"], "https://x/y": 1, "plain": 2}, ["a"], {"https://x/y": 1, "plain": 2}),
        ({"scope": "a b"}, None, {}),
        ({"https://x/y": 1}, None, {"https://x/y": 1}),
        (["not", "an", "object"], None, {}),
    ],
)
def test_hook_result_helpers(data: Any, scope: Any, claims: Any) -> None:
    result = HookResult(data)
    assert result.scope == scope and result.claims == claims


@pytest.mark.parametrize(
    ("envelope", "cls"),
    [
        (
            failure("Error", "Unauthorized extensibility point", statusCode=500),
            HookUnauthorizedError,
        ),
        (
            failure(
                "CompileError",
                "Unable to compile the extensibility code as python",
                error_description="Line 1",
            ),
            HookCompileError,
        ),
        (
            failure("Error", "Body .client received by extensibility point is not an object"),
            HookBadRequestError,
        ),
        (
            failure("Error", "Body.user received by extensibility point is not an object"),
            HookBadRequestError,
        ),
        (
            failure("Error", "Body received by extensibility point is not an object"),
            HookBadRequestError,
        ),
        (
            failure("Error", "Invalid request payload JSON format", statusCode=400),
            HookBadRequestError,
        ),
        (failure("ValueError", "boom"), HookError),
        (failure("TimeoutError", "Script execution timed out after 20 seconds"), HookError),
        (orjson.dumps({"status": "error", "data": {"message": "no name"}}), HookError),
    ],
)
def test_mock_error_envelopes_are_typed(envelope: bytes, cls: type[HookError]) -> None:
    hook, _ = mock(envelope)
    with pytest.raises(HookError) as caught:
        hook.client_credentials(CLIENT, [], AUDIENCE)
    assert type(caught.value) is cls
    assert caught.value.name == (orjson.loads(envelope)["data"].get("name") or "Error")
    assert caught.value.message == orjson.loads(envelope)["data"]["message"]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"success"',
        b'{"statusCode": 200, "data": {}}',
        b'{"status": "ok", "data": {}}',
        b'{"status": "error"}',
        b'{"status": "error", "data": "boom"}',
        b'{"status": "error", "data": {"name": "Error"}}',
        b'{"status": "error", "data": {"message": 42}}',
    ],
)
def test_mock_malformed_envelopes(content: bytes) -> None:
    hook, _ = mock(content)
    with pytest.raises(HookProtocolError):
        hook.invoke({})


@pytest.mark.parametrize(
    ("status", "cls"),
    [(404, HookProtocolError), (401, HookProtocolError), (302, HookProtocolError),
     (429, HookUnavailableError), (502, HookUnavailableError), (503, HookUnavailableError)],
)  # fmt: skip
def test_mock_http_status(status: int, cls: type[HookClientError]) -> None:
    hook, _ = mock(success({}), status=status)
    with pytest.raises(cls) as caught:
        hook.invoke({})
    assert caught.value.status_code == status  # type: ignore[attr-defined]


def test_mock_oversized_answer_refused() -> None:
    hook, _ = mock(success("x" * MAX_RESPONSE_BYTES))
    with pytest.raises(HookProtocolError, match="exceeds"):
        hook.invoke({})


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        (httpx.ConnectTimeout("t"), HookTimeoutError),
        (httpx.ReadTimeout("t"), HookTimeoutError),
        (httpx.ConnectError("refused"), HookUnavailableError),
        (httpx.RemoteProtocolError("bad"), HookUnavailableError),
    ],
)
def test_mock_transport_failures(error: Exception, cls: type[HookClientError]) -> None:
    hook, _ = mock(error=error)
    with pytest.raises(cls) as caught:
        hook.invoke({})
    assert isinstance(caught.value, HookUnavailableError)
    assert not isinstance(caught.value, HookError)


def test_mock_async_client() -> None:
    async def main() -> None:
        hook, recorder = amock(
            success({"scope": ["test", "extra"], "https://foo.com/claim": "bar"})
        )
        async with hook:
            result = await hook.client_credentials(CLIENT, ["test"], AUDIENCE, ip="::1")
            assert result.scope == ["test", "extra"]
            assert result.claims == {"https://foo.com/claim": "bar"}
            assert recorder.requests[0].headers["authorization"] == f"Bearer {SECRET}"
            assert recorder.body["context"] == {"ip": "::1"}
            assert await hook.invoke({}) == {
                "scope": ["test", "extra"],
                "https://foo.com/claim": "bar",
            }

        failing, _ = amock(failure("Error", "Unauthorized extensibility point"))
        with pytest.raises(HookUnauthorizedError):
            await failing.password(USER, CLIENT, [], AUDIENCE)
        broken, _ = amock(b"nope")
        with pytest.raises(HookProtocolError):
            await broken.invoke({})
        down, _ = amock(error=httpx.ConnectError("refused"))
        with pytest.raises(HookUnavailableError):
            await down.invoke({})

    asyncio.run(main())


def test_constructor_and_argument_checks() -> None:
    with pytest.raises(ValueError):
        HookClient("ftp://example.com/x")
    with pytest.raises(ValueError):
        HookClient("/relative/path")
    with pytest.raises(ValueError):
        HookClient("http://example.com/x", "bad\nsecret")
    with pytest.raises(ValueError):
        HookClient("http://example.com/x", timeout=0)
    hook, _ = mock(success({}))
    assert SECRET not in repr(hook)
    with pytest.raises(TypeError):
        hook.client_credentials([], [], AUDIENCE)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hook.client_credentials(CLIENT, "a b", AUDIENCE)
    with pytest.raises(TypeError):
        hook.client_credentials(CLIENT, [], None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hook.password(None, CLIENT, [], AUDIENCE)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hook.invoke({"x": object()})

"""The shortcuts taken for speed behave exactly like the long way round.

* the pool cuts worker stdout into frames in its pipe callback (any chunking);
* the worker caches how to call a hook per (code object, argument order);
* the app sends invocations straight to their endpoint, errors included.
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
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from wtpy.runtime import _app, _invoke
from wtpy.runtime._pool import _Proc
from wtpy.runtime._protocol import FrameError, encode
from wtpy.runtime._worker import Worker

# --------------------------------------------------------------------------- pool frames


def _feed(chunks: list[bytes]) -> tuple[list[dict[str, Any]], Exception | None]:
    async def scenario() -> tuple[list[dict[str, Any]], Exception | None]:
        proc = _Proc()
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


FRAMES = [{"id": 1, "ok": True, "result": {"a": "é✓" * 50}}, {"id": 2}, {"id": 3, "logs": []}]
STREAM = b"".join(encode(frame) for frame in FRAMES)


@pytest.mark.parametrize("size", [1, 3, 4, 5, 17, len(STREAM)])
def test_frames_survive_any_chunking(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    frames, error = _feed(chunks)
    assert frames == FRAMES
    assert isinstance(error, FrameError) and "closed" in str(error)


def test_frames_before_garbage_are_kept_and_the_garbage_ends_the_stream() -> None:
    frames, error = _feed([encode({"id": 1}) + b"\x00\x00\x00\x02{x" + encode({"id": 2})])
    assert frames == [{"id": 1}]
    assert isinstance(error, FrameError)


def test_oversized_frame_ends_the_stream() -> None:
    frames, error = _feed([encode({"id": 1}), b"\xff\xff\xff\xff"])
    assert frames == [{"id": 1}]
    assert isinstance(error, FrameError) and "exceeds" in str(error)


def test_output_nobody_asked_for_is_not_buffered_without_bound() -> None:
    from wtpy.runtime._protocol import MAX_FRAME_BYTES

    big = encode({"x": "y" * (MAX_FRAME_BYTES // 3)})
    frames, error = _feed([big] * 5)
    assert len(frames) == 2
    assert isinstance(error, FrameError) and "nobody asked for" in str(error)


def test_a_cancelled_read_loses_nothing() -> None:
    async def scenario() -> dict[str, Any]:
        proc = _Proc()
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
    reply = orjson.loads(orjson.dumps(worker.handle(frame)))  # the result is an orjson.Fragment
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
        name: [_run(worker, code, ARGS, order) for _ in range(2)] for name, order in (("cc", CC), ("pe", PE))
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
    from wtpy.runtime import _worker

    def hook(client, scope):  # type: ignore[no-untyped-def]
        return client

    plain = _worker._cached_plan(hook, CC)
    hook.extra = 1  # type: ignore[attr-defined]
    key = (hook.__code__, tuple(PE))
    _worker._cached_plan(hook, PE)
    assert key not in _worker._PLANS
    assert plain == ("names", ("client", "scope"), 0, None)


# --------------------------------------------------------------------------- direct app path


def _call(
    monkeypatch: pytest.MonkeyPatch, endpoint: Callable[[Request], Any], tmp_path: Path,
    requests: list[tuple[str, str]],
) -> list[httpx.Response]:  # fmt: skip
    """Send `requests` (method, path) to create_app()'s app with `endpoint` behind both
    invocation routes (no lifespan: the runtime is never started)."""
    for route in _app._INVOKE_ROUTES:
        monkeypatch.setattr(route, "endpoint", endpoint)
    settings = _app.Settings(data_dir=tmp_path, announce_token=False, workers=1)
    app = _app.create_app(settings)

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://wtpy") as client:
            return [await client.request(method, path) for method, path in requests]

    return asyncio.run(scenario())


def test_direct_path_passes_path_params_and_the_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async def endpoint(request: Request) -> Response:
        seen = {**request.path_params, "app": isinstance(request.app, Starlette)}
        return Response(orjson.dumps(seen), media_type="application/json")

    first, second = _call(monkeypatch, endpoint, tmp_path, [("POST", "/api/run/c1/n1"), ("GET", "/api/run/c1/n1/x/y")])
    assert first.json() == {"container": "c1", "name": "n1", "app": True}
    assert second.json() == {"container": "c1", "name": "n1", "path": "x/y", "app": True}


def test_direct_path_errors_end_as_through_the_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async def endpoint(request: Request) -> Response:
        raise RuntimeError("boom")

    failed, wrong_method = _call(
        monkeypatch, endpoint, tmp_path, [("POST", "/api/run/c1/n1"), ("TRACE", "/api/run/c1/n1")]
    )
    assert failed.status_code == 500
    assert failed.json() == {"error": "internal_error", "message": "Internal server error"}
    # A method the invocation routes do not take goes the normal way: 405 from the router.
    assert wrong_method.status_code == 405


def test_invocation_routes_are_the_ones_the_direct_path_knows() -> None:
    assert [route.path for route in _app._INVOKE_ROUTES] == [route.path for route in _invoke.routes]

"""Invocation endpoint: `ANY /api/run/{container}/{name}[/{path}]` -> compiler -> sandbox -> envelope.

A plain ASGI handler rather than a Starlette route: invocations are the hot path, and
Starlette's router, Request, Headers and Response objects cost more per call than the
rest of the server's own work for one (see bench/RESULTS.md). It answers everything under
`/api/run/` itself, errors included, with the same bodies the management API uses.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import Receive, Scope, Send

from wtpy.compilers import Compiler, HookRequest, WebtaskContext, error_envelope, get_compiler
from wtpy.compilers._body import node_headers
from wtpy.sandbox import ArgumentsNotEncodable
from wtpy.storage import Webtask

from ._api import MIN_TIMEOUT, TIMEOUT_META
from ._http import ApiError, api_error_body, check_declared_length, too_large, where_raised
from ._logs import REQUEST_ID_HEADER, envelope_error, new_request_id
from ._names import valid_name
from ._runtime import Runtime

__all__ = ["INVOKE_PREFIX", "METHODS", "Invoker"]

logger = logging.getLogger("wtpy.invoke")

INVOKE_PREFIX = "/api/run/"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_ALLOW = ", ".join(METHODS).encode("latin-1")
TOO_DEEP = "Request payload is nested too deeply to pass to the extensibility point"

_JSON = (b"content-type", b"application/json")
_REQUEST_ID = REQUEST_ID_HEADER.encode("latin-1")


class _ClientGone(Exception):
    """The client disconnected before its request body arrived: nobody to answer."""


_Answer = tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]  # status, body, extra headers
_INTERNAL_ERROR = ApiError(500, "internal_error", "Internal server error")


def _envelope(body: bytes) -> _Answer:
    return 200, body, ()


def _refusal(error: ApiError) -> _Answer:
    return error.status, api_error_body(error), ()


class Invoker:
    """The ASGI app for everything under `/api/run/` (the app routes those paths here)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = new_request_id()
        try:
            status, body, extra = await self._invoke(scope, receive, request_id)
        except _ClientGone:
            return
        except Exception as exc:
            # Never the message or a traceback: either could carry hook arguments or secrets.
            logger.error("unhandled %s in an invocation (%s)", type(exc).__name__, where_raised(exc))
            status, body, extra = _refusal(_INTERNAL_ERROR)
        # Every answer carries the request id, errors included.
        headers = [_JSON, (b"content-length", b"%d" % len(body)), (_REQUEST_ID, request_id.encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _invoke(self, scope: Scope, receive: Receive, request_id: str) -> _Answer:
        started = time.perf_counter()
        method: str = scope["method"]
        if method not in METHODS:
            status, body, _ = _refusal(ApiError(405, "method_not_allowed", "Method Not Allowed"))
            return status, body, ((b"allow", _ALLOW),)
        container, _, rest = scope["path"][len(INVOKE_PREFIX) :].partition("/")
        name, _, sub_path = rest.partition("/")
        if not (container and name):
            return _refusal(ApiError(404, "not_found", "Not Found"))

        runtime = self.runtime
        webtask = runtime.cached(container, name)  # only valid names are ever stored
        if webtask is None:
            if not (valid_name(container) and valid_name(name)):
                return _refusal(ApiError(400, "invalid_name", "Invalid container or webtask name"))
            webtask = await runtime.get(container, name)
            if webtask is None:
                return _refusal(ApiError(404, "not_found", f"Webtask {container}/{name} not found"))

        headers = node_headers(scope["headers"])
        try:
            body = await _read_body(receive, headers.get("content-length"), runtime.settings.max_body_bytes)
        except ApiError as error:  # the webtask exists: its log shows the refused invocation
            _log_refusal(runtime, webtask, request_id, started, error.message)
            return _refusal(error)

        compiler_name = webtask.meta.get("wt-compiler", "")
        compiler = get_compiler(compiler_name)
        if compiler is None:
            # The management API refuses unknown compilers; this guards data written by another version.
            envelope = error_envelope("Error", f"Unknown extensibility point compiler {compiler_name!r}")
            _log_refusal(runtime, webtask, request_id, started, envelope_error(envelope))
            return _envelope(envelope)

        query: bytes = scope["query_string"]
        hook_request = HookRequest(
            method,
            headers,
            dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if query else {},
            f"/{sub_path}" if sub_path else "",
            body,
        )
        prepared = compiler.prepare(hook_request, WebtaskContext(container, name, webtask.meta, webtask.secrets))
        if isinstance(prepared, bytes):
            _log_refusal(runtime, webtask, request_id, started, envelope_error(prepared))
            return _envelope(prepared)
        return _envelope(await self._run(webtask, compiler, compiler_name, prepared.args, prepared.order, request_id, started))

    async def _run(
        self,
        webtask: Webtask,
        compiler: Compiler,
        compiler_name: str,
        args: dict[str, Any],
        order: tuple[str, ...],
        request_id: str,
        started: float,
    ) -> bytes:
        runtime = self.runtime
        try:
            outcome = await runtime.pool.run(
                key=webtask.code_hash,
                code=webtask.code,
                filename=f"<webtask {webtask.container}/{webtask.name}>",
                args=args,
                order=order,
                timeout=_timeout(webtask.meta, runtime),
                container=webtask.container,
                on_logs=lambda lines: runtime.logs.publish_lines(
                    webtask.container, webtask.name, request_id, lines, webtask.secrets
                ),
            )
        except ArgumentsNotEncodable:
            # The arguments come from orjson.loads, which reads 1024 levels of nesting but
            # writes about 254: a deeper body cannot be passed on. An error envelope, not a 500.
            _log_refusal(runtime, webtask, request_id, started, TOO_DEEP)
            return compiler.failure({"name": "Error", "message": TOO_DEEP, "stack": f"Error: {TOO_DEEP}"})
        if outcome.outcome == "success":
            # The result's JSON text as the worker wrote it, spliced into the envelope unparsed.
            result = None if outcome.result_json is None else orjson.Fragment(outcome.result_json)
            envelope = compiler.success(result, outcome.has_result)
            if not outcome.logs:
                runtime.logs.publish_success(
                    webtask.container, webtask.name, request_id, compiler_name, outcome.duration_ms
                )
                return envelope
        else:
            envelope = compiler.failure(outcome.error or {"name": "Error", "message": "Unknown error"})
        runtime.logs.publish_invocation(
            container=webtask.container,
            name=webtask.name,
            request_id=request_id,
            compiler=compiler_name,
            outcome=outcome.outcome,
            duration_ms=outcome.duration_ms,
            logs=outcome.logs,
            error=outcome.error if outcome.outcome != "success" else None,
            secrets=webtask.secrets,
        )
        return envelope


async def _read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The request body from ASGI messages, with the same limits as _http.read_body."""
    check_declared_length(declared, limit)
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            body = body + chunk if body else chunk
            if len(body) > limit:
                raise too_large(limit)
        if not message.get("more_body", False):
            return body


def _timeout(meta: dict[str, str], runtime: Runtime) -> float:
    """The webtask's `wtpy-timeout` meta (seconds) within the server's bounds, else the default."""
    raw = meta.get(TIMEOUT_META)
    if raw is not None:
        try:
            return min(max(float(raw), MIN_TIMEOUT), runtime.settings.max_timeout)
        except ValueError:
            pass
    return runtime.settings.default_timeout


def _log_refusal(runtime: Runtime, webtask: Webtask, request_id: str, started: float, error: object) -> None:
    """Summary record for an invocation that ended before the hook ran (outcome error)."""
    runtime.logs.publish_invocation(
        container=webtask.container,
        name=webtask.name,
        request_id=request_id,
        compiler=webtask.meta.get("wt-compiler", ""),
        outcome="error",
        duration_ms=(time.perf_counter() - started) * 1000,
        error=error,  # type: ignore[arg-type]
        secrets=webtask.secrets,
    )

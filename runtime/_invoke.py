"""Invocation endpoint: `/api/run/{container}/{name}[/{path}]` -> compiler -> sandbox -> envelope."""

from __future__ import annotations

import logging
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wtpy.compilers import HookRequest, WebtaskContext, error_envelope, get_compiler

from ._api import MIN_TIMEOUT, TIMEOUT_META
from ._http import JSON, ApiError, error_response, read_body
from ._logs import REQUEST_ID_HEADER, envelope_error, new_request_id
from ._names import valid_name
from ._runtime import Runtime
from ._store import Webtask

__all__ = ["routes"]

logger = logging.getLogger("wtpy.invoke")
TOO_DEEP = "Request payload is nested too deeply to pass to the extensibility point"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _timeout(meta: dict[str, str], runtime: Runtime) -> float:
    try:
        seconds = float(meta[TIMEOUT_META])
    except (KeyError, ValueError):
        return runtime.settings.default_timeout
    return min(max(seconds, MIN_TIMEOUT), runtime.settings.max_timeout)


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


async def run_webtask(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    container = request.path_params["container"]
    name = request.path_params["name"]
    request_id = new_request_id()
    headers = {REQUEST_ID_HEADER: request_id}
    started = time.perf_counter()
    webtask: Webtask | None = None
    try:
        if not (valid_name(container) and valid_name(name)):
            raise ApiError(400, "invalid_name", "Invalid container or webtask name")
        webtask = await runtime.get(container, name)
        if webtask is None:
            raise ApiError(404, "not_found", f"Webtask {container}/{name} not found")
        body = await read_body(request, runtime.settings.max_body_bytes)
    except ApiError as error:
        if webtask is not None:  # e.g. 413: the webtask exists, the invocation ends early
            _log_refusal(runtime, webtask, request_id, started, error.message)
        response = error_response(error)
        response.headers.update(headers)
        return response

    compiler_name = webtask.meta.get("wt-compiler", "")
    compiler = get_compiler(compiler_name)
    if compiler is None:
        # The management API refuses unknown compilers; this guards data written by another version.
        envelope = error_envelope("Error", f"Unknown extensibility point compiler {compiler_name!r}")
        _log_refusal(runtime, webtask, request_id, started, envelope_error(envelope))
        return Response(envelope, media_type=JSON, headers=headers)

    sub_path = request.path_params.get("path", "")
    hook_request = HookRequest(
        method=request.method,
        headers=request.headers,
        query=request.query_params,
        path=f"/{sub_path}" if sub_path else "",
        body=body,
    )
    prepared = compiler.prepare(
        hook_request, WebtaskContext(container, name, webtask.meta, webtask.secrets)
    )
    if isinstance(prepared, bytes):
        _log_refusal(runtime, webtask, request_id, started, envelope_error(prepared))
        return Response(prepared, media_type=JSON, headers=headers)

    try:
        outcome = await runtime.pool.run(
            key=webtask.code_hash,
            code=webtask.code,
            filename=f"<webtask {container}/{name}>",
            args=prepared.args,
            order=list(prepared.order),
            timeout=_timeout(webtask.meta, runtime),
        )
    except TypeError:
        # The arguments would not encode for the worker. They come from orjson.loads, so the
        # one way is nesting: orjson reads 1024 levels but writes about 254. Without this a
        # client could answer itself a 500 (and a traceback in the server log) at will.
        envelope = compiler.failure({"name": "Error", "message": TOO_DEEP, "stack": f"Error: {TOO_DEEP}"})
        _log_refusal(runtime, webtask, request_id, started, TOO_DEEP)
        return Response(envelope, media_type=JSON, headers=headers)
    if outcome.outcome == "success":
        envelope = compiler.success(outcome.result, outcome.has_result)
    else:
        envelope = compiler.failure(outcome.error or {"name": "Error", "message": "Unknown error"})
    runtime.logs.publish_invocation(
        container=container,
        name=name,
        request_id=request_id,
        compiler=compiler_name,
        outcome=outcome.outcome,
        duration_ms=outcome.duration_ms,
        logs=outcome.logs,
        error=outcome.error if outcome.outcome != "success" else None,
        secrets=webtask.secrets,
    )
    return Response(envelope, media_type=JSON, headers=headers)


routes = [
    Route("/api/run/{container}/{name}", run_webtask, methods=ALL_METHODS),
    Route("/api/run/{container}/{name}/{path:path}", run_webtask, methods=ALL_METHODS),
]

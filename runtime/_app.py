"""The Starlette application: routes, lifespan and the error boundary."""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from . import _api, _invoke, _logs
from ._http import ApiError, error_response, json_response
from ._runtime import Runtime
from ._settings import Settings

__all__ = ["create_app"]

logger = logging.getLogger("wtpy")


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "bad_request")
    return error_response(ApiError(exc.status_code, code, str(exc.detail)))


async def server_error(request: Request, exc: Exception) -> Response:
    # Log the exception type only: a traceback could carry hook arguments or secrets.
    logger.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return error_response(ApiError(500, "internal_error", "Internal server error"))


class _App(Starlette):
    """Starlette with a direct path for invocations, the hot path.

    A request under /api/run/ that one of the invocation routes matches fully goes straight
    to its endpoint, past the middleware stack and the router walk (ServerErrorMiddleware,
    ExceptionMiddleware, Router, Route, the request_response wrappers): together they cost
    more than the rest of the server's work for an invocation. Errors end as they do
    through the stack: an HTTPException -> http_error; anything else -> server_error's 500
    (when nothing was sent yet), then re-raised for uvicorn to log. Everything else,
    including a wrong method (405) on an invocation path, takes the normal route.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(_INVOKE_PREFIX):
            for route in _INVOKE_ROUTES:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope["app"] = self
                    if "router" not in scope:
                        scope["router"] = self.router
                    scope.update(child_scope)
                    await _call_endpoint(route.endpoint, scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


_INVOKE_PREFIX = "/api/run/"
_INVOKE_ROUTES = [route for route in _invoke.routes if isinstance(route, Route)]
assert all(
    route.path.startswith(_INVOKE_PREFIX) and inspect.iscoroutinefunction(route.endpoint)
    for route in _INVOKE_ROUTES
)


async def _call_endpoint(
    endpoint: Callable[[Request], Awaitable[Response]], scope: Scope, receive: Receive, send: Send
) -> None:
    request = Request(scope, receive, send)
    reraise: Exception | None = None
    try:
        response = await endpoint(request)
    except HTTPException as exc:
        response = await http_error(request, exc)
    except Exception as exc:
        response = await server_error(request, exc)
        reraise = exc
    await response(scope, receive, send)
    if reraise is not None:
        raise reraise


def create_app(settings: Settings, runtime: Runtime | None = None) -> Starlette:
    runtime = runtime or Runtime(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        if runtime.admin_token_created and settings.announce_token:
            # Shown once, at creation; afterwards it lives only in the data dir (mode 0600).
            print(
                f"wtpy: created admin token (shown once; stored in {settings.data_dir / 'admin.token'}):\n"
                f"{runtime.admin_token}",
                file=sys.stdout,
                flush=True,
            )
        try:
            yield
        finally:
            await runtime.close()

    app = _App(
        # The invocation routes come first: Starlette tries routes in order, and they are
        # the hot path (the prefixes do not overlap, so the order changes nothing else).
        routes=[*_invoke.routes, Route("/healthz", health), *_api.routes, *_logs.routes],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app

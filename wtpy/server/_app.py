"""The Starlette application: routes, lifespan and the error boundary."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from wtpy.runtime import Runtime, Settings
from wtpy.sandbox import OsSandboxUnavailable

from . import _api, _invoke, _sse
from ._errors import exception_handlers
from ._http import json_response, where_raised

__all__ = ["create_app"]

logger = logging.getLogger("wtpy")


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


class _App(Starlette):
    """Starlette, with everything under /api/run/ handed to the invocation handler.

    Invocations are the hot path: they skip the middleware stack and the router walk
    (ServerErrorMiddleware, ExceptionMiddleware, Router, Route, request_response wrappers),
    which together cost more than the rest of the server's work for one. The handler
    answers every request under the prefix itself, errors included (see _invoke.py).
    """

    invoker: _invoke.Invoker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(_invoke.INVOKE_PREFIX):
            await self.invoker(scope, receive, send)
            return
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # lifespan: failures must reach uvicorn
            return
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:
            # Starlette answered 500 (_errors.py) if it could, then re-raised for the server
            # to log: uvicorn would log the whole traceback, messages included, which may
            # hold secrets. The type and where it was raised are enough to find the bug.
            logger.error(
                "unhandled %s on %s %s (%s)",
                type(exc).__name__,
                scope.get("method"),
                scope.get("path"),
                where_raised(exc),
            )


def create_app(settings: Settings, runtime: Runtime | None = None) -> Starlette:
    runtime = runtime or Runtime(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await runtime.start()
        except OsSandboxUnavailable as exc:
            print(f"wtpy: {exc}", file=sys.stderr, flush=True)
            raise
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
        routes=[Route("/healthz", health), *_api.routes, *_sse.routes],
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.invoker = _invoke.Invoker(runtime)
    return app

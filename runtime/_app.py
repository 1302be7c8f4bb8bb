"""The Starlette application: routes, lifespan and the error boundary."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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

    app = Starlette(
        # The invocation routes come first: Starlette tries routes in order, and they are
        # the hot path (the prefixes do not overlap, so the order changes nothing else).
        routes=[*_invoke.routes, Route("/healthz", health), *_api.routes, *_logs.routes],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app

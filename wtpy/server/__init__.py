"""wtpy.server: the HTTP layer over wtpy.runtime (Starlette app, management and logs
endpoints, the invocation endpoint, errors to responses, uvicorn)."""

from __future__ import annotations

from ._app import create_app
from ._server import serve

__all__ = ["create_app", "serve"]

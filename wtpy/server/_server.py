"""`wtpy serve`: run the app under uvicorn (uvloop + httptools when available)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import uvicorn

from wtpy.contract import DEFAULT_HOST, DEFAULT_PORT
from wtpy.runtime import Settings

from ._app import create_app
from ._httpproto import http_protocol

__all__ = ["serve"]


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    data_dir: Path | None = None,
    workers: int | None = None,
    **options: object,
) -> None:
    """Run the runtime in the foreground until interrupted."""
    fields: dict[str, object] = {"host": host, "port": port, **options}
    if data_dir is not None:
        fields["data_dir"] = Path(data_dir)
    if workers is not None:
        fields["workers"] = workers
    settings = Settings(**fields)  # type: ignore[arg-type]
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # uvloop and httptools (both in uvicorn[standard]) explicitly: "auto" silently falls
        # back to asyncio / h11, several times slower, when one fails to import.
        loop="uvloop" if _importable("uvloop") else "asyncio",
        # httptools with wtpy's cap on the request head (431 above it; see _httpproto.py).
        http=http_protocol(settings.max_header_bytes) if _importable("httptools") else "h11",
        h11_max_incomplete_event_size=settings.max_header_bytes,
        # Access logs would record query strings (which may carry keys); wtpy logs its own records.
        access_log=False,
        # wtpy never looks at the client's address: no X-Forwarded-* rewriting per request.
        proxy_headers=False,
        log_level="info",
        lifespan="on",
    )

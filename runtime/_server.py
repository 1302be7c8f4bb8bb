"""`wtpy serve`: run the app under uvicorn (uvloop + httptools when available)."""

from __future__ import annotations

from pathlib import Path

import uvicorn

from ._app import create_app
from ._settings import Settings

__all__ = ["serve"]


def serve(
    host: str = "127.0.0.1",
    port: int = 8721,
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
        loop="auto",
        http="auto",
        # Access logs would record query strings (which may carry keys); wtpy logs its own records.
        access_log=False,
        log_level="info",
        lifespan="on",
    )

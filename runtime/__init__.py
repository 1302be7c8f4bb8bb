"""wtpy.runtime: the hook server (store, sandboxed workers, HTTP API).

Exports resolve lazily: sandbox workers run `python -m wtpy.runtime._worker`, which
imports this package first, and must not pay for (or hold) the web server's modules.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["Runtime", "Settings", "create_app", "default_data_dir", "serve"]

_EXPORTS = {
    "Runtime": "._runtime",
    "Settings": "._settings",
    "create_app": "._app",
    "default_data_dir": "._settings",
    "serve": "._server",
}

if TYPE_CHECKING:
    from ._app import create_app
    from ._runtime import Runtime
    from ._server import serve
    from ._settings import Settings, default_data_dir


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wtpy.runtime' has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)

"""wtpy.runtime: the domain and composition root (Runtime, Settings, webtask rules, access
and tokens, the log hub, invocations). No HTTP here: that is wtpy.server.

Exports resolve lazily: sandbox workers run `python -m wtpy.runtime._worker`, which
imports this package first, and must not pay for (or hold) the server's modules. Plain
imports will do once the sandbox lives in its own package.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = [
    "DomainError",
    "Forbidden",
    "Invalid",
    "InvalidName",
    "NotFound",
    "OsSandboxUnavailable",
    "Principal",
    "Runtime",
    "Settings",
    "TooLarge",
    "Unauthorized",
    "Webtask",
    "default_data_dir",
]

_EXPORTS = {
    "DomainError": "._errors",
    "Forbidden": "._errors",
    "Invalid": "._errors",
    "InvalidName": "._errors",
    "NotFound": "._errors",
    "OsSandboxUnavailable": "._pool",
    "Principal": "._access",
    "Runtime": "._runtime",
    "Settings": "._settings",
    "TooLarge": "._errors",
    "Unauthorized": "._errors",
    "Webtask": "._store",
    "default_data_dir": "._settings",
}

if TYPE_CHECKING:
    from ._access import Principal
    from ._errors import (
        DomainError,
        Forbidden,
        Invalid,
        InvalidName,
        NotFound,
        TooLarge,
        Unauthorized,
    )
    from ._pool import OsSandboxUnavailable
    from ._runtime import Runtime
    from ._settings import Settings, default_data_dir
    from ._store import Webtask


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wtpy.runtime' has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)

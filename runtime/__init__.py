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
    "Invocations",
    "LogFilter",
    "LogHub",
    "NotFound",
    "OsSandboxUnavailable",
    "Principal",
    "Runtime",
    "Settings",
    "TooLarge",
    "Unauthorized",
    "Webtask",
    "check_names",
    "default_data_dir",
    "iso_time",
    "new_request_id",
    "not_found",
    "parse_level",
    "parse_since",
    "patch_request",
    "presented_token",
    "put_request",
    "token_request",
    "token_view",
    "webtask_view",
]

_MODULES = {
    "._access": ("Principal", "presented_token"),
    "._errors": ("DomainError", "Forbidden", "Invalid", "InvalidName", "NotFound", "TooLarge", "Unauthorized"),
    "._invoke": ("Invocations",),
    "._logs": ("LogFilter", "LogHub", "iso_time", "new_request_id", "parse_level", "parse_since"),
    "._pool": ("OsSandboxUnavailable",),
    "._runtime": ("Runtime",),
    "._settings": ("Settings", "default_data_dir"),
    "._store": ("Webtask",),
    "._tokens": ("token_request", "token_view"),
    "._webtasks": ("check_names", "not_found", "patch_request", "put_request", "webtask_view"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

if TYPE_CHECKING:
    from ._access import Principal, presented_token
    from ._errors import (
        DomainError,
        Forbidden,
        Invalid,
        InvalidName,
        NotFound,
        TooLarge,
        Unauthorized,
    )
    from ._invoke import Invocations
    from ._logs import LogFilter, LogHub, iso_time, new_request_id, parse_level, parse_since
    from ._pool import OsSandboxUnavailable
    from ._runtime import Runtime
    from ._settings import Settings, default_data_dir
    from ._store import Webtask
    from ._tokens import token_request, token_view
    from ._webtasks import check_names, not_found, patch_request, put_request, webtask_view


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wtpy.runtime' has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)

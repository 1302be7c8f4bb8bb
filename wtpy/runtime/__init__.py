"""wtpy.runtime: the domain and composition root (Runtime, Settings, webtask rules, access
and tokens, the log hub, invocations). No HTTP here: that is wtpy.server.
"""

from __future__ import annotations

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
from ._logs import LogFilter, LogHub, new_request_id, parse_level, parse_since
from ._runtime import Runtime
from ._settings import Settings, default_data_dir
from ._tokens import token_request, token_view
from ._webtasks import check_names, not_found, patch_request, put_request, webtask_view

__all__ = [
    "DomainError",
    "Forbidden",
    "Invalid",
    "InvalidName",
    "Invocations",
    "LogFilter",
    "LogHub",
    "NotFound",
    "Principal",
    "Runtime",
    "Settings",
    "TooLarge",
    "Unauthorized",
    "check_names",
    "default_data_dir",
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

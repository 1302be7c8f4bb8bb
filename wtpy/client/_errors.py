"""Exceptions raised by the hook client.

HookClientError                 base of everything below
+-- HookError                   the runtime answered an error envelope
|   +-- HookConfigurationError  ... caused by the caller's set-up, not by the hook's logic
|       +-- HookUnauthorizedError   wrong or missing secret ("Unauthorized extensibility point")
|       +-- HookBadRequestError     the runtime refused the body (its validation messages)
|       +-- HookCompileError        the hook's code does not compile
+-- HookUnavailableError        no answer: connection failed, timed out, HTTP 5xx/429
|   +-- HookTimeoutError        ... the timeout elapsed
+-- HookProtocolError           an answer that is not an envelope (not JSON, wrong shape, 4xx)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "UNAUTHORIZED_MESSAGE",
    "HookBadRequestError",
    "HookClientError",
    "HookCompileError",
    "HookConfigurationError",
    "HookError",
    "HookProtocolError",
    "HookTimeoutError",
    "HookUnauthorizedError",
    "HookUnavailableError",
    "hook_error_from",
]

UNAUTHORIZED_MESSAGE = "Unauthorized extensibility point"
_INVALID_JSON_MESSAGE = "Invalid request payload JSON format"
# auth0-ext-compilers' validation messages: "Body received by ...", "Body .client received by ...",
# "Body.audience received by ...".
_VALIDATION = re.compile(r"Body(?: ?\.\w+)? received by extensibility point is ")


class HookClientError(Exception):
    """Base class: invoking the extensibility point did not produce a result."""


class HookError(HookClientError):
    """The runtime answered `{"status": "error", "data": {...}}`.

    `name` and `message` come from the envelope's data (`name` defaults to "Error");
    `data` is the whole data object (with `stack` and any extra keys such as
    `error_description` or `statusCode`).
    """

    def __init__(self, name: str, message: str, data: Mapping[str, Any]) -> None:
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name
        self.message = message
        self.data: dict[str, Any] = dict(data)

    @property
    def stack(self) -> str | None:
        stack = self.data.get("stack")
        return stack if isinstance(stack, str) else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, message={self.message!r})"


class HookConfigurationError(HookError):
    """An error envelope caused by how the hook is set up or called, not by the hook's logic."""


class HookUnauthorizedError(HookConfigurationError):
    """The secret sent as `Authorization: Bearer` is missing or differs from the webtask's
    `auth0-extension-secret`."""


class HookBadRequestError(HookConfigurationError):
    """The runtime rejected the request body (not JSON, or failed the exchange's validation)."""


class HookCompileError(HookConfigurationError):
    """The hook's code does not compile; `data["error_description"]` says where."""


class HookUnavailableError(HookClientError):
    """The extensibility point could not be reached or gave no usable answer in time.

    `status_code` is set when the runtime (or a proxy in front of it) answered with an
    HTTP 5xx or 429 status.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class HookTimeoutError(HookUnavailableError):
    """No complete answer within the client's timeout."""


class HookProtocolError(HookClientError):
    """The answer is not a well-formed envelope: not JSON, wrong shape, or an unexpected HTTP
    status (e.g. 404 for a webtask that does not exist). `status_code` is the HTTP status."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def hook_error_from(data: Mapping[str, Any]) -> HookError:
    """The typed exception for an error envelope's `data` (already checked to hold a message)."""
    name = data.get("name")
    name = name if isinstance(name, str) and name else "Error"
    message = data["message"]
    cls: type[HookError] = HookError
    if message == UNAUTHORIZED_MESSAGE:
        cls = HookUnauthorizedError
    elif name == "CompileError":
        cls = HookCompileError
    elif message == _INVALID_JSON_MESSAGE or _VALIDATION.match(message):
        cls = HookBadRequestError
    return cls(name, message, data)

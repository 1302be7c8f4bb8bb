"""The domain's errors: what went wrong, as a stable code and a message for people.

They know nothing of HTTP. The server maps each class to a status once (see
wtpy.server._errors); the code and message become the body `{"error": code, "message": ...}`.
"""

from __future__ import annotations

__all__ = [
    "DomainError",
    "Forbidden",
    "Invalid",
    "InvalidName",
    "NotFound",
    "TooLarge",
    "Unauthorized",
]


class DomainError(Exception):
    """A refused operation: `code` is stable (clients branch on it), `message` is not."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class Unauthorized(DomainError):
    """No usable credential: none at all, or an expired or revoked token."""

    code = "unauthorized"


class Forbidden(DomainError):
    """A credential that is not recognised, or whose scope does not cover the operation."""

    code = "forbidden"


class NotFound(DomainError):
    code = "not_found"


class InvalidName(DomainError):
    """A container or webtask name (as addressed, not as sent in a body) that cannot exist."""

    code = "invalid_name"


class Invalid(DomainError):
    """A webtask or token that breaks a rule; `code` says which kind (invalid_webtask, ...)."""

    code = "invalid"


class TooLarge(DomainError):
    """Something above its size limit (hook code)."""

    code = "payload_too_large"

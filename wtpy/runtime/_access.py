"""Who is calling and what they may do: bearer credentials, principals and scope checks.

Authentication itself (which principal a token string is) is the token registry's job
(see _tokens.py); this module turns what a request presented into a token string and
checks a principal's scope against the container or webtask an operation is about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ._errors import Forbidden, Unauthorized

__all__ = ["ADMIN", "Kind", "Principal", "bearer_token", "presented_token"]

# RFC 6750 b64token (token68); the scheme is case-insensitive, 1*SP before the token.
_BEARER_RE = re.compile(r"bearer +([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE | re.ASCII)

Kind = Literal["admin", "container", "webtask"]


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when absent or malformed."""
    if not authorization_header:
        return None
    match = _BEARER_RE.fullmatch(authorization_header.strip())
    return match.group(1) if match else None


def presented_token(authorization_header: str | None, key: str | None = None) -> str:
    """The token a caller presented: its Bearer header, or `key` (the logs endpoint's
    `?key=`, as in the original) when it sent no Authorization header. Unauthorized
    when there is none to check."""
    if key is not None and not authorization_header:
        if not key:
            raise Unauthorized("Send the token as 'Authorization: Bearer <token>' or ?key=")
        return key
    token = bearer_token(authorization_header)
    if not token:
        raise Unauthorized("Send a management token as 'Authorization: Bearer <token>'")
    return token


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a management request is: the admin, or a token scoped to a container/webtask."""

    kind: Kind
    container: str | None = None
    name: str | None = None
    token_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    def allows(
        self, container: str | None, name: str | None = None, *, narrow: bool = False
    ) -> bool:
        """May this principal act on `container` (name None: the whole container) or on
        `container/name`? With narrow=True a webtask token may ask for its whole container
        and the caller promises to restrict the answer to `self.name`."""
        if self.kind == "admin":
            return True
        if container is None or container != self.container:
            return False
        if self.kind == "container":
            return True
        if name is None:
            return narrow
        return name == self.name

    def require(
        self, container: str | None, name: str | None = None, *, narrow: bool = False
    ) -> None:
        if not self.allows(container, name, narrow=narrow):
            raise Forbidden(self._forbidden_message(container, name))

    def require_admin(self, what: str) -> None:
        """Forbidden unless this is the admin; `what` names the operation (for the message)."""
        if not self.is_admin:
            raise Forbidden(f"Only the admin token may {what}; this is {self.describe()}")

    def describe(self) -> str:
        if self.kind == "admin":
            return "the admin token"
        if self.kind == "container":
            return f"a token scoped to container {self.container!r}"
        return f"a token scoped to webtask {self.container}/{self.name}"

    def _forbidden_message(self, container: str | None, name: str | None) -> str:
        if container is None:
            return f"This call needs the admin token; this is {self.describe()}"
        target = f"container {container!r}" if name is None else f"webtask {container}/{name}"
        return f"This token may not access {target}: it is {self.describe()}"


ADMIN = Principal("admin")

"""Management tokens: the admin token file, fresh tokens, constant-time comparison."""

from __future__ import annotations

import hmac
import re
import secrets
from pathlib import Path

from wtpy.files import ensure_data_dir, read_or_create_file

__all__ = [
    "ADMIN_TOKEN_FILE",
    "TOKEN_PREFIX",
    "AdminTokenError",
    "load_or_create_admin_token",
    "new_token",
    "tokens_equal",
]

ADMIN_TOKEN_FILE = "admin.token"
TOKEN_PREFIX = "wtpy_"

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*", re.ASCII)


class AdminTokenError(RuntimeError):
    """The admin token file exists but does not hold a usable token."""


def new_token(prefix: str = TOKEN_PREFIX) -> str:
    """A fresh bearer token: prefix + 256 random bits, urlsafe base64."""
    return prefix + secrets.token_urlsafe(32)


def load_or_create_admin_token(data_dir: Path) -> tuple[str, bool]:
    """(token, created): read data_dir/admin.token, or create it (mode 0600, atomically).

    created is True only for the call that wrote the file, so the token is announced once
    even when two processes race on a fresh data dir. An operator may replace the file's
    content with a token of their own (one line of RFC 6750 token characters).
    """
    data_dir = ensure_data_dir(Path(data_dir))
    path = data_dir / ADMIN_TOKEN_FILE
    try:
        data, created = read_or_create_file(path, lambda: (new_token() + "\n").encode("ascii"))
    except ValueError as exc:
        raise AdminTokenError(str(exc)) from None
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if not _TOKEN_RE.fullmatch(token):
        # Never echo the file content: it is (meant to be) a credential.
        raise AdminTokenError(
            f"{path} does not hold a usable token (one line of the characters "
            "A-Z a-z 0-9 - . _ ~ + / with optional trailing '='); delete it to generate a new one"
        )
    return token, created


def tokens_equal(a: str, b: str) -> bool:
    """Constant-time comparison (hmac.compare_digest), safe for any str including non-ASCII."""
    if not isinstance(a, str) or not isinstance(b, str) or not a or not b:
        return False  # an empty token never matches, not even another empty one
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )

"""The `auth0-extension-secret` bearer check (auth0-ext-compilers `is_authorized`)."""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping

__all__ = ["SECRET_NAME", "UNAUTHORIZED", "is_authorized", "js_trim"]

from wtpy.contract import SECRET_NAME

UNAUTHORIZED = "Unauthorized extensibility point"

# ECMAScript WhiteSpace + LineTerminator, what String.prototype.trim() removes.
_JS_WHITESPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# /^bearer (.+)$/i without the u flag: ASCII case folding, `.` excludes JS line terminators.
_BEARER = re.compile(r"bearer ([^\n\r\u2028\u2029]+)", re.IGNORECASE | re.ASCII)


def js_trim(value: str) -> str:
    return value.strip(_JS_WHITESPACE)


def is_authorized(secrets: Mapping[str, str], authorization: str | None) -> bool:
    """True when no (non-empty) secret is configured, or the header carries exactly that secret."""
    secret = secrets.get(SECRET_NAME)
    if not secret:
        return True
    if not isinstance(secret, str) or not isinstance(authorization, str):
        return False
    match = _BEARER.fullmatch(js_trim(authorization))
    if match is None:
        return False
    return hmac.compare_digest(
        match.group(1).encode("utf-8", "surrogatepass"), secret.encode("utf-8", "surrogatepass")
    )

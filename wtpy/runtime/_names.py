"""Webtask and container names, and the code size limit."""

from __future__ import annotations

import re

__all__ = ["MAX_CODE_BYTES", "MAX_NAME_LENGTH", "NAME_RE", "valid_name"]

# The original Webtask rule: ^[-a-z0-9._~!$+=:@]+$, case-insensitive. re.ASCII matters:
# with IGNORECASE alone Python also lets U+212A KELVIN SIGN match "k" and U+017F LONG S
# match "s", so a name could look like "myrule" and not be it.
NAME_RE = re.compile(r"^[-a-z0-9._~!$+=:@]+$", re.IGNORECASE | re.ASCII)

# wtpy's own cap (the original had none): names travel in URL paths, log lines and
# profile files, 128 characters is plenty and keeps all of those bounded.
MAX_NAME_LENGTH = 128

# Code above this many UTF-8 bytes is refused (HTTP 413).
MAX_CODE_BYTES = 100 * 1024

# "." and ".." match the character rule but are dot segments: HTTP clients and
# proxies rewrite them out of URL paths, so such a webtask could never be invoked.
_DOT_SEGMENTS = frozenset({".", ".."})


def valid_name(value: str) -> bool:
    """True when `value` is a usable webtask or container name.

    Names are case-preserving and compared exactly ("MyRule" and "myrule" are two webtasks).
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_NAME_LENGTH
        # fullmatch, not match: "$" also matches before a trailing "\n".
        and NAME_RE.fullmatch(value) is not None
        and value not in _DOT_SEGMENTS
    )

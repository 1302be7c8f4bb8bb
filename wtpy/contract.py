"""The facts every layer of wtpy agrees on, each written once.

Meta and secret names, the mask, the limits and defaults that more than one package
relies on, the error-dict shape the sandbox reports and envelopes carry, and the time and
duration formats of the wire. Pure: standard library only, so the sandbox, the server,
the CLI, the client and the token server can all import it.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "COMPILER_META",
    "DEFAULT_ERROR_NAME",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "DEFAULT_WORKER_MAX_JOBS",
    "DEFAULT_WORKER_MEMORY_MB",
    "MASK",
    "MAX_CODE_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_TIMEOUT",
    "MIN_TIMEOUT",
    "NAME_RE",
    "SECRET_NAME",
    "SERIALIZE_ERROR",
    "TIMEOUT_META",
    "error_dict",
    "format_time",
    "format_time_ms",
    "parse_duration",
    "parse_time",
    "valid_name",
]

# --- meta and secrets --------------------------------------------------------------------

# The meta key naming the compiler that wraps a webtask (auth0-ext-compilers/...).
COMPILER_META = "wt-compiler"
# The caller's secret: a secret of that name is what every invocation's
# `Authorization: Bearer` is compared with (the meta of that name is masked like a secret).
SECRET_NAME = "auth0-extension-secret"
# wtpy's own meta: a webtask's timeout in seconds, between MIN_TIMEOUT and the server's max.
TIMEOUT_META = "wtpy-timeout"
# A tiny timeout would make every call kill and respawn a worker.
MIN_TIMEOUT = 0.1
# What a secret value is shown as, in listings and log lines, to callers who did not ask.
MASK = "********"

# --- names and sizes ----------------------------------------------------------------------

# The original Webtask rule: ^[-a-z0-9._~!$+=:@]+$, case-insensitive. re.ASCII matters:
# with IGNORECASE alone Python also lets U+212A KELVIN SIGN match "k" and U+017F LONG S
# match "s", so a name could look like "myrule" and not be it.
NAME_RE = re.compile(r"^[-a-z0-9._~!$+=:@]+$", re.IGNORECASE | re.ASCII)
# wtpy's own cap (the original had none): names travel in URL paths, log lines and
# profile files, 128 characters is plenty and keeps all of those bounded.
MAX_NAME_LENGTH = 128
# Code above this many UTF-8 bytes is refused (HTTP 413).
MAX_CODE_BYTES = 100 * 1024
# An HTTP request's line plus headers above this are refused (431); the token server
# caps its request bodies at the same size.
MAX_HEAD_BYTES = 64 * 1024

# "." and ".." match the character rule but are dot segments: HTTP clients and
# proxies rewrite them out of URL paths, so such a webtask could never be invoked.
_DOT_SEGMENTS = frozenset({".", ".."})


def valid_name(value: object) -> bool:
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


# --- defaults -----------------------------------------------------------------------------

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8721
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
# The original platform's limit; a webtask may change it with TIMEOUT_META.
DEFAULT_TIMEOUT = 20.0
MAX_TIMEOUT = 120.0
DEFAULT_WORKER_MEMORY_MB = 512
# A worker is replaced after this many invocations (and sooner when its RSS grows). A
# replacement costs a fork and a cold start: at 10,000 jobs that happened every few
# seconds under load (latency spikes).
DEFAULT_WORKER_MAX_JOBS = 100_000

# --- errors -------------------------------------------------------------------------------

DEFAULT_ERROR_NAME = "Error"
SERIALIZE_ERROR = "Error when JSON serializing the result of the extension point"


def error_dict(name: str, message: str, stack: str | None = None) -> dict[str, Any]:
    """`{name, message, stack}`: how the sandbox reports a failure and an error envelope's
    `data` starts. `stack` defaults to what a JavaScript stack starts with, minus the
    frames ("Name: message", or "Name" alone): the runtime never exposes its own."""
    if stack is None:
        stack = f"{name}: {message}" if message else name
    return {"name": name, "message": message, "stack": stack}


# --- times and durations ------------------------------------------------------------------


def format_time(ts: float) -> str:
    """ISO 8601 UTC to the second, as stored and listed: 2026-11-23T10:00:00Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_second_text: tuple[int, str] = (-1, "")  # the last second formatted: strftime is the slow part


def format_time_ms(ts: float) -> str:
    """ISO 8601 UTC with milliseconds, as log records carry it: 2026-11-23T10:00:00.123Z."""
    global _second_text
    # Rounded to the microsecond exactly as datetime.fromtimestamp does it.
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1_000_000)
    second = int(whole)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    cached_second, text = _second_text
    if second != cached_second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _second_text = (second, text)
    return f"{text}{micros // 1000:03d}Z"


def parse_time(text: str) -> float:
    """Epoch seconds of an ISO 8601 time ("Z" or an offset; none means UTC). ValueError
    when `text` is not one."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("not a time")
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float | None:
    """'10m', '30s', '2h', '1h30m', '500ms', '1d' -> seconds; a bare number means seconds;
    None when `text` is not a duration."""
    text = text.strip().lower()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 else None
    position, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total if position == len(text) else None

"""Log capture: one invocation's log lines (the `log` global, and print), capped, and
handed on live while a slow hook runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["LIVE_LOG_INTERVAL", "HookLog", "LogSink", "as_text"]


# A running hook's lines are sent on (see LogSink) at most this often.
LIVE_LOG_INTERVAL = 0.1


class LogSink:
    """Collects one invocation's log lines, capped by count and by message bytes.

    With `live`, waiting lines are handed to it (and dropped from `entries`) once the first
    of them has waited LIVE_LOG_INTERVAL: when the hook emits its next line, or when `flush`
    is called (the worker arms a timer with `arm` for that). So a slow hook's output is
    followed as it runs; `entries` keeps the rest for the final answer. Never after the
    output was cut: a cut line and the marker after it always travel together.
    """

    def __init__(
        self,
        max_lines: int,
        max_bytes: int,
        live: Callable[[list[dict[str, Any]]], None] | None = None,
        arm: Callable[[], None] | None = None,
    ) -> None:
        self.entries: list[dict[str, Any]] = []
        self._max_lines = max_lines if max_lines > 0 else 0  # max(0, ...) costs a call
        self._max_bytes = max_bytes if max_bytes > 0 else 0
        self._lines = 0  # counted across live batches: the caps are per invocation
        self._bytes = 0
        self._truncated = False
        self._live = live
        self._arm = arm
        self._oldest = 0.0  # time.monotonic() of the first line in entries

    def flush(self) -> None:
        """Hand the waiting lines to `live` now (nothing after the output was cut)."""
        if self._live is not None and self.entries and not self._truncated:
            batch, self.entries = self.entries, []
            self._live(batch)

    def emit(self, level: str, message: str) -> None:
        if self._truncated:
            return
        if self._live is not None:
            if self.entries and time.monotonic() - self._oldest >= LIVE_LOG_INTERVAL:
                self.flush()
            if not self.entries:  # this line will be the oldest waiting
                self._oldest = time.monotonic()
                if self._arm is not None:
                    self._arm()
        try:
            size = len(message.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates: no JSON frame can carry them
            message = message.encode("utf-8", "replace").decode("utf-8")
            size = len(message.encode("utf-8"))
        if self._lines < self._max_lines and self._bytes + size <= self._max_bytes:
            self._bytes += size
            self._lines += 1
            self.entries.append({"level": level, "message": message, "time": time.time()})
            return
        room = self._max_bytes - self._bytes
        if room > 0 and self._lines < self._max_lines:  # keep what fits of a long line
            head = message.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
            self.entries.append({"level": level, "message": head, "time": time.time()})
        self._truncated = True
        self.entries.append(
            {
                "level": "warn",
                "message": f"[wtpy] output truncated: the limit is {self._max_lines} log lines "
                f"and {self._max_bytes} bytes per invocation",
                "time": time.time(),
            }
        )


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


class HookLog:
    """The `log` global: log.info / log.warn / log.error (arguments joined by spaces)."""

    __slots__ = ("_sink",)

    def __init__(self, sink: LogSink) -> None:
        self._sink = sink

    def info(self, *parts: Any) -> None:
        self._sink.emit("info", " ".join(map(as_text, parts)))

    def warn(self, *parts: Any) -> None:
        self._sink.emit("warn", " ".join(map(as_text, parts)))

    warning = warn

    def error(self, *parts: Any) -> None:
        self._sink.emit("error", " ".join(map(as_text, parts)))

"""Real-time logs: structured invocation records, a history ring buffer, SSE fan-out.

No HTTP here: the SSE endpoint that serves a subscription is wtpy.server._sse.

Every invocation publishes one record per hook log line (captured by the sandbox worker)
and one summary record. Records are JSON objects::

    {"id": 1732352400000017, "time": "2026-11-23T10:00:00.123Z", "level": "info",
     "type": "log" | "invocation", "container": "default", "name": "myrule",
     "request_id": "4f0c...", "message": "...",
     # summaries only:
     "compiler": "auth0-ext-compilers/client-credentials-exchange",
     "outcome": "success" | "error" | "timeout" | "killed",
     "duration_ms": 12.3, "error": "ValueError: boom" | null, "stack": "..." (when known)}

Design points:

* Record ids are monotonic integers per server. They start at the server's start time in
  milliseconds times 1000, so ids of a restarted server are larger than any id of the
  previous one and a client resuming with an id from before a restart is recognised.
* Secret values of the webtask are masked ("********") in `message`, `error` and `stack`
  before a record is stored or sent, including common escaped spellings (JSON, repr) of
  each value (_masking.py). Every non-empty secret value is masked, longest first; a secret
  of 1 to 3 characters therefore masks every occurrence of that short text (noisy, but
  never leaks).
* Publishing is synchronous, never awaits and never blocks: it appends to the history
  ring buffer (bounded by count and bytes) and to each subscriber's bounded queue. A
  subscriber whose queue is full loses records (for that subscriber only) and is told
  so by a notice record once it catches up.
* The hub is confined to the server's event loop thread (the invocation endpoint and
  the SSE endpoint both run there).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from secrets import token_hex
from typing import Any

import orjson

from wtpy.contract import format_time_ms, parse_duration, parse_time

from ._masking import NO_MASK, WORKER_TRUNCATED_PREFIX, Masker, masker

__all__ = [
    "LEVELS",
    "LogFilter",
    "LogHub",
    "Subscription",
    "new_request_id",
    "parse_since",
]

logger = logging.getLogger("wtpy.logs")

LEVELS = {"info": 0, "warn": 1, "error": 2}
_LEVEL_NAMES = {value: key for key, value in LEVELS.items()}
_LEVEL_ALIASES = {"warning": "warn", "err": "error", "debug": "info", "log": "info"}
FAILED_OUTCOMES = frozenset({"error", "timeout", "killed"})

DEFAULT_HISTORY = 10_000
DEFAULT_HISTORY_BYTES = 32 * 1024 * 1024
DEFAULT_QUEUE_SIZE = 10_000  # > one invocation at the worker caps (1000 lines) by far
DEFAULT_QUEUE_BYTES = 16 * 1024 * 1024
DEFAULT_PING_INTERVAL = 15.0
# Defence in depth: the worker caps lines and bytes per invocation; the hub still bounds
# a single record so a misconfigured cap cannot make one record huge.
DEFAULT_MAX_MESSAGE_CHARS = 64 * 1024
RETRY_MS = 2000
_ENTRY_OVERHEAD = 768  # per-record bookkeeping, names, ids and times in the byte budgets
_BATCH_BYTES = 64 * 1024


# Request ids: 16 random hex digits drawn once per server process, then a counter. Unique
# across restarts without a random draw per request; an id correlates records, it grants nothing.
_REQUEST_ID_PREFIX = token_hex(8)
_request_counter = itertools.count(1)


def new_request_id() -> str:
    """A unique request id (32 hex digits), returned in the `x-wtpy-request-id` header."""
    return f"{_REQUEST_ID_PREFIX}{next(_request_counter):016x}"


# --- query parsing --------------------------------------------------------------------------


def parse_since(text: str, now: float | None = None) -> float:
    """A duration ago ('10m') or an ISO 8601 time -> epoch seconds. Raises ValueError."""
    now = time.time() if now is None else now
    seconds = parse_duration(text)
    if seconds is not None:
        return now - seconds
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(
            f"since {text!r} is neither a duration (10m, 30s, 2h) nor an ISO 8601 time"
        ) from None


def parse_level(text: str) -> int:
    """'info' | 'warn' | 'error' (also 'warning') -> the numeric minimum level."""
    name = text.strip().lower()
    name = _LEVEL_ALIASES.get(name, name)
    if name not in LEVELS:
        raise ValueError(f"level {text!r} must be one of info, warn, error")
    return LEVELS[name]


# --- records ----------------------------------------------------------------------------------


class _Entry:
    """One published record: the JSON object, its SSE encoding and what filters look at.

    The SSE encoding is made when a follower first needs it: most records are never
    streamed. `size` (for the history's byte budget) counts the record's text instead.
    """

    __slots__ = ("id", "ts", "level", "container", "name", "record", "_data", "size")

    def __init__(self, record_id: int, ts: float, level: int, record: dict[str, Any]) -> None:
        self.id = record_id
        self.ts = ts
        self.level = level
        self.container: str = record["container"]
        self.name: str | None = record["name"]
        self.record = record
        self._data: bytes | None = None
        # The free-text fields; the others (names, ids, times) fit in the overhead.
        error = record.get("error")
        stack = record.get("stack")
        self.size = (
            _ENTRY_OVERHEAD
            + len(record["message"])
            + (len(error) if type(error) is str else 0)
            + (len(stack) if type(stack) is str else 0)
        )

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = b"id: %d\r\ndata: %s\r\n\r\n" % (self.id, orjson.dumps(self.record))
        return self._data


class _SuccessEntry(_Entry):
    """A success summary whose record is built when it is first read (records, streams)."""

    __slots__ = ("_fields",)
    name: str  # an invocation's summary always names its webtask

    def __init__(
        self,
        record_id: int,
        ts: float,
        container: str,
        name: str,
        request_id: str,
        compiler: str,
        duration_ms: float,
    ) -> None:
        self.id = record_id
        self.ts = ts
        self.level = LEVELS["info"]
        self.container = container
        self.name = name
        self._data = None
        self._fields = (request_id, compiler, round(float(duration_ms), 1))
        self.size = _ENTRY_OVERHEAD + 32  # the message: "success (<duration> ms)"

    # A read-only property over the base's slot: no entry's record is ever reassigned.
    @property
    def record(self) -> dict[str, Any]:  # type: ignore[override]
        request_id, compiler, duration = self._fields
        return _summary(
            self.id, format_time_ms(self.ts), self.container, self.name, request_id, compiler, "success", duration,
            _success_message(duration), None,
        )  # fmt: skip


def _success_message(duration: float) -> str:
    return f"success ({duration:g} ms)"  # no text of the hook's: nothing to mask


def _summary(
    record_id: int,
    time_text: str,
    container: str,
    name: str,
    request_id: str,
    compiler: str,
    outcome: str,
    duration: float,
    message: str,
    error: str | None,
) -> dict[str, Any]:
    """An invocation summary record: the one shape a published and a lazy summary share."""
    return {
        "id": record_id,
        "time": time_text,
        "level": "error" if outcome in FAILED_OUTCOMES else "info",
        "type": "invocation",
        "container": container,
        "name": name,
        "request_id": request_id,
        "message": message,
        "compiler": compiler,
        "outcome": outcome,
        "duration_ms": duration,
        "error": error,
    }


@dataclass(frozen=True)
class LogFilter:
    """What one subscriber wants: one container, optionally one webtask and a minimum level."""

    container: str
    name: str | None = None
    min_level: int = 0
    errors_only: bool = False

    def matches(self, entry: _Entry) -> bool:
        if entry.container != self.container:
            return False
        if self.name is not None and entry.name != self.name:
            return False
        if self.errors_only and entry.level < LEVELS["error"]:
            return False
        return entry.level >= self.min_level


def _notice_event(container: str, message: str, **fields: Any) -> bytes:
    """A per-subscriber notice: no SSE id, so it never moves the client's Last-Event-ID."""
    record = {
        "id": None,
        "time": format_time_ms(time.time()),
        "level": "warn",
        "type": "notice",
        "container": container,
        "name": None,
        "request_id": None,
        "message": message,
        **fields,
    }
    return b"data: %s\r\n\r\n" % orjson.dumps(record)


class Subscription:
    """A follower's bounded queue. Filled by LogHub.publish, drained by LogHub.events."""

    def __init__(
        self, hub: LogHub, log_filter: LogFilter, head: int, max_items: int, max_bytes: int
    ) -> None:
        self.hub = hub
        self.filter = log_filter
        self.replay: list[bytes] = []
        self.replay_last_id = 0
        self.max_items = max(2, max_items)
        self.max_bytes = max_bytes
        self._queue: deque[tuple[int, bytes]] = deque()  # (record id or 0 for notices, event)
        self._bytes = 0
        self.dropped = 0  # records lost since the last notice
        self.dropped_total = 0
        self.seen_id = head  # every record up to here was queued, filtered out or dropped
        self.sent_id = 0  # highest record id handed to the stream
        self.wake = asyncio.Event()
        self.closed = False

    def __len__(self) -> int:
        return len(self._queue)

    def _fits(self, size: int, slots: int) -> bool:
        return len(self._queue) + slots <= self.max_items and self._bytes + size <= self.max_bytes

    def offer(self, entry: _Entry) -> None:
        """Queue one record (already filtered). Never blocks: drops when the queue is full."""
        self.seen_id = entry.id
        size = len(entry.data)
        if self.dropped:
            notice = self._drop_notice()
            if not self._fits(size + len(notice), 2):
                self._drop()
                return
            self._push(0, notice)
            self.dropped = 0
        elif not self._fits(size, 1):
            self._drop()
            return
        self._push(entry.id, entry.data)

    def _drop(self) -> None:
        self.dropped += 1
        self.dropped_total += 1
        self.wake.set()

    def _drop_notice(self) -> bytes:
        return _notice_event(
            self.filter.container,
            f"{self.dropped} records dropped: client too slow",
            dropped=self.dropped,
        )

    def _push(self, record_id: int, data: bytes) -> None:
        self._queue.append((record_id, data))
        self._bytes += len(data)
        self.wake.set()

    def take(self, max_bytes: int = _BATCH_BYTES) -> bytes:
        """Pop queued events (up to about max_bytes) as one chunk; b'' when nothing is due."""
        parts: list[bytes] = []
        size = 0
        while self._queue and size < max_bytes:
            record_id, data = self._queue.popleft()
            self._bytes -= len(data)
            if record_id:
                self.sent_id = record_id
            parts.append(data)
            size += len(data)
        if not self._queue and self.dropped:
            # Caught up after losing records: say so now rather than with the next record.
            parts.append(self._drop_notice())
            self.dropped = 0
        return b"".join(parts)


class LogHub:
    """History ring buffer plus fan-out to live subscribers (SSE followers)."""

    def __init__(
        self,
        history: int = DEFAULT_HISTORY,
        *,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
        id_base: int | None = None,
    ) -> None:
        self.history_size = max(1, history)
        self.history_bytes = history_bytes
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.ping_interval = ping_interval
        self.max_message_chars = max_message_chars
        # Ids of a restarted server continue above the previous server's (see module doc).
        self.id_base = int(time.time() * 1000) * 1000 if id_base is None else id_base
        self._next_id = self.id_base + 1
        self._history: deque[_Entry] = deque()
        self._history_used = 0
        self._subscribers: set[Subscription] = set()

    # -- introspection ------------------------------------------------------------------------

    @property
    def last_id(self) -> int:
        """Id of the newest record published (id_base when none yet)."""
        return self._next_id - 1

    @property
    def oldest_id(self) -> int:
        """Id of the oldest record still in the history (next id when the history is empty)."""
        return self._history[0].id if self._history else self._next_id

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def records(self) -> list[dict[str, Any]]:
        """The history, oldest first (copies of the records as sent)."""
        return [dict(entry.record) for entry in self._history]

    # -- publishing ---------------------------------------------------------------------------

    def _clip(self, text: str) -> str:
        if len(text) <= self.max_message_chars:
            return text
        extra = len(text) - self.max_message_chars
        return f"{text[: self.max_message_chars]} [wtpy] message truncated: {extra} more characters"

    def _publish(self, ts: float, level: int, record: dict[str, Any]) -> dict[str, Any]:
        """Give `record` (built with "id" and "time" keys first) its id and time; publish it."""
        record_id = self._next_id
        self._next_id += 1
        record["id"] = record_id
        record["time"] = format_time_ms(ts)
        self._add(_Entry(record_id, ts, level, record))
        return record

    def _add(self, entry: _Entry) -> None:
        self._history.append(entry)
        self._history_used += entry.size
        while len(self._history) > self.history_size or (
            self._history_used > self.history_bytes and len(self._history) > 1
        ):
            self._history_used -= self._history.popleft().size
        for subscriber in self._subscribers:
            if subscriber.filter.matches(entry):
                subscriber.offer(entry)
            else:
                subscriber.seen_id = entry.id

    def publish_lines(
        self,
        container: str,
        name: str,
        request_id: str,
        lines: Sequence[Mapping[str, Any]],
        secrets: Mapping[str, str],
    ) -> None:
        """Publish lines a hook logged while it still runs (masked like all hook output).

        Never raises: a logging failure must not fail the invocation."""
        try:
            self._publish_lines(container, name, request_id, lines, masker(secrets))
        except Exception as exc:  # pragma: no cover - defensive
            logger.error("dropping log lines of %s/%s: %s", container, name, type(exc).__name__)

    def _publish_lines(
        self,
        container: str,
        name: str,
        request_id: str,
        logs: Sequence[Mapping[str, Any]],
        mask: Masker,
    ) -> list[dict[str, Any]]:
        published = []
        now = time.time()
        for index, line in enumerate(logs):
            level_name = line.get("level")
            level_name = _LEVEL_ALIASES.get(level_name, level_name)  # type: ignore[arg-type]
            level = LEVELS.get(level_name, 0) if isinstance(level_name, str) else 0
            message = line.get("message")
            message = mask(message if isinstance(message, str) else str(message))
            following = logs[index + 1].get("message") if index + 1 < len(logs) else None
            if isinstance(following, str) and following.startswith(WORKER_TRUNCATED_PREFIX):
                message = mask.cut(message)  # the worker cut this line at its byte cap
            stamp = line.get("time")
            ts = float(stamp) if isinstance(stamp, int | float) and stamp > 0 else now
            record = {
                "id": 0,
                "time": "",
                "level": _LEVEL_NAMES[level],
                "type": "log",
                "container": container,
                "name": name,
                "request_id": request_id,
                "message": self._clip(message),
            }
            published.append(self._publish(ts, level, record))
        return published

    def publish_success(
        self, container: str, name: str, request_id: str, compiler: str, duration_ms: float
    ) -> None:
        """The summary of a successful invocation without hook output: the most common
        record by far, kept as its fields until someone reads it (see _SuccessEntry).
        The same record as publish_invocation(outcome="success") would publish."""
        record_id = self._next_id
        self._next_id += 1
        self._add(
            _SuccessEntry(
                record_id, time.time(), container, name, request_id, compiler, duration_ms
            )
        )

    def publish_invocation(
        self,
        *,
        container: str,
        name: str,
        request_id: str,
        compiler: str,
        outcome: str,
        duration_ms: float,
        logs: Iterable[Mapping[str, Any]] = (),
        error: Mapping[str, Any] | str | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Publish the hook's log lines, in order, then the invocation summary.

        Never raises: a logging failure must not fail the invocation.
        """
        try:
            return self._publish_invocation(
                container, name, request_id, compiler, outcome, duration_ms, logs, error, secrets
            )
        except Exception as exc:  # pragma: no cover - defensive
            logger.error("dropping log records of %s/%s: %s", container, name, type(exc).__name__)
            return []

    def _publish_invocation(
        self,
        container: str,
        name: str,
        request_id: str,
        compiler: str,
        outcome: str,
        duration_ms: float,
        logs: Iterable[Mapping[str, Any]],
        error: Mapping[str, Any] | str | None,
        secrets: Mapping[str, str] | None,
    ) -> list[dict[str, Any]]:
        logs = list(logs)
        failed = outcome in FAILED_OUTCOMES
        # Only hook output and error text can carry a secret; a plain success summary cannot.
        mask = masker(secrets or {}) if logs or failed else NO_MASK
        published = self._publish_lines(container, name, request_id, logs, mask)

        error_text, stack = _describe_error(error) if error is not None else (None, None)
        duration = round(float(duration_ms), 1)
        if failed:
            message = f"{outcome}: {error_text}" if error_text else outcome
            message = self._clip(mask(f"{message} ({duration:g} ms)"))
        else:
            message = _success_message(duration)
        error_field = self._clip(mask(error_text)) if error_text else None
        summary = _summary(
            0, "", container, name, request_id, compiler, outcome, duration, message, error_field
        )
        if stack:
            summary["stack"] = self._clip(mask(stack))
        published.append(
            self._publish(time.time(), LEVELS["error"] if failed else LEVELS["info"], summary)
        )
        return published

    # -- subscribing --------------------------------------------------------------------------

    def subscribe(
        self,
        log_filter: LogFilter,
        *,
        last_event_id: int | None = None,
        tail: int | None = None,
        since: float | None = None,
    ) -> Subscription:
        """Register a follower. Replay and live records never overlap and leave no gap.

        With last_event_id, replay every matching record after it (tail/since are ignored),
        preceded by a notice when some fell out of the history or the server restarted.
        Otherwise replay the matching records newer than `since`, the last `tail` of them.
        """
        subscription = Subscription(
            self, log_filter, self.last_id, self.queue_size, self.queue_bytes
        )
        replay: list[_Entry]
        if last_event_id is not None:
            replay = self._resume(subscription, last_event_id)
        elif tail is not None or since is not None:
            replay = [
                e
                for e in self._history
                if log_filter.matches(e) and (since is None or e.ts >= since)
            ]
            if tail is not None:
                replay = replay[-tail:] if tail > 0 else []
        else:
            replay = []
        subscription.replay.extend(entry.data for entry in replay)
        if replay:
            subscription.replay_last_id = replay[-1].id
            subscription.sent_id = replay[-1].id
        self._subscribers.add(subscription)
        return subscription

    def _resume(self, subscription: Subscription, last_event_id: int) -> list[_Entry]:
        container = subscription.filter.container
        history = self._history
        if last_event_id < self.id_base or last_event_id > self.last_id:
            # An id from another server instance: everything this server still has is new.
            lost = self.oldest_id - self.id_base - 1
            text = (
                f"the server restarted since event id {last_event_id}; "
                "records from before the restart are gone"
            )
            if lost:
                text += f" and {lost} older records of this server fell out of its history buffer"
            subscription.replay.append(_notice_event(container, text, missed=None, restarted=True))
            start = 0
        elif last_event_id < self.oldest_id - 1:
            missed = self.oldest_id - 1 - last_event_id
            subscription.replay.append(
                _notice_event(
                    container,
                    f"up to {missed} records missed: they fell out of the server's history buffer",
                    missed=missed,
                )
            )
            start = 0
        else:
            start = last_event_id + 1 - self.oldest_id
        return [
            history[i]
            for i in range(start, len(history))
            if subscription.filter.matches(history[i])
        ]

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.closed = True
        subscription.wake.set()
        self._subscribers.discard(subscription)

    async def events(self, subscription: Subscription) -> AsyncGenerator[bytes, None]:
        """The SSE byte stream of one follower: retry hint, replay, then live records."""
        try:
            yield b"retry: %d\r\n\r\n" % RETRY_MS
            replay, subscription.replay = subscription.replay, []
            chunk: list[bytes] = []
            size = 0
            for data in replay:
                chunk.append(data)
                size += len(data)
                if size >= _BATCH_BYTES:
                    yield b"".join(chunk)
                    chunk, size = [], 0
            if chunk:
                yield b"".join(chunk)
            del replay, chunk
            while not subscription.closed:
                data = subscription.take()
                if data:
                    yield data
                    continue
                if subscription.seen_id > subscription.sent_id:
                    # Records up to seen_id did not match the filter: move the client's
                    # resume point past them (an id-only event is not dispatched as a message).
                    subscription.sent_id = subscription.seen_id
                    yield b"id: %d\r\n\r\n" % subscription.seen_id
                    continue
                subscription.wake.clear()
                await subscription.wake.wait()
        finally:
            self.unsubscribe(subscription)


def _describe_error(error: Mapping[str, Any] | str | None) -> tuple[str | None, str | None]:
    """(error text, stack) from a worker error dict, an envelope's data, or a plain message."""
    if error is None:
        return None, None
    if isinstance(error, str):
        return error, None
    name = error.get("name")
    message = error.get("message")
    message = message if isinstance(message, str) else ("" if message is None else str(message))
    text = f"{name}: {message}" if isinstance(name, str) and name and name != "Error" else message
    description = error.get("error_description")
    if isinstance(description, str) and description:
        text = f"{text} ({description})" if text else description
    stack = error.get("stack")
    stack = stack if isinstance(stack, str) and stack and stack != f"{name}: {message}" else None
    return text or None, stack


def envelope_error(envelope: bytes) -> dict[str, Any] | str:
    """The error of a finished error envelope (compiler refusals), for the summary record."""
    try:
        parsed = orjson.loads(envelope)
        data = parsed.get("data") if isinstance(parsed, dict) else None
        if isinstance(data, dict):
            return data
    except orjson.JSONDecodeError:
        pass
    return "error envelope"

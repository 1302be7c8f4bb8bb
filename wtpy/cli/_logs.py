"""`wtpy logs`: follow a container's log records over server-sent events.

The stream is read with httpx and parsed here (the SSE format is a handful of line rules).
The command remembers the id of the last event it saw and, when the connection drops,
reconnects with `Last-Event-ID` so the server replays exactly what was missed (no gap,
no duplicate) from its history buffer.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click
import httpx
import orjson
from rich.console import Console
from rich.text import Text

from wtpy.contract import valid_name

from ._main import (
    EXIT_BAD_REQUEST,
    EXIT_NOT_FOUND,
    EXIT_SERVER,
    EXIT_UNAUTHORISED,
    CliError,
    get_profile,
    profile_options,
)

__all__ = ["SSEEvent", "SSEParser", "follow", "format_record", "logs"]

LEVEL_STYLES = {"info": "cyan", "warn": "yellow", "error": "bold red"}
OUTCOME_STYLES = {"success": "green", "error": "red", "timeout": "magenta", "killed": "magenta"}
# The server pings every 15 s by default; silence for this long means a dead connection.
READ_TIMEOUT = 60.0
BACKOFF_START = 0.5
BACKOFF_MAX = 10.0
SHORT_ERROR = 200


def info(message: str) -> None:
    """A status line for people on stderr; stdout carries only records."""
    click.echo(f"wtpy logs: {message}", err=True)


def _console() -> Console:
    """Colours on a terminal; plain, unwrapped lines when piped (for grep and files)."""
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(file=sys.stdout, highlight=False, soft_wrap=True, color_system=None)
    return console


# -- SSE parsing -----------------------------------------------------------------------------


@dataclass
class SSEEvent:
    event: str  # "message" unless the server named it ("ping")
    data: str | None  # None for an event with no data lines (id-only)
    id: str | None  # the event's id field, when it had one


_LINE_END = re.compile(rb"\r\n|\r|\n")


class SSEParser:
    """Incremental text/event-stream parser (WHATWG rules): feed bytes, get events."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        events: list[SSEEvent] = []
        start = 0
        for match in _LINE_END.finditer(self._buffer):
            if match.group() == b"\r" and match.end() == len(self._buffer):
                break  # maybe the first half of \r\n: wait for more bytes
            line = self._buffer[start : match.start()]
            start = match.end()
            event = self._line(line.decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        self._buffer = self._buffer[start:]
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event, event_id = self._data, self._event, self._id
        self._data, self._event, self._id = [], "", None
        if not data and event_id is None:
            return None
        return SSEEvent(event or "message", "\n".join(data) if data else None, event_id)


# -- following -------------------------------------------------------------------------------


def _error_message(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.read())
    except (orjson.JSONDecodeError, httpx.HTTPError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return f"{body['message']} (HTTP {response.status_code} {body.get('error', '')})".replace(
            " )", ")"
        )
    return f"HTTP {response.status_code}"


def follow(
    url: str,
    token: str,
    params: dict[str, str],
    on_record: Callable[[dict[str, Any], str], None],
    *,
    on_status: Callable[[str], None] = info,
    read_timeout: float = READ_TIMEOUT,
    max_attempts: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    client: httpx.Client | None = None,
) -> None:
    """Stream records to on_record(record, raw_json) forever, reconnecting with Last-Event-ID.

    Raises CliError on 401/403 (exit 8), 404 (exit 5) and other 4xx (exit 6): retrying
    cannot fix those. Everything else (refused connection, 5xx, a dropped or silent stream)
    is retried with exponential backoff. `max_attempts` bounds consecutive failures (tests).
    """
    last_id: str | None = None
    backoff = BACKOFF_START
    failures = 0
    connected_once = False
    timeout = httpx.Timeout(10.0, read=read_timeout)
    own_client = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=False)
    try:
        while True:
            headers = {
                "Authorization": f"Bearer {token}",
                "Accept": "text/event-stream",
                "Cache-Control": "no-cache",
            }
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            reason = ""
            try:
                with http.stream(
                    "GET", url, params=params, headers=headers, timeout=timeout
                ) as response:
                    status = response.status_code
                    if status in (401, 403):
                        raise CliError(
                            f"{_error_message(response)}; check the profile's token (`wtpy init`)",
                            EXIT_UNAUTHORISED,
                        )
                    if status == 404:
                        raise CliError(_error_message(response), EXIT_NOT_FOUND)
                    if 400 <= status < 500:
                        raise CliError(_error_message(response), EXIT_BAD_REQUEST)
                    if status != 200:
                        reason = _error_message(response)
                    else:
                        on_status("reconnected" if connected_once else "following (Ctrl-C to stop)")
                        connected_once = True
                        backoff, failures = BACKOFF_START, 0
                        parser = SSEParser()
                        for chunk in response.iter_bytes():
                            for event in parser.feed(chunk):
                                if event.id is not None:
                                    last_id = event.id
                                if event.event != "message" or event.data is None:
                                    continue
                                try:
                                    record = orjson.loads(event.data)
                                except orjson.JSONDecodeError:
                                    continue
                                if isinstance(record, dict):
                                    on_record(record, event.data)
                        reason = "the server closed the stream"
            except httpx.TimeoutException:
                reason = "no data or keep-alive from the server"
            except httpx.TransportError as error:
                reason = str(error).strip() or type(error).__name__
            failures += 1
            if max_attempts is not None and failures >= max_attempts:
                raise CliError(f"giving up: {reason}", EXIT_SERVER)
            on_status(f"connection lost ({reason}); reconnecting in {backoff:g} s")
            sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
    finally:
        if own_client:
            http.close()


# -- formatting ------------------------------------------------------------------------------


def _clock(stamp: Any) -> str:
    """The record's time as local HH:MM:SS.mmm (the raw ISO text if it does not parse)."""
    if not isinstance(stamp, str):
        return "--:--:--.---"
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return stamp
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _first_line(text: str, limit: int = SHORT_ERROR) -> str:
    line = text.splitlines()[0] if text else ""
    more = len(line) > limit or "\n" in text
    return (line[:limit] + " …") if more else line


def format_record(record: dict[str, Any], *, verbose: bool = False) -> Text:
    """One record as a coloured line (plus indented detail lines with verbose)."""
    level = str(record.get("level") or "info")
    kind = record.get("type")
    style = LEVEL_STYLES.get(level, "")
    text = Text()
    text.append(_clock(record.get("time")), style="dim")
    text.append(" ")
    text.append(f"{level.upper():<5}", style=style)
    text.append(" ")
    if kind == "notice":
        text.append("[wtpy] ", style="yellow")
        text.append(str(record.get("message", "")), style="yellow")
        return text
    text.append(str(record.get("name") or "-"), style="bold")
    text.append(" ")
    request_id = str(record.get("request_id") or "")
    text.append((request_id if verbose else request_id[:8]) or "-", style="dim")
    text.append(" ")
    if kind == "invocation":
        outcome = str(record.get("outcome") or "")
        text.append(
            f"{'✓' if outcome == 'success' else '✗'} {outcome}",
            style=OUTCOME_STYLES.get(outcome, ""),
        )
        duration = record.get("duration_ms")
        if isinstance(duration, int | float):
            text.append(f" {duration:g} ms", style="dim")
        error = record.get("error")
        if isinstance(error, str) and error:
            text.append("  ")
            text.append(error if verbose else _first_line(error), style="red")
        if verbose:
            for key in ("id", "time", "container", "compiler"):
                text.append(f"\n    {key}: {record.get(key)}", style="dim")
            stack = record.get("stack")
            if isinstance(stack, str) and stack:
                text.append("\n    stack:", style="dim")
                for line in stack.splitlines():
                    text.append(f"\n      {line}", style="dim")
            extra = {k: v for k, v in record.items() if k not in _SHOWN}
            for key, value in extra.items():
                text.append(f"\n    {key}: {value}", style="dim")
        return text
    message = str(record.get("message", ""))
    lines = message.split("\n")
    text.append(lines[0], style="red" if level == "error" else "yellow" if level == "warn" else "")
    for line in lines[1:]:
        text.append("\n    " + line, style="red" if level == "error" else "")
    if verbose:
        text.append(f"  (id {record.get('id')})", style="dim")
    return text


_SHOWN = {
    "id", "time", "level", "type", "container", "name", "request_id", "message",
    "compiler", "outcome", "duration_ms", "error", "stack",
}  # fmt: skip


# -- the command -----------------------------------------------------------------------------


def _check_webtask(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not valid_name(value):
        raise CliError(f"invalid webtask name {value!r}")
    return value


@click.command()
@click.argument("name", required=False, callback=_check_webtask)
@click.option("--raw", is_flag=True, help="Print each record as one line of JSON.")
@click.option(
    "--verbose", "-v", is_flag=True, help="Show every field: full request ids, errors and stacks."
)
@click.option(
    "--since",
    metavar="D",
    help="First replay the records of the last D (10m, 30s, 2h, 1h30m) or since an ISO time.",
)
@click.option(
    "--tail",
    "-n",
    type=click.IntRange(min=0),
    metavar="N",
    help="First replay the last N records (with --since: the last N of those).",
)
@click.option(
    "--level",
    type=click.Choice(["info", "warn", "error"], case_sensitive=False),
    help="Minimum level to show.",
)
@click.option(
    "--errors",
    is_flag=True,
    help="Only error lines and failed invocations (error, timeout, killed).",
)
@profile_options
def logs(
    name: str | None,
    raw: bool,
    verbose: bool,
    since: str | None,
    tail: int | None,
    level: str | None,
    errors: bool,
    profile: str | None,
    container: str | None,
) -> None:
    """Follow the log records of a container (or of one webtask NAME) as they happen.

    One record per line the hooks print or log, and one summary per invocation (outcome,
    duration, error). Secret values are masked by the server. Reconnects by itself after a
    dropped connection, resuming exactly where it stopped. Ctrl-C stops.
    """
    target = get_profile(profile, container)
    params: dict[str, str] = {}
    if name:
        params["name"] = name
    if since:
        params["since"] = since
    if tail is not None:
        params["tail"] = str(tail)
    if level:
        params["level"] = level.lower()
    if errors:
        params["errors"] = "1"
    url = f"{target.url.rstrip('/')}/api/logs/tenant/{target.container}"
    console = _console()

    def show(record: dict[str, Any], data: str) -> None:
        if raw:
            sys.stdout.write(data + "\n")
        else:
            console.print(format_record(record, verbose=verbose), soft_wrap=True)
        sys.stdout.flush()

    with _interruptible():
        follow(url, target.token, params, show)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C and a closed stdout pipe (`wtpy logs | head`) end the command with status 0."""
    try:
        yield
    except KeyboardInterrupt:
        raise click.exceptions.Exit(0) from None
    except BrokenPipeError:
        with contextlib.suppress(Exception):
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - silence the flush at exit
        raise click.exceptions.Exit(0) from None

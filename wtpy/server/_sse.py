"""The logs endpoint: `GET /api/logs/tenant/{container}`, a Server-Sent Events stream of
the log hub's records (wtpy.runtime._logs) for one container or webtask."""

from __future__ import annotations

import time
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wtpy.contract import format_time_ms
from wtpy.runtime import (
    LogFilter,
    LogHub,
    check_names,
    not_found,
    parse_level,
    parse_since,
)

from ._http import ApiError, caller, runtime_of

__all__ = ["routes"]

MIN_PING_INTERVAL = 0.1
MAX_PING_INTERVAL = 300.0


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def _int_param(request: Request, name: str, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, "bad_request", f"{name} must be between {low} and {high}")
    return value


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw is None or not raw.strip():
        return None
    try:
        return int(raw.strip())
    except ValueError:
        raise ApiError(
            400, "bad_request", "Last-Event-ID must be a record id (an integer)"
        ) from None


async def stream_logs(request: Request) -> Response:
    runtime = runtime_of(request)
    hub: LogHub = runtime.logs
    query = request.query_params
    # Bearer token, or `?key=<token>` as in the original (the key is never logged). The
    # scope is checked once the container and webtask name are known to be names.
    principal = caller(request, key=query.get("key"))
    container = request.path_params["container"]
    name = query.get("name") or None
    check_names(container, name)
    # Scoped tokens: a container token reads only its container's records, a webtask
    # token only its webtask's (following the whole container means following it).
    principal.require(container, name, narrow=True)
    if principal.kind == "webtask":
        name = principal.name
    try:
        min_level = parse_level(query["level"]) if query.get("level") else 0
        since = parse_since(query["since"]) if query.get("since") else None
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    tail = _int_param(request, "tail", 0, hub.history_size)
    last_event_id = _last_event_id(request)
    ping = hub.ping_interval
    if query.get("ping"):
        try:
            ping = float(query["ping"])
        except ValueError:
            raise ApiError(400, "bad_request", "ping must be seconds") from None
        ping = min(max(ping, MIN_PING_INTERVAL), MAX_PING_INTERVAL)

    if name is not None and last_event_id is None and await runtime.get(container, name) is None:
        # A typo'd name would otherwise follow silently forever. A client resuming with
        # Last-Event-ID keeps following (the webtask may be re-created).
        raise not_found(container, name)
    if request.method == "HEAD":
        return Response(status_code=200, media_type="text/event-stream")
    log_filter = LogFilter(
        container=container,
        name=name,
        min_level=min_level,
        errors_only=_truthy(query.get("errors")),
    )
    subscription = hub.subscribe(log_filter, last_event_id=last_event_id, tail=tail, since=since)

    def ping_event() -> ServerSentEvent:
        return ServerSentEvent(data=format_time_ms(time.time()), event="ping")

    async def close(message: Any) -> None:
        hub.unsubscribe(subscription)

    return EventSourceResponse(
        hub.events(subscription),
        ping=ping,
        ping_message_factory=ping_event,
        client_close_handler_callable=close,
        # Also when the stream ends without the generator having started (shutdown).
        background=BackgroundTask(hub.unsubscribe, subscription),
        headers={"Cache-Control": "no-store"},
    )


routes = [Route("/api/logs/tenant/{container}", stream_logs, methods=["GET"])]

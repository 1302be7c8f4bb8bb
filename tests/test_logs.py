"""Real-time logs: LogHub units, the SSE endpoint on a stub app, and end to end on a real server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner
from conftest import CC, CC_BODY, ThreadServer, WtpyServer, cc_meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wtpy.cli._logs import SSEParser, follow, format_record
from wtpy.contract import parse_duration
from wtpy.runtime import Runtime, Settings, _logs
from wtpy.runtime._logs import LogFilter, LogHub, parse_since
from wtpy.runtime._masking import MASK, masker
from wtpy.server import create_app

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SUMMARY_KEYS = {
    "id", "time", "level", "type", "container", "name", "request_id", "message",
    "compiler", "outcome", "duration_ms", "error",
}  # fmt: skip
LOG_KEYS = {"id", "time", "level", "type", "container", "name", "request_id", "message"}


# --- helpers ---------------------------------------------------------------------------------


def publish(
    hub: LogHub,
    name: str = "hook",
    lines: tuple[tuple[str, str], ...] = (),
    *,
    container: str = "default",
    outcome: str = "success",
    error: Any = None,
    secrets: dict[str, str] | None = None,
    request_id: str | None = None,
) -> list[dict[str, Any]]:
    return hub.publish_invocation(
        container=container,
        name=name,
        request_id=request_id or uuid.uuid4().hex,
        compiler=CC,
        outcome=outcome,
        duration_ms=1.5,
        logs=[
            {"level": level, "message": message, "time": time.time()} for level, message in lines
        ],
        error=error,
        secrets=secrets,
    )


def decode(chunks: list[bytes] | bytes) -> list[dict[str, Any]]:
    """SSE bytes -> the JSON records of their message events (ids checked against data)."""
    parser = SSEParser()
    records = []
    for event in parser.feed(b"".join(chunks) if isinstance(chunks, list) else chunks):
        if event.data is None:
            continue
        record = orjson.loads(event.data)
        if record.get("id") is None:
            assert event.id is None  # notices never move Last-Event-ID
        else:
            assert event.id == str(record["id"])
        records.append(record)
    return records


def drain(subscription: _logs.Subscription) -> list[dict[str, Any]]:
    """Replay plus everything queued, as the stream would send it."""
    chunks, subscription.replay = list(subscription.replay), []
    while chunk := subscription.take():
        chunks.append(chunk)
    return decode(chunks)


def ids(records: list[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in records if r.get("id") is not None]


# --- LogHub: records, order, masking --------------------------------------------------------


def test_records_are_ordered_and_complete() -> None:
    hub = LogHub(id_base=0)
    first = publish(
        hub, "a", (("info", "one"), ("warn", "two"), ("error", "three")), request_id="r1"
    )
    second = publish(hub, "b", (("info", "four"),), outcome="error", error={"name": "ValueError", "message": "boom", "stack": "Traceback...\nValueError: boom"}, request_id="r2")  # fmt: skip
    records = hub.records()
    assert records == first + second
    assert ids(records) == [1, 2, 3, 4, 5, 6]
    assert [r["type"] for r in records] == ["log", "log", "log", "invocation", "log", "invocation"]
    assert [r["level"] for r in records] == ["info", "warn", "error", "info", "info", "error"]
    for record in records:
        assert ISO_MS.match(record["time"])
        assert record["container"] == "default"
        assert set(record) >= LOG_KEYS
    ok, failed = records[3], records[5]
    assert set(ok) == SUMMARY_KEYS
    assert ok["request_id"] == "r1" and ok["outcome"] == "success" and ok["error"] is None
    assert ok["compiler"] == CC and ok["duration_ms"] == 1.5
    assert failed["outcome"] == "error" and failed["error"] == "ValueError: boom"
    assert failed["stack"].endswith("ValueError: boom")
    assert failed["message"].startswith("error: ValueError: boom")


def test_outcomes_and_error_shapes() -> None:
    hub = LogHub(id_base=0)
    timeout = publish(hub, outcome="timeout", error={"name": "TimeoutError", "message": "Script execution timed out after 1 seconds"})[-1]  # fmt: skip
    assert timeout["level"] == "error" and timeout["outcome"] == "timeout"
    assert "timed out" in timeout["error"]
    killed = publish(
        hub, outcome="killed", error={"name": "WorkerKilled", "message": "terminated"}
    )[-1]
    assert killed["level"] == "error" and killed["error"] == "WorkerKilled: terminated"
    compile_error = publish(
        hub,
        outcome="error",
        error={
            "name": "CompileError",
            "message": "Unable to compile the extensibility code as python",
            "error_description": "Line 3: SyntaxError: invalid syntax",
        },
    )[-1]
    assert compile_error["error"] == (
        "CompileError: Unable to compile the extensibility code as python "
        "(Line 3: SyntaxError: invalid syntax)"
    )
    envelope = _logs.envelope_error(
        b'{"status":"error","data":{"message":"Unauthorized extensibility point","name":"Error",'
        b'"stack":"Error: Unauthorized extensibility point","statusCode":500}}'
    )
    refused = publish(hub, outcome="error", error=envelope)[-1]
    assert refused["error"] == "Unauthorized extensibility point"
    assert "stack" not in refused  # the envelope's stack only repeats the message
    assert publish(hub, outcome="error", error="Request body exceeds 10 bytes")[-1]["error"] == (
        "Request body exceeds 10 bytes"
    )


def test_publishing_never_raises() -> None:
    hub = LogHub(id_base=0)
    weird = [{"level": "loud", "message": 42, "time": "yesterday"}, {"message": None}]
    records = hub.publish_invocation(
        container="default", name="x", request_id="r", compiler=CC, outcome="success",
        duration_ms=0, logs=weird, secrets={"k": 5},  # type: ignore[arg-type, dict-item]  # ill-typed on purpose
    )  # fmt: skip
    assert [r["message"] for r in records[:2]] == ["42", "None"]
    assert [r["level"] for r in records[:2]] == ["info", "info"]


def test_masking_longest_first_escaped_forms_and_error() -> None:
    hub = LogHub(id_base=0)
    secrets = {
        "short": "abcd",
        "long": "abcdefgh",
        "quoted": 'pa"ss\\word',
        "unicode": "gëheim-ünïcode",
        "empty": "",
    }
    lines = (
        ("info", "long abcdefgh short abcd"),
        ("info", json.dumps({"p": 'pa"ss\\word'})),
        ("info", repr({"p": 'pa"ss\\word'})),
        ("info", json.dumps({"u": "gëheim-ünïcode"})),  # ensure_ascii escapes
        ("info", ascii("gëheim-ünïcode")),  # Python escapes
        ("info", repr("gëheim-ünïcode".encode())),  # UTF-8 bytes
        ("info", "nothing secret here"),
    )
    records = publish(
        hub,
        lines=lines,
        secrets=secrets,
        outcome="error",
        error={
            "name": "ValueError",
            "message": "bad abcdefgh",
            "stack": "line 1\nValueError: abcd",
        },
    )
    assert records[0]["message"] == f"long {MASK} short {MASK}"
    text = orjson.dumps(records).decode()
    for value in ("abcd", "pa", "word", "gëheim", "g\\u00ebheim", "heim"):
        assert value not in text, value
    assert records[6]["message"] == "nothing secret here"
    assert records[-1]["error"] == f"ValueError: bad {MASK}"
    assert records[-1]["stack"] == f"line 1\nValueError: {MASK}"


def test_masker_single_pass_and_short_values() -> None:
    # "****" inside the mask is not masked again; a 1-character secret is masked everywhere.
    assert masker({"a": "****", "b": "secret"})("x secret ****") == f"x {MASK} {MASK}"
    assert masker(["e"])("hello") == f"h{MASK}llo"
    assert masker({})("untouched") == "untouched"


def test_a_secret_cut_by_a_size_cap_is_masked_too() -> None:
    hub = LogHub(id_base=0)
    secret = "topsecret-0123456789"
    marker = "[wtpy] output truncated: the limit is 1000 log lines and 65536 bytes per invocation"
    records = publish(
        hub,
        lines=(("info", "keep topsecret-01 and topsecret"), ("info", "x" * 50 + secret[:7]), ("warn", marker)),
        secrets={"k": secret},
        outcome="error",
        error={"name": "ValueError", "message": "y" * 40 + secret[:12] + "... [truncated]"},
    )  # fmt: skip
    assert records[0]["message"] == "keep topsecret-01 and topsecret"  # not cut: left alone
    assert records[1]["message"] == "x" * 50 + MASK
    assert records[2]["message"] == marker
    assert records[3]["error"] == "ValueError: " + "y" * 40 + MASK + "... [truncated]"
    assert masker(["abc"]).cut("xxab") == f"xx{MASK}" and masker(["abc"]).cut("xxb") == "xxb"


def test_caps_marker_passes_through_and_hub_clips_huge_messages() -> None:
    hub = LogHub(id_base=0, max_message_chars=100)
    marker = "[wtpy] output truncated: 1000 lines / 65536 bytes per invocation"
    records = publish(hub, lines=(("info", "x" * 500), ("warn", marker)))
    assert records[0]["message"].startswith("x" * 100)
    assert records[0]["message"].endswith("[wtpy] message truncated: 400 more characters")
    assert records[1] == {**records[1], "level": "warn", "type": "log", "message": marker}


def test_a_lazy_success_summary_reads_exactly_like_a_published_one() -> None:
    eager, lazy = LogHub(id_base=0), LogHub(id_base=0)
    for duration in (0.04, 1.25, 12.0, 1234.56):
        eager.publish_invocation(container="default", name="hook", request_id="r1", compiler=CC,
                                 outcome="success", duration_ms=duration)  # fmt: skip
        lazy.publish_success("default", "hook", "r1", CC, duration)
    eager_records, lazy_records = eager.records(), lazy.records()
    for record in (*eager_records, *lazy_records):
        record.pop("time")
    assert lazy_records == eager_records
    assert list(lazy_records[0]) == list(eager_records[0])  # same key order on the wire
    # Followers and filters see it as any other record.
    subscription = lazy.subscribe(LogFilter("default", "hook"), tail=2)
    assert [record["message"] for record in decode(subscription.replay)] == [
        "success (12 ms)",
        "success (1234.6 ms)",
    ]
    assert lazy.records()[0]["time"].endswith("Z")


def test_history_is_bounded_by_count_and_bytes() -> None:
    hub = LogHub(5, id_base=0)
    for i in range(6):
        publish(hub, lines=((("info", f"line {i}"),)))
    assert len(hub.records()) == 5 and hub.oldest_id == 8 and hub.last_id == 12
    small = LogHub(1000, history_bytes=4000, id_base=0)
    for _ in range(50):
        publish(small, lines=(("info", "y" * 500),))
    assert 1 <= len(small.records()) <= 8


# --- LogHub: filters, replay, resume, overflow ----------------------------------------------


def test_filters_by_container_name_level_and_errors() -> None:
    hub = LogHub(id_base=0)
    subs = {
        "all": hub.subscribe(LogFilter("default")),
        "name": hub.subscribe(LogFilter("default", name="a")),
        "warn": hub.subscribe(LogFilter("default", min_level=1)),
        "errors": hub.subscribe(LogFilter("default", errors_only=True)),
        "other": hub.subscribe(LogFilter("other")),
    }
    publish(hub, "a", (("info", "i"), ("warn", "w"), ("error", "e")))
    publish(hub, "b", (("warn", "w2"),), outcome="timeout", error="late")
    publish(hub, "c", container="elsewhere")
    got = {key: drain(sub) for key, sub in subs.items()}
    assert [r["message"] for r in got["all"] if r["type"] == "log"] == ["i", "w", "e", "w2"]
    assert len(got["all"]) == 6
    assert {r["name"] for r in got["name"]} == {"a"} and len(got["name"]) == 4
    assert [r["level"] for r in got["warn"]] == ["warn", "error", "warn", "error"]
    assert [(r["type"], r.get("outcome")) for r in got["errors"]] == [
        ("log", None),
        ("invocation", "timeout"),
    ]
    assert got["other"] == []


def test_tail_and_since_replay_then_live_without_overlap() -> None:
    hub = LogHub(id_base=0)
    for i in range(10):
        publish(hub, "a", (("info", f"old {i}"),))
    for entry in list(hub._history)[:10]:  # the first five invocations happened an hour ago
        entry.ts -= 3600
    tail = hub.subscribe(LogFilter("default"), tail=3)
    since = hub.subscribe(LogFilter("default"), since=time.time() - 600)
    both = hub.subscribe(LogFilter("default", name="a"), since=time.time() - 600, tail=2)
    none = hub.subscribe(LogFilter("default"))
    publish(hub, "a", (("info", "live"),))
    assert ids(drain(tail)) == [18, 19, 20, 21, 22]
    assert ids(drain(since)) == list(range(11, 23))
    assert ids(drain(both)) == [19, 20, 21, 22]
    assert ids(drain(none)) == [21, 22]
    assert hub.subscribe(LogFilter("default"), tail=0).replay == []


def test_last_event_id_resume_has_no_gap_and_no_duplicate() -> None:
    hub = LogHub(id_base=1000)
    first = hub.subscribe(LogFilter("default"))
    for i in range(5):
        publish(hub, lines=(("info", f"m{i}"),))
    seen = drain(first)[:4]  # the client saw four records, then the connection dropped
    hub.unsubscribe(first)
    for i in range(5, 8):
        publish(hub, lines=(("info", f"m{i}"),))
    resumed = hub.subscribe(LogFilter("default"), last_event_id=seen[-1]["id"], tail=1)
    publish(hub, lines=(("info", "m8"),))
    rest = drain(resumed)
    assert ids(seen + rest) == list(range(1001, 1019))
    assert all(r["type"] != "notice" for r in rest)


def test_resume_after_history_overflow_reports_missed_records() -> None:
    hub = LogHub(4, id_base=0)
    for i in range(10):
        publish(hub, lines=(), request_id=f"r{i}")  # one summary each: ids 1..10
    sub = hub.subscribe(LogFilter("default"), last_event_id=3)
    records = drain(sub)
    assert records[0]["type"] == "notice" and records[0]["missed"] == 3
    assert "3 records missed" in records[0]["message"]
    assert ids(records) == [7, 8, 9, 10]


def test_resume_with_an_id_from_before_a_restart() -> None:
    old = LogHub(id_base=1_000_000)
    publish(old, lines=(("info", "before"),))
    new = LogHub(id_base=2_000_000)
    publish(new, lines=(("info", "after"),))
    records = drain(new.subscribe(LogFilter("default"), last_event_id=old.last_id))
    assert records[0]["type"] == "notice" and records[0]["restarted"] is True
    assert ids(records) == [2_000_001, 2_000_002]
    # An id the server never issued (from the future) is treated the same way.
    assert drain(new.subscribe(LogFilter("default"), last_event_id=9_999_999))[0]["restarted"]


def test_resume_point_before_any_record_is_valid() -> None:
    async def scenario() -> tuple[bytes, list[dict[str, Any]]]:
        hub = LogHub(id_base=500)
        stream = hub.events(hub.subscribe(LogFilter("default")))
        await stream.__anext__()  # retry hint
        resume_point = await stream.__anext__()
        await stream.aclose()
        publish(hub, lines=(("info", "first"),))
        return resume_point, drain(hub.subscribe(LogFilter("default"), last_event_id=500))

    resume_point, records = asyncio.run(scenario())
    assert resume_point == b"id: 500\r\n\r\n"
    assert [r["type"] for r in records] == ["log", "invocation"]  # no restart notice


def test_slow_subscriber_drops_with_notice_and_others_are_unaffected() -> None:
    hub = LogHub(id_base=0, queue_size=5)
    slow = hub.subscribe(LogFilter("default"))
    fast = hub.subscribe(LogFilter("default"))
    fast_seen: list[dict[str, Any]] = []
    for i in range(20):
        publish(hub, lines=(), request_id=f"r{i}")  # ids 1..20, publishing never blocks
        fast_seen += drain(fast)
    assert ids(fast_seen) == list(range(1, 21))
    assert len(slow) == 5 and slow.dropped == 15
    publish(hub, lines=(), request_id="late")  # still full: dropped too
    records = drain(slow)
    assert ids(records[:5]) == [1, 2, 3, 4, 5]
    assert records[5]["type"] == "notice" and records[5]["dropped"] == 16
    assert records[5]["message"] == "16 records dropped: client too slow"
    publish(hub, lines=(), request_id="after")
    assert ids(drain(slow)) == [22]
    assert slow.dropped_total == 16


def test_notice_is_queued_in_place_when_room_returns() -> None:
    hub = LogHub(id_base=0, queue_size=3)
    sub = hub.subscribe(LogFilter("default"))
    for _ in range(5):
        publish(hub)  # 1..3 queued, 4..5 dropped
    first = decode(sub.take(max_bytes=1))  # the client reads one record
    publish(hub)  # 6: one free slot, the notice and the record need two: dropped
    first += decode(sub.take(max_bytes=1))
    publish(hub)  # 7: room for the notice and the record
    rest = drain(sub)
    assert ids(first) == [1, 2]
    assert [r.get("id") for r in rest] == [3, None, 7]
    assert rest[1]["dropped"] == 3


def test_stream_generator_replays_then_follows_and_moves_resume_point() -> None:
    async def scenario() -> list[bytes]:
        hub = LogHub(id_base=0)
        publish(hub, "a", (("info", "old"),))
        publish(hub, "b", (("info", "other"),))
        sub = hub.subscribe(LogFilter("default", name="a"), tail=5)
        stream = hub.events(sub)
        chunks = [await stream.__anext__() for _ in range(3)]  # retry, replay, id-only (4)
        waiting = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)
        assert not waiting.done()
        publish(hub, "a", (("info", "new"),))
        chunks.append(await asyncio.wait_for(waiting, 5))
        await stream.aclose()
        assert hub.subscriber_count == 0
        return chunks

    retry, replay, resume_point, live = asyncio.run(scenario())
    assert retry == b"retry: 2000\r\n\r\n"
    assert [r["message"] for r in decode(replay)] == ["old", "success (1.5 ms)"]
    assert resume_point == b"id: 4\r\n\r\n"  # b's records did not match: skip past them
    assert ids(decode(live)) == [5, 6]


def test_parse_since_and_durations() -> None:
    assert parse_duration("10m") == 600 and parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5 and parse_duration("2d") == 172800
    assert parse_duration("45") == 45 and parse_duration("ten") is None
    assert parse_duration("10m5") is None and parse_duration("-5") is None
    assert parse_since("30s", now=1000.0) == 970.0
    assert parse_since("2026-01-01T00:00:00Z") == parse_since("2026-01-01T00:00:00+00:00")
    assert parse_since("2026-01-01T00:00:00") == parse_since("2026-01-01T00:00:00Z")
    with pytest.raises(ValueError):
        parse_since("yesterday")


# --- CLI pieces -------------------------------------------------------------------------------


def test_sse_parser_handles_split_chunks_and_line_endings() -> None:
    stream = (
        b': comment\r\nretry: 1500\r\n\r\nid: 7\r\ndata: {"a":1}\r\n\r\n'
        b"event: ping\ndata: now\n\nid: 9\r\rdata: x\rdata: y\r\r\n"
    )
    for size in (1, 2, 3, 7, len(stream)):
        parser = SSEParser()
        events = []
        for start in range(0, len(stream), size):
            events += parser.feed(stream[start : start + size])
        assert [(e.event, e.data, e.id) for e in events] == [
            ("message", '{"a":1}', "7"),
            ("ping", "now", None),
            ("message", None, "9"),
            ("message", "x\ny", None),
        ]
        assert parser.retry_ms == 1500


def test_format_record_pretty_and_verbose() -> None:
    hub = LogHub(id_base=0)
    records = publish(
        hub, "myrule", (("warn", "careful\nsecond line"),), outcome="error",
        error={"name": "ValueError", "message": "boom " + "x" * 300, "stack": "Traceback\n  line 3"},
        request_id="0123456789abcdef",
    )  # fmt: skip
    line = format_record(records[0]).plain
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} WARN  myrule 01234567 careful\n    second line$", line)
    summary = format_record(records[1]).plain
    assert "✗ error 1.5 ms" in summary
    assert summary.endswith(" …") and "Traceback" not in summary
    verbose = format_record(records[1], verbose=True).plain
    assert "0123456789abcdef" in verbose and "x" * 300 in verbose
    assert "stack:" in verbose and "      line 3" in verbose and f"compiler: {CC}" in verbose
    notice = format_record(
        {"type": "notice", "level": "warn", "message": "3 records dropped"}
    ).plain
    assert notice.endswith("WARN  [wtpy] 3 records dropped")


def test_follow_gives_up_on_auth_and_not_found_and_retries_otherwise() -> None:
    statuses = iter([503, 401])
    seen_ids: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_ids.append(request.headers.get("last-event-id"))
        if len(seen_ids) == 1:
            body = b'retry: 10\r\n\r\nid: 41\r\ndata: {"id":41,"message":"hi"}\r\n\r\n'
            return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
        return httpx.Response(next(statuses), json={"error": "x", "message": "nope"})

    got: list[dict[str, Any]] = []
    client = httpx.Client(transport=httpx.MockTransport(handler))
    from wtpy.cli import CliError

    with pytest.raises(CliError) as raised:
        follow("http://wtpy.invalid/api/logs/tenant/default", "t", {}, lambda r, d: got.append(r),
               on_status=lambda s: None, sleep=lambda s: None, client=client)  # fmt: skip
    assert raised.value.exit_code == 8
    assert got == [{"id": 41, "message": "hi"}]
    assert seen_ids == [None, "41", "41"]  # resumed from the last id after the drop and the 503

    for status, code in ((403, 8), (404, 5), (400, 6)):
        client = httpx.Client(transport=httpx.MockTransport(lambda r, s=status: httpx.Response(s)))
        with pytest.raises(CliError) as raised:
            follow("http://wtpy.invalid/x", "t", {}, lambda r, d: None, on_status=lambda s: None,
                   sleep=lambda s: None, client=client)  # fmt: skip
        assert raised.value.exit_code == code


def test_cli_logs_help_lists_options() -> None:
    from wtpy.cli import cli

    result = CliRunner().invoke(cli, ["logs", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--raw", "--verbose", "--since", "--tail", "--level", "--errors"):
        assert option in result.output


# --- the SSE endpoint on the real app over a runtime never started (no sandbox needed) -----------


class _UnstartedRuntime(Runtime):
    """A Runtime without store or workers: its tokens, hub and admin token are the real
    ones; only `get` answers from a set instead of the store."""

    def __init__(self, token: str) -> None:
        super().__init__(Settings(announce_token=False, workers=1))
        self.logs = LogHub(id_base=0)
        self.admin_token = token
        self.known = {("default", "known")}

    async def get(self, container: str, name: str) -> Any:
        return object() if (container, name) in self.known else None


class StubServer(ThreadServer):
    """The app (lifespan off) plus POST /publish, under uvicorn in a thread."""

    def __init__(self) -> None:
        self.token = "wtpy_stub-token"
        runtime = _UnstartedRuntime(self.token)
        self.hub = runtime.logs

        async def publish_endpoint(request: Request) -> Response:
            body = await request.json()
            publish(self.hub, body["name"], tuple(map(tuple, body.get("lines", []))),
                    outcome=body.get("outcome", "success"), secrets=body.get("secrets"))  # fmt: skip
            return Response(str(self.hub.last_id))

        app = create_app(runtime.settings, runtime)
        app.router.routes.append(Route("/publish", publish_endpoint, methods=["POST"]))
        super().__init__(app)

    def publish(self, name: str, *lines: tuple[str, str], **body: Any) -> int:
        response = httpx.post(f"{self.url}/publish", json={"name": name, "lines": lines, **body})
        return int(response.text)


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


class SSEStream:
    """A blocking SSE reader with deadlines (the server pings often, so reads return)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.parser = SSEParser()
        self.chunks = response.iter_raw()
        self.pending: list[Any] = []
        self.last_id: str | None = None
        self.pings = 0

    def next_event(self, deadline: float) -> Any:
        while not self.pending:
            assert time.monotonic() < deadline, "timed out waiting for an event"
            self.pending += self.parser.feed(next(self.chunks))
        event = self.pending.pop(0)
        if event.id is not None:
            self.last_id = event.id
        if event.event == "ping":
            self.pings += 1
        return event

    def records(
        self, count: int | None = None, until: Any = None, timeout: float = 60
    ) -> list[dict]:
        deadline = time.monotonic() + timeout
        got: list[dict] = []
        while not (
            (count is not None and len(got) >= count) or (until is not None and got and until(got))
        ):
            event = self.next_event(deadline)
            if event.event == "message" and event.data is not None:
                got.append(orjson.loads(event.data))
        return got

    def wait_ping(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        start = self.pings
        while self.pings == start:
            self.next_event(deadline)


@contextlib.contextmanager
def sse(url: str, token: str | None, params: dict | None = None, headers: dict | None = None,
        ping: float = 0.2) -> Iterator[SSEStream]:  # fmt: skip
    all_headers = {"Authorization": f"Bearer {token}"} if token else {}
    all_headers.update(headers or {})
    query = {"ping": str(ping), **(params or {})}
    with (
        httpx.Client(timeout=httpx.Timeout(30)) as client,
        client.stream("GET", url, params=query, headers=all_headers) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SSEStream(response)


def test_endpoint_auth_bearer_key_and_errors(stub: StubServer) -> None:
    url = f"{stub.url}/api/logs/tenant/default"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert httpx.get(url, params={"key": "wrong"}).status_code == 403
    assert httpx.get(url, params={"key": ""}).status_code == 401
    for params in ({"level": "loud"}, {"since": "yesterday"}, {"tail": "-1"}, {"tail": "x"}):
        response = httpx.get(url, params={"key": stub.token, **params})
        assert response.status_code == 400 and response.json()["error"] == "bad_request", params
    assert httpx.get(url, params={"key": stub.token},
                     headers={"Last-Event-ID": "abc"}).status_code == 400  # fmt: skip
    missing = httpx.get(url, params={"key": stub.token, "name": "nope"})
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    bad = httpx.get(f"{stub.url}/api/logs/tenant/bad%20name", params={"key": stub.token})
    assert bad.status_code == 400
    head = httpx.head(url, params={"key": stub.token})
    assert head.status_code == 200 and stub.hub.subscriber_count == 0
    with sse(url, None, params={"key": stub.token}) as stream:
        stream.wait_ping()


def test_endpoint_streams_filters_pings_and_resumes(stub: StubServer) -> None:
    url = f"{stub.url}/api/logs/tenant/default"
    with sse(url, stub.token, params={"name": "known", "level": "warn"}) as stream:
        stub.publish("known", ("info", "quiet"), ("warn", "loud"))
        stub.publish("other", ("error", "not mine"))
        stub.publish("known", ("error", "bad"), outcome="error")
        got = stream.records(count=3)
        assert [(r["message"], r["level"]) for r in got[:2]] == [("loud", "warn"), ("bad", "error")]
        assert got[2]["type"] == "invocation" and got[2]["outcome"] == "error"
        stream.wait_ping()
        last = stream.last_id
    assert last == str(got[-1]["id"])
    stub.publish("known", ("warn", "while away 1"))
    stub.publish("known", ("warn", "while away 2"))
    with sse(url, stub.token, params={"name": "known", "level": "warn", "tail": "50"},
             headers={"Last-Event-ID": last}) as stream:  # fmt: skip
        stub.publish("known", ("warn", "live"))
        again = stream.records(until=lambda got: got[-1]["message"] == "live")
    assert [r["message"] for r in again] == ["while away 1", "while away 2", "live"]
    assert ids(again) == sorted(ids(again)) and ids(again)[0] > int(last)


def test_endpoint_masks_and_serves_many_followers(stub: StubServer) -> None:
    url = f"{stub.url}/api/logs/tenant/default"
    secret = "hunter2-" + uuid.uuid4().hex
    with contextlib.ExitStack() as stack:
        streams = [
            stack.enter_context(sse(url, stub.token, params={"name": "known"})) for _ in range(4)
        ]
        stub.publish("known", ("info", f"the secret is {secret}"), secrets={"s": secret})
        for stream in streams:
            got = stream.records(count=2)
            assert got[0]["message"] == f"the secret is {MASK}"
            assert secret not in orjson.dumps(got).decode()


# --- end to end: a real `wtpy serve` ---------------------------------------------------------


CHATTY_HOOK = """
def hook(client, scope, audience, context, cb):
    n = context.get("n", 0)
    print("start", n)
    log.info("middle " + str(n))
    log.warn("warned " + str(n))
    print("end", n)
    cb(None, {"n": n})
"""

SECRET_HOOK = """
def hook(client, scope, audience, context, cb):
    secret = context["webtask"]["secrets"]["api-key"]
    print("key is " + secret)
    print({"key": secret})
    log.error("about to fail with " + secret)
    raise ValueError("bad key " + secret)
"""

ERRORS_HOOK = """
def hook(client, scope, audience, context, cb):
    n = context.get("n", 0)
    print("fine", n)
    log.error("oops " + str(n))
    if n % 2:
        raise InvalidRequestError("odd " + str(n))
    cb(None, {})
"""

FLOOD_HOOK = """
def hook(client, scope, audience, context, cb):
    for i in range(100000):
        print("flood line", i)
    print("y" * 1000000)
    cb(None, {})
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def logs_url(server: WtpyServer, container: str = "default") -> str:
    return f"{server.url}/api/logs/tenant/{container}"


def call(server: WtpyServer, name: str, n: int = 0, **kwargs: Any) -> httpx.Response:
    response = server.run(name, {**CC_BODY, "context": {"n": n}}, **kwargs)
    assert response.status_code == 200, response.text
    return response


def test_e2e_concurrent_invocations_arrive_in_order(server: WtpyServer) -> None:
    name = unique("chatty")
    assert server.put(name, CHATTY_HOOK, cc_meta()).status_code == 201
    count = 8
    with sse(logs_url(server), server.token, params={"name": name}) as stream:
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            responses = list(pool.map(lambda n: call(server, name, n), range(count)))
        request_ids = {r.headers["x-wtpy-request-id"]: r.json()["data"]["n"] for r in responses}
        assert len(request_ids) == count
        records = stream.records(
            until=lambda got: sum(r["type"] == "invocation" for r in got) == count
        )
    assert ids(records) == sorted(ids(records)) and len(set(ids(records))) == len(records)
    assert {r["request_id"] for r in records} == set(request_ids)
    for request_id, n in request_ids.items():
        mine = [r for r in records if r["request_id"] == request_id]
        assert [(r["type"], r["level"], r["message"]) for r in mine[:4]] == [
            ("log", "info", f"start {n}"),
            ("log", "info", f"middle {n}"),
            ("log", "warn", f"warned {n}"),
            ("log", "info", f"end {n}"),
        ]
        summary = mine[4]
        assert len(mine) == 5 and summary["type"] == "invocation"
        assert summary["outcome"] == "success" and summary["error"] is None
        assert summary["compiler"] == CC and summary["name"] == name
        assert isinstance(summary["duration_ms"], int | float) and summary["duration_ms"] >= 0
        assert ISO_MS.match(summary["time"])


def test_e2e_printed_secrets_are_masked(server: WtpyServer) -> None:
    name = unique("leaky")
    secret = "sk_live_" + uuid.uuid4().hex
    auth = "ext-secret-" + uuid.uuid4().hex
    response = server.put(name, SECRET_HOOK, cc_meta(auth), {"api-key": secret, "auth0-extension-secret": auth})  # fmt: skip
    assert response.status_code == 201
    with sse(logs_url(server), server.token, params={"name": name}) as stream:
        envelope = call(server, name, secret=auth).json()
        assert envelope["status"] == "error"
        records = stream.records(until=lambda got: got[-1]["type"] == "invocation")
        raw = orjson.dumps(records).decode()
        assert secret not in raw and auth not in raw and secret[8:20] not in raw
        assert [r["message"] for r in records[:2]] == [f"key is {MASK}", f"{{'key': '{MASK}'}}"]
        assert (
            records[2]["level"] == "error" and records[2]["message"] == f"about to fail with {MASK}"
        )
        summary = records[-1]
        assert summary["outcome"] == "error" and summary["error"] == f"ValueError: bad key {MASK}"
        # An invocation refused before the hook runs still gets a summary.
        refused = call(server, name, secret="wrong-" + auth)
        assert refused.json()["data"]["message"] == "Unauthorized extensibility point"
        summary = stream.records(count=1)[0]
    assert summary["type"] == "invocation" and summary["outcome"] == "error"
    assert summary["error"] == "Unauthorized extensibility point"
    assert summary["request_id"] == refused.headers["x-wtpy-request-id"]


def test_e2e_flood_is_capped_with_a_marker(server: WtpyServer) -> None:
    name = unique("flood")
    assert server.put(name, FLOOD_HOOK, cc_meta()).status_code == 201
    with sse(logs_url(server), server.token, params={"name": name}) as stream:
        assert call(server, name).json()["status"] == "success"
        records = stream.records(until=lambda got: got[-1]["type"] == "invocation")
    lines = [r for r in records if r["type"] == "log"]
    assert lines[0]["message"] == "flood line 0"
    assert len(lines) < 100000
    assert lines[-1]["level"] == "warn" and "truncated" in lines[-1]["message"]
    assert sum(len(r["message"]) for r in lines) < 1000000
    assert records[-1]["outcome"] == "success"


def test_e2e_reconnect_with_last_event_id_has_no_gap_and_no_duplicate(server: WtpyServer) -> None:
    name = unique("resume")
    assert server.put(name, CHATTY_HOOK, cc_meta()).status_code == 201
    with sse(logs_url(server), server.token, params={"name": name}) as stream:
        for n in range(3):
            call(server, name, n)
        first = stream.records(count=7)  # the connection drops mid-invocation
        last_id = stream.last_id
    assert last_id == str(first[-1]["id"])
    for n in range(3, 5):
        call(server, name, n)
    with sse(logs_url(server), server.token, params={"name": name, "tail": "100"},
             headers={"Last-Event-ID": last_id}) as stream:  # fmt: skip
        call(server, name, 5)
        rest = stream.records(until=lambda got: sum(r["type"] == "invocation" for r in got) == 5)
    everything = first + rest
    assert ids(everything) == sorted(set(ids(everything)))  # ordered, no duplicate
    assert [r["message"].split(" (")[0] for r in everything if r["type"] == "invocation"] == [
        "success"
    ] * 6
    assert len(everything) == 6 * 5  # no gap: every line and summary of six invocations
    starts = [r["message"] for r in everything if r["message"].startswith("start")]
    assert starts == [f"start {n}" for n in range(6)]


def test_e2e_tail_since_errors_and_auth(server: WtpyServer) -> None:
    name = unique("history")
    assert server.put(name, CHATTY_HOOK, cc_meta()).status_code == 201
    for n in range(3):
        call(server, name, n)
    url = logs_url(server)
    with sse(url, server.token, params={"name": name, "tail": "2"}) as stream:
        assert [r["type"] for r in stream.records(count=2)] == ["log", "invocation"]
    with sse(url, None, params={"name": name, "since": "10m", "key": server.token}) as stream:
        assert len(stream.records(count=15)) == 15
    flaky = unique("flaky")
    assert server.put(flaky, ERRORS_HOOK, cc_meta()).status_code == 201
    with sse(url, server.token, params={"name": flaky, "errors": "1"}) as stream:
        call(server, flaky, 0)
        call(server, flaky, 1)
        errors = stream.records(count=3)
    assert [(r["type"], r["message"]) for r in errors[:2]] == [("log", "oops 0"), ("log", "oops 1")]
    assert errors[2]["outcome"] == "error" and errors[2]["error"] == "InvalidRequestError: odd 1"
    with sse(url, server.token, params={"name": flaky, "level": "warn", "tail": "100"}) as stream:
        assert [r["message"] for r in stream.records(count=2)] == ["oops 0", "oops 1"]
    bad = unique("bad")
    assert server.put(bad, "def hook(:\n", cc_meta()).status_code == 201
    with sse(url, server.token, params={"name": bad, "errors": "1"}) as stream:
        call(server, bad)
        compile_error = stream.records(count=1)[0]
    assert compile_error["outcome"] == "error" and "Unable to compile" in compile_error["error"]
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer nope"}).status_code == 403
    marker = "wtpy_not-a-key-" + uuid.uuid4().hex
    assert httpx.get(url, params={"key": marker}).status_code == 403
    assert marker not in server.output.read_text()  # a key in the query is never logged


def test_e2e_cli_logs_raw(server: WtpyServer, tmp_path: Path) -> None:
    name = unique("clitail")
    assert server.put(name, CHATTY_HOOK, cc_meta()).status_code == 201
    call(server, name, 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WTPY_")}
    env.update(WTPY_URL=server.url, WTPY_TOKEN=server.token, WTPY_CONTAINER="default",
               WTPY_CONFIG_DIR=str(tmp_path / "config"), PYTHONUNBUFFERED="1")  # fmt: skip
    command = [sys.executable, "-m", "wtpy.cli", "logs", name, "--raw", "--tail", "5"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines: queue.Queue[bytes] = queue.Queue()

    def read_lines() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    try:
        replayed = [orjson.loads(lines.get(timeout=60)) for _ in range(5)]
        assert [r["message"] for r in replayed[:4]] == ["start 1", "middle 1", "warned 1", "end 1"]
        assert replayed[4]["type"] == "invocation"
        call(server, name, 2)
        live = [orjson.loads(lines.get(timeout=60)) for _ in range(5)]
        assert live[0]["message"] == "start 2" and live[4]["outcome"] == "success"
        assert ids(replayed + live) == sorted(ids(replayed + live))
    finally:
        process.terminate()
        process.wait(15)
        reader.join(15)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    with process.stderr:
        assert b"following" in process.stderr.read()


def test_e2e_cli_logs_exit_codes(server: WtpyServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WTPY_")}
    env.update(
        WTPY_URL=server.url, WTPY_CONFIG_DIR=str(tmp_path / "config"), WTPY_CONTAINER="default"
    )
    base = [sys.executable, "-m", "wtpy.cli", "logs"]
    wrong = subprocess.run(
        base, env={**env, "WTPY_TOKEN": "wtpy_wrong"}, capture_output=True, timeout=60
    )
    assert wrong.returncode == 8 and b"error:" in wrong.stderr
    missing = subprocess.run([*base, "no-such-hook"], env={**env, "WTPY_TOKEN": server.token},
                             capture_output=True, timeout=60)  # fmt: skip
    assert missing.returncode == 5

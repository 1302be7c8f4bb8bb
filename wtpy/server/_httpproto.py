"""A cap on the size of a request's head (request line + headers) for uvicorn.

uvicorn's httptools protocol has no such limit: a client could send a header of hundreds of
megabytes, which httptools accumulates by repeated concatenation (memory grows without bound,
and the event loop, busy copying, stops serving everyone else). wtpy serves with a subclass
that counts the bytes received while a request's head is incomplete and, past the limit,
answers 431 Request Header Fields Too Large and closes the connection. The h11 protocol (used
when httptools is not installed) gets the same limit through `h11_max_incomplete_event_size`
(it answers 400).

The limit is exact for heads that arrive complete (URL and header bytes counted as httptools
reports them); a header still arriving is bounded by counting the bytes read while a head is
incomplete, which may overshoot by one socket read. Either way memory stays bounded.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

import orjson

from ._invoke import INVOKE_PREFIX

if TYPE_CHECKING:  # httptools (and so this module of uvicorn's) may not be installed
    from uvicorn._types import HTTPResponseStartEvent
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

__all__ = ["DEFAULT_MAX_HEADER_BYTES", "http_protocol"]

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
# After the 431, read and drop what the client still sends for this long before closing:
# closing with unread data makes the kernel send RST, which can destroy the 431 in flight.
LINGER_SECONDS = 2.0

logger = logging.getLogger("wtpy")


def _response_431(limit: int) -> bytes:
    body = orjson.dumps(
        {
            "error": "request_header_fields_too_large",
            "message": f"The request line and headers exceed {limit} bytes",
        }
    )
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


def http_protocol(
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
) -> type[HttpToolsProtocol] | str:
    """The `http=` argument for uvicorn: httptools with a head-size cap, or "h11"."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
    except ImportError:  # httptools not installed: h11 enforces h11_max_incomplete_event_size
        return "h11"
    limit = max(1024, int(max_header_bytes))
    too_large = _response_431(limit)
    invocation_cycle = _invocation_cycle()

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._wtpy_in_head = True  # before the first request: its head is coming
            self._wtpy_read_bytes = 0  # reads while a head is incomplete (memory guard)
            self._wtpy_heads = 0  # requests whose head was complete
            self._wtpy_refused = False

        def on_message_begin(self) -> None:
            self._wtpy_in_head = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            # Counted once the head is complete (not per header callback, which would cost
            # every request two extra Python calls per header); memory meanwhile is bounded
            # by the read counter in data_received plus at most one read.
            headers = self.headers
            size = (
                len(self.url)
                + 4 * len(headers)
                + sum(map(len, itertools.chain.from_iterable(headers)))
            )
            if size > limit:
                self._wtpy_refused = True
                # Aborts parsing: httptools raises HttpParserCallbackError, uvicorn answers
                # with send_400_response, which answers 431 for us (below).
                raise ValueError("request head too large")
            self._wtpy_in_head = False
            self._wtpy_read_bytes = 0
            self._wtpy_heads += 1
            super().on_headers_complete()
            cycle = self.cycle
            if (
                type(cycle) is RequestResponseCycle
                and cycle.scope is self.scope  # this request's (not an upgrade's leftover)
                and self.scope["path"].startswith(INVOKE_PREFIX)
            ):
                # Its task has not run yet: it will answer through the one-write send.
                cycle.__class__ = invocation_cycle

        def send_400_response(self, msg: str) -> None:
            if self._wtpy_refused:
                self._wtpy_refuse()
            else:
                super().send_400_response(msg)

        def data_received(self, data: bytes) -> None:
            if self._wtpy_refused:
                return  # read and dropped until we hang up
            heads = self._wtpy_heads
            super().data_received(data)
            if self._wtpy_refused or heads != self._wtpy_heads or not self._wtpy_in_head:
                return  # a head was completed in this read (or we are in a body)
            transport = self.transport
            if transport is None or transport.is_closing():
                return
            # One header still arriving: httptools only reports it once complete.
            self._wtpy_read_bytes += len(data)
            if self._wtpy_read_bytes > limit:
                self._wtpy_refused = True
                self._wtpy_refuse()

        def _wtpy_refuse(self) -> None:
            logger.warning("refused a request whose head exceeds %d bytes (431)", limit)
            transport = self.transport
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                transport.close()  # a pipelined earlier response is still being written
                return
            transport.write(too_large)
            if transport.can_write_eof():
                transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, transport.close)

    return LimitedHttpToolsProtocol


def _invocation_cycle() -> type[RequestResponseCycle]:
    """uvicorn's request/response cycle for invocations, answering in one write.

    The invocation handler always sends one `http.response.start` whose headers it built
    itself (fixed names; values that are constants, digits or hex), then one complete
    `http.response.body`. This cycle holds the head until the body and writes both at once:
    one syscall, one loopback segment and one wake-up of the client instead of two each, and
    no per-header validation of values that cannot be invalid. Any other sequence of
    messages goes through uvicorn's own `send`, unchanged. Called once httptools imported.
    """
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

    class InvocationCycle(RequestResponseCycle):
        _held: HTTPResponseStartEvent | None = None

        async def send(self, message: Any) -> None:
            kind = message["type"]
            if kind == "http.response.start" and not self.response_started and self._held is None:
                self._held = message
                return
            held = self._held
            if held is None or kind != "http.response.body" or message.get("more_body", False):
                if held is not None:  # not the expected shape: let uvicorn send it all
                    self._held = None
                    await super().send(held)
                await super().send(message)
                return
            self._held = None
            if self.flow.write_paused and not self.disconnected:
                await self.flow.drain()
            if self.disconnected:
                return
            self.response_started = True
            self.waiting_for_100_continue = False
            content = [STATUS_LINE[held["status"]]]
            has_connection = False
            for name, value in (*self.default_headers, *held.get("headers", ())):
                if name == b"connection":
                    has_connection = True
                    if b"close" in value.lower():
                        self.keep_alive = False
                content += (name, b": ", value, b"\r\n")
            if not self.keep_alive and not has_connection:
                content.append(b"connection: close\r\n")
            content.append(b"\r\n")
            if self.scope["method"] != "HEAD":
                content.append(message.get("body", b""))
            self.transport.write(b"".join(content))
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    return InvocationCycle

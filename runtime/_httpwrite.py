"""One write per response for uvicorn's httptools protocol.

uvicorn writes a response's head (status line and headers) as soon as the app sends
`http.response.start`, and the body in a second write: two syscalls and, on loopback or
a fast network, two wake-ups of the client for one response. Each invocation answer is a
small body with a Content-Length, sent right after its head, so this holds the head of
such a response (never of a HEAD request, a chunked/streaming one such as the log
stream, or one with an empty body) until the body's first write and sends both at once.
Anything else passes straight through; closing the connection first sends a head still
held.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["coalescing"]


class _HeadHolder:
    """The transport as one response cycle sees it (attributes it does not define are the
    real transport's)."""

    __slots__ = ("_transport", "_cycle", "_held", "_head_seen")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._held: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
            return
        cycle = self._cycle
        if not self._head_seen and cycle.response_started:
            self._head_seen = True  # this write is the head
            if (
                cycle.chunked_encoding is False
                and cycle.expected_content_length > 0
                and cycle.scope["method"] != "HEAD"
            ):
                self._held = bytes(data)
                return
        self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def coalescing(protocol: type[asyncio.Protocol] | str) -> type[asyncio.Protocol] | str:
    """`protocol` (an httptools protocol class) writing each response in one piece; a
    protocol name (e.g. "h11") is returned unchanged."""
    if isinstance(protocol, str) or __import__("os").environ.get("ABTEST_NOCOAL"):
        return protocol

    class CoalescingProtocol(protocol):  # type: ignore[misc, valid-type]
        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            cycle = getattr(self, "cycle", None)
            if cycle is not None and not isinstance(cycle.transport, _HeadHolder):
                cycle.transport = _HeadHolder(cycle.transport, cycle)

    CoalescingProtocol.__name__ = CoalescingProtocol.__qualname__ = f"Coalescing{protocol.__name__}"
    return CoalescingProtocol

"""Fallback closed-loop HTTP/1.1 load generator (used when `wrk` is not installed).

Each of `concurrency` keep-alive connections sends one POST, waits for the whole
response, and sends the next. Raw asyncio protocols on uvloop: far lighter than an
HTTP client library, so more of the CPU goes to the server under test.

    python bench/loadgen.py --port 8721 --path /api/run/default/myrule \
        --body-file body.json --header "Authorization: Bearer ..." -c 8 -d 10

With `--paths-file` (one path a line) the requests rotate over those paths instead:
request i, counted across all connections, goes to path i mod N (the many-tenant run).

Prints one JSON object: requests, errors, rps, p50_ms, p99_ms, mean_ms, max_ms, bad_body.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import orjson


class _Conn(asyncio.Protocol):
    def __init__(self, stats: _Stats, requests: list[bytes], expect: bytes | None) -> None:
        self.stats = stats
        self.requests = requests
        self.expect = expect
        self.buffer = bytearray()
        self.sent_at = 0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        if self.stats.stop:
            assert self.transport is not None
            self.transport.close()
            return
        requests = self.requests
        if len(requests) == 1:
            request = requests[0]
        else:  # round-robin over the paths, one counter for all connections
            request = requests[self.stats.sent % len(requests)]
            self.stats.sent += 1
        self.sent_at = time.perf_counter_ns()
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        start = head.find(b"content-length:")
        if start < 0:
            self.stats.errors += 1
            assert self.transport is not None
            self.transport.close()
            return
        stop = head.find(b"\r\n", start)
        length = int(head[start + 15 : stop if stop >= 0 else None])
        total = end + 4 + length
        if len(buffer) < total:
            return
        now = time.perf_counter_ns()
        ok = head.startswith(b"http/1.1 200")
        body = bytes(buffer[end + 4 : total])
        del buffer[:total]
        self.stats.record(now - self.sent_at, ok, self.expect is None or self.expect in body)
        self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Stats:
    def __init__(self) -> None:
        self.stop = False
        self.sent = 0
        self.measuring = False
        self.latencies: list[int] = []
        self.errors = 0
        self.bad_body = 0

    def record(self, nanoseconds: int, ok: bool, body_ok: bool) -> None:
        if not self.measuring:
            return
        self.latencies.append(nanoseconds)
        if not ok:
            self.errors += 1
        elif not body_ok:
            self.bad_body += 1


def _percentile(sorted_values: list[int], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index] / 1e6


async def _main(args: argparse.Namespace) -> dict[str, float | int]:
    body = Path(args.body_file).read_bytes() if args.body_file else b""
    if args.paths_file:
        paths = [ln.strip() for ln in Path(args.paths_file).read_text().splitlines() if ln.strip()]
    else:
        paths = [args.path]
    requests = []
    for path in paths:
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {args.host}:{args.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *args.header,
        ]
        requests.append(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    expect = args.expect.encode() if args.expect else None
    stats = _Stats()
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(args.concurrency):
        _, proto = await loop.create_connection(
            lambda: _Conn(stats, requests, expect), args.host, args.port
        )
        conns.append(proto)
    await asyncio.sleep(args.warmup)
    stats.measuring = True
    started = time.perf_counter()
    await asyncio.sleep(args.duration)
    stats.measuring = False
    elapsed = time.perf_counter() - started
    stats.stop = True
    await asyncio.wait([c.closed for c in conns], timeout=10)
    values = sorted(stats.latencies)
    return {
        "requests": len(values),
        "errors": stats.errors,
        "bad_body": stats.bad_body,
        "rps": len(values) / elapsed,
        "p50_ms": _percentile(values, 0.50),
        "p99_ms": _percentile(values, 0.99),
        "mean_ms": (sum(values) / len(values) / 1e6) if values else 0.0,
        "max_ms": values[-1] / 1e6 if values else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", help="the path every request goes to")
    parser.add_argument("--paths-file", help="one path a line: requests rotate over them")
    parser.add_argument("--body-file")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--expect", help="substring every response body must contain")
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    parser.add_argument("-w", "--warmup", type=float, default=1.0)
    args = parser.parse_args()
    if not args.path and not args.paths_file:
        parser.error("--path or --paths-file is required")
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        pass
    else:
        uvloop.install()
    result = asyncio.run(_main(args))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()

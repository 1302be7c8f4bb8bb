"""Instructions the server process executes per invocation, wtpy against the floor.

    python bench/instructions.py [--calls N]

Runs each server under `valgrind --tool=callgrind` (which counts instructions, not
seconds: the same code gives the same count whatever else the machine is doing), makes
N sequential invocations over 8 keep-alive connections, and divides by N the difference
between that run and one with N/6 calls (which cancels start-up and shutdown). Only the
server process is counted: wtpy's sandbox workers run outside valgrind. Slow (about a
minute): valgrind runs the server some 50 times slower than usual.
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  (bench/run.py: servers, callers, the sample rule)


def _server_argv(kind: str, port: int, data_dir: Path, out: Path) -> list[str]:
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
    if kind == "floor":
        return [*valgrind, sys.executable, str(bench.BENCH / "floor.py"), str(port)]
    return [*valgrind, sys.executable, "-m", "wtpy.cli", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--data-dir", str(data_dir)]  # fmt: skip


def count(kind: str, calls: int) -> int:
    """Instructions of a whole server run that served `calls` invocations (plus warm-up)."""
    tmp = Path(
        tempfile.mkdtemp(
            prefix="wtpy-instr-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None
        )
    )
    try:
        port = bench.free_port()
        out = tmp / "callgrind.out"
        server = bench.Server(kind, _server_argv(kind, port, tmp / "data", out), port, tmp / "log")
        secret = secrets.token_hex(16)
        server.start(timeout=300)
        try:
            if kind == "wtpy":
                token = (tmp / "data" / "admin.token").read_text().strip()
                bench.put_webtask(port, token, "myrule", bench.SAMPLE.read_text(), secret)
            callers = [bench.Caller(port, secret) for _ in range(8)]
            for caller in callers:  # warm-up: code compiled, caches filled
                for _ in range(3):
                    caller.call("myrule")
            for i in range(calls):
                callers[i % len(callers)].call("myrule")
            for caller in callers:
                caller.close()
        finally:
            server.stop()
        match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no instruction total in {out}")
        return int(match.group(1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--calls", type=int, default=1200, help="invocations in the long run (default 1200)"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    short = max(1, args.calls // 6)
    per_call = {}
    for kind in ("floor", "wtpy"):
        per_call[kind] = (count(kind, args.calls) - count(kind, short)) / (args.calls - short)
        print(f"{kind:6s} {per_call[kind]:>10,.0f} instructions per invocation (server process)")
    print(f"wtpy/floor: {per_call['wtpy'] / per_call['floor']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

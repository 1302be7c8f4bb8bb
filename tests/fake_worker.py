"""A test-only sandbox worker that speaks the pool protocol (docs/design.md section 2).

It does not run Python hooks. `code` is only cached (to exercise the pool's
send-code-once / need_code logic); what a job does is chosen by `args["action"]`:

    echo      result = args["value"]            none     ok, no result
    error     ok: false, a ValueError            sleep    sleep args["seconds"], then echo
    spin      `while True: pass`                 crash    os._exit(3) mid-job
    recycle   echo, plus "recycle": true         garbage  a non-frame on the protocol stream
    wrong_id  a reply for another job id         print    print() noise to fd 1, then echo
    stats     result = {pid, jobs, code_received, code_received_by_key, cached}
    env       result = dict(os.environ)

Options: --cache-size N (LRU of compiled keys; 0 caches nothing, so every code-less
request gets need_code), --fail-file PATH (while PATH holds an int N > 0, decrement
it and exit before saying ready), --ready-delay SECONDS.

Run as `python -I tests/fake_worker.py [options]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import OrderedDict
from typing import Any

import orjson

from wtpy.sandbox._protocol import encode, read_frame_blocking, write_frame_blocking


def _take_protocol_fds() -> tuple[Any, Any]:
    """Move the protocol off fds 0/1 (as the real worker does) so stray output is harmless."""
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return proto_in, proto_out


def _fail_start(path: str | None) -> bool:
    if not path:
        return False
    try:
        with open(path) as handle:
            remaining = int(handle.read().strip() or 0)
    except FileNotFoundError:
        return False
    if remaining <= 0:
        return False
    with open(path, "w") as handle:
        handle.write(str(remaining - 1))
    return True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-size", type=int, default=100)
    parser.add_argument("--fail-file")
    parser.add_argument("--ready-delay", type=float, default=0.0)
    options = parser.parse_args()

    if _fail_start(options.fail_file):
        print("fake worker: failing to start on purpose", file=sys.stderr)
        return 1
    proto_in, proto_out = _take_protocol_fds()
    if options.ready_delay:
        time.sleep(options.ready_delay)
    write_frame_blocking(proto_out, {"ready": True, "pid": os.getpid()})

    cache: OrderedDict[str, str] = OrderedDict()
    jobs = 0
    code_received = 0
    code_received_by_key: dict[str, int] = {}

    while True:
        message = read_frame_blocking(proto_in)
        if message is None:
            return 0
        job_id = message["id"]
        key = message["key"]
        code = message.get("code")
        if code is None:
            if key not in cache:
                write_frame_blocking(proto_out, {"id": job_id, "need_code": True})
                continue
            cache.move_to_end(key)
        else:
            code_received += 1
            code_received_by_key[key] = code_received_by_key.get(key, 0) + 1
            cache[key] = code
            while len(cache) > options.cache_size:
                cache.popitem(last=False)
        jobs += 1

        args = message.get("args") or {}
        action = args.get("action", "echo")
        logs = [{"level": "info", "message": f"job {job_id}: {action}", "time": time.time()}]
        reply: dict[str, Any] = {"id": job_id, "ok": True, "logs": logs}
        if action == "echo":
            reply["result"] = args.get("value")
        elif action == "none":
            pass
        elif action == "error":
            reply = {
                "id": job_id,
                "ok": False,
                "error": {"name": "ValueError", "message": "boom", "stack": "ValueError: boom"},
                "logs": logs,
                "recycle": False,
            }
        elif action == "sleep":
            time.sleep(float(args.get("seconds", 0)))
            reply["result"] = args.get("value")
        elif action == "spin":
            while True:
                pass
        elif action == "crash":
            os._exit(3)
        elif action == "recycle":
            reply["result"] = args.get("value")
            reply["recycle"] = True
        elif action == "garbage":
            proto_out.write(b"\x00\x00\x00\x05not json")
            proto_out.flush()
            return 0
        elif action == "wrong_id":
            reply["id"] = job_id + 1000
        elif action == "print":
            print("noise on stdout that must not reach the protocol stream")
            sys.stdout.flush()
            reply["result"] = args.get("value")
        elif action == "stats":
            reply["result"] = {
                "pid": os.getpid(),
                "jobs": jobs,
                "code_received": code_received,
                "code_received_by_key": code_received_by_key,
                "cached": list(cache),
            }
        elif action == "env":
            reply["result"] = dict(os.environ)
        else:
            reply = {
                "id": job_id,
                "ok": False,
                "error": {"name": "Error", "message": f"unknown action {action!r}"},
                "logs": logs,
            }
        # A success's result travels as the frame's tail (see _protocol).
        tail = orjson.dumps(reply.pop("result")) if "result" in reply else None
        proto_out.write(encode(reply, tail))
        proto_out.flush()


if __name__ == "__main__":
    sys.exit(main())

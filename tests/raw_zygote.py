"""Test-only zygote whose workers run UNRESTRICTED Python inside the OS sandbox.

Never reachable from the API: it lives in tests/ (not in the package), and only a pool built
with `zygote_argv=[python, -I, tests/raw_zygote.py]` uses it. It tests the OS layer as if
the language layer had already fallen: a job's `code` is exec'd as plain Python, and its
`result` global (JSON-able) is the answer. `--without-seccomp` skips the seccomp filter, to
test the namespaces and uids on their own, as if the filter had fallen too.

    python -I tests/raw_zygote.py [--without-seccomp] [zygote options]
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any, BinaryIO

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # -I: no cwd on the path

from wtpy.sandbox import _limits, _oslayer, _zygote  # noqa: E402
from wtpy.sandbox._protocol import encode, read_frame_blocking  # noqa: E402

# Kept alive across jobs: a job may leave things here for a later one (same worker only).
STATE: dict[str, Any] = {}


def serve(
    proto_in: BinaryIO,
    proto_out: BinaryIO,
    memory_mb: int,
    statm: int | None,
    hello: dict[str, Any],
) -> int:
    _limits.apply_rlimits(memory_mb)  # the real worker's limits: memory, no files, no processes
    proto_out.write(encode({"ready": True, **hello}))
    proto_out.flush()
    codes: dict[str, str] = {}
    while True:
        frame = read_frame_blocking(proto_in)
        if frame is None:
            return 0
        key, code = frame.get("key", ""), frame.get("code")
        result: Any = None
        if code is None and key not in codes:
            reply: dict[str, Any] = {"id": frame.get("id"), "need_code": True}
        else:
            if code is not None:
                codes[key] = code
            namespace: dict[str, Any] = {"STATE": STATE, "args": frame.get("args")}
            try:
                exec(codes[key], namespace)
                reply, result = {"id": frame.get("id"), "ok": True}, namespace.get("result")
            except BaseException as exc:  # noqa: BLE001
                error = {
                    "name": type(exc).__name__,
                    "message": str(exc),
                    "stack": traceback.format_exc(),
                }
                reply = {"id": frame.get("id"), "ok": False, "error": error, "logs": []}
        try:  # a success's result travels as the frame's tail (see _protocol)
            data = encode(reply, orjson.dumps(result) if reply.get("ok") else None)
        except TypeError as exc:
            data = encode(
                {
                    "id": frame.get("id"),
                    "ok": False,
                    "error": {"name": "TypeError", "message": str(exc)},
                }
            )
        proto_out.write(data)
        proto_out.flush()


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--without-seccomp" in argv:
        argv.remove("--without-seccomp")
        _oslayer.install_seccomp = lambda: None
    sys.exit(_zygote.main(serve, argv))

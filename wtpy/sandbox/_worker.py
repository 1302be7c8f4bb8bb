"""Sandbox worker: `python -m wtpy.sandbox._worker`, one hook invocation at a time.

Speaks the frame protocol of `_protocol.py` on private copies of stdin/stdout (fd 0 is
/dev/null and fd 1 is stderr while hooks run), under rlimits set once at start
(`_limits.py`). Each "run" executes a RestrictedPython-compiled hook module (cached per
`key`) in fresh globals (`_invocation.py`) and answers with its result or an error, plus
the log lines it produced.
"""

from __future__ import annotations

import codecs
import contextlib
import gc
import importlib
import os
import resource
import signal
import sys
import traceback
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from . import _limits
from ._hook import CompiledHook, CompileFailure
from ._invocation import Job, compile_error, invoke, on_alarm
from ._limits import (
    STATM_SIZE,
    SerializationRoom,
    apply_rlimits,
    heap_grown,
    lower,
    set_cpu_budget,
    statm_bytes,
)
from ._protocol import RESULT, FrameError, encode, read_frame_blocking, write_frame_blocking
from ._rp_compile import compile_hook

__all__ = ["main"]

CACHE_SIZE = 256
DEFAULT_MEMORY_MB = 512


# ----------------------------------------------------------------------------- process set-up


def _private_stdio() -> tuple[BinaryIO, BinaryIO]:
    """Move the protocol to private fds; fd 0 <- /dev/null, fd 1 <- fd 2."""
    sys.stdout.flush()
    proto_in, proto_out = os.dup(0), os.dup(1)  # os.dup fds are not inherited
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return os.fdopen(proto_in, "rb"), os.fdopen(proto_out, "wb")


def _memory_mb(env: Mapping[str, str]) -> int:
    try:
        return int(env.get("WTPY_WORKER_MEMORY_MB", DEFAULT_MEMORY_MB))
    except ValueError:
        return DEFAULT_MEMORY_MB


# Codecs a hook may name (bytes.decode("utf-16"), ...): looked up, so imported, at start.
_PRELOAD_CODECS = (
    "ascii", "latin-1", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
    "utf-32-le", "utf-32-be", "utf-7", "cp1252", "cp437", "iso8859-15", "mac-roman", "idna",
    "punycode", "unicode-escape", "raw-unicode-escape", "charmap",
)  # fmt: skip
UNPRIVILEGED_ID = 65534  # "nobody" / "nogroup"
UID_ENV = "WTPY_WORKER_UID"
GID_ENV = "WTPY_WORKER_GID"


def _preload() -> None:
    """Import now what hooks would otherwise import lazily: once privileges are dropped the
    interpreter's files may no longer be readable (e.g. a Python under /root)."""
    importlib.import_module("_strptime")  # datetime.strptime, time.strptime; has no stubs

    for name in _PRELOAD_CODECS:
        with contextlib.suppress(LookupError):
            codecs.lookup(name)


def _id_from_env(env: Mapping[str, str], key: str) -> int:
    try:
        value = int(env.get(key, UNPRIVILEGED_ID))
    except ValueError:
        return UNPRIVILEGED_ID
    return value if value > 0 else UNPRIVILEGED_ID  # never "drop" to root


def _drop_privileges(env: Mapping[str, str]) -> bool:
    """When started as root, become an unprivileged user (default 65534, "nobody"), so
    that RLIMIT_NPROC applies (no fork), and a hook that got out of the RestrictedPython
    sandbox still holds no root powers. True when we now run unprivileged.

    Failure (not root, no such id in a user namespace, ...) is not fatal: the worker
    carries on as it is and says so on stderr (the server's log)."""
    if os.geteuid() != 0:
        return os.getuid() != 0
    uid, gid = _id_from_env(env, UID_ENV), _id_from_env(env, GID_ENV)
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        print(f"wtpy worker: could not drop root privileges to {uid}:{gid} ({exc}); "
              "hooks run as root", file=sys.stderr)  # fmt: skip
        return False
    return True


def _text_safe(value: Any) -> Any:
    """`value` with lone surrogates replaced in every string (JSON cannot carry them)."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_text_safe(key): _text_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_text_safe(item) for item in value]
    return value


def write_reply(out: BinaryIO, reply: dict[str, Any]) -> None:
    """Write one frame to the server, whatever text the hook put in it.

    Error texts and extra error fields come from hook objects: a lone surrogate there made
    the encoding fail and the worker die. Such a reply is sent with those replaced; one that
    still cannot be encoded becomes a plain error. Encoding a big result reserves a lot of
    address space (see SERIALIZE_HEADROOM): done with the room. The result, already JSON
    text, is taken out of `reply` and sent as the frame's tail."""
    result = reply.pop(RESULT, None)
    with SerializationRoom():
        try:
            frame = encode(reply, result)
        except TypeError:
            try:
                frame = encode(_text_safe(reply), result)
            except TypeError:
                message = "The hook's answer could not be encoded"
                error = {"name": "Error", "message": message, "stack": f"Error: {message}"}
                frame = encode(
                    {
                        "id": reply.get("id"),
                        "ok": False,
                        "error": error,
                        "logs": [],
                        "recycle": False,
                    }
                )
    out.write(frame)
    out.flush()


class Worker:
    """Protocol handler: the compiled-code cache and the dispatch of frames."""

    def __init__(
        self,
        memory_mb: int = DEFAULT_MEMORY_MB,
        live_logs: BinaryIO | None = None,
        statm_fd: int | None = None,
    ) -> None:
        self._cache: OrderedDict[str, CompiledHook | CompileFailure] = OrderedDict()
        # Where a running hook's log lines go as it runs ("logs" frames; see LogSink).
        self._live_logs = live_logs
        # Past this peak RSS, ask to be replaced: the heap stays fragmented/grown.
        self._recycle_rss = memory_mb * 1024 * 1024 // 2 if memory_mb > 0 else 0
        # Past this much address space still mapped after a job, ask to be replaced too: the
        # allocator keeps what a big result or a big temporary freed mapped (not resident,
        # so RSS does not show it), and under RLIMIT_AS the next invocation, maybe another
        # tenant's, would meet a MemoryError a fresh worker would not. Read with one pread.
        space = _limits.address_space
        self._recycle_mapped = space[0] // 2 if space is not None else 0
        if statm_fd is not None:  # opened before the OS sandbox took /proc away
            self._statm = statm_fd
            return
        try:
            self._statm = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:  # no /proc: heap_grown then errs on the side of replacing
            self._statm, self._recycle_mapped = -1, 0

    def handle(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        op = frame.get("op")
        if op == "ping":
            return {"id": frame.get("id"), "ok": True}
        if op != "run":
            return self._protocol_error(frame, f"unknown op {op!r}")
        try:
            job = Job.parse(frame)
        except (ValueError, TypeError) as exc:
            return self._protocol_error(frame, str(exc))
        try:
            return {"id": job.id, **self._run(job)}
        except MemoryError:  # compiling a huge module, say
            error = {"name": "MemoryError", "message": "", "stack": "MemoryError"}
            return {"id": job.id, "ok": False, "error": error, "logs": [], "recycle": True}
        except Exception as exc:  # a bug of ours: say so (stderr is the server's log), get replaced
            # Best effort: with RLIMIT_FSIZE 0, a stderr that is a regular file refuses writes
            # (EFBIG), and the reply below must still go out.
            with contextlib.suppress(OSError):
                traceback.print_exc()
            message = f"internal worker error: {type(exc).__name__}"
            error = {"name": "Error", "message": message, "stack": f"Error: {message}"}
            return {"id": job.id, "ok": False, "error": error, "logs": [], "recycle": True}

    def _run(self, job: Job) -> dict[str, Any]:
        compiled = self._cache.get(job.key)
        if compiled is None and job.code is None:
            return {"need_code": True}
        set_cpu_budget(job.cpu_seconds)
        if compiled is None:
            assert job.code is not None
            compiled = compile_hook(job.code)
            self._cache[job.key] = compiled  # failures too: same code, same answer
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(job.key)
        if isinstance(compiled, CompileFailure):
            error = compile_error(compiled.error_description)
            return {"ok": False, "error": error, "logs": [], "recycle": False}
        reply, memory_error = invoke(compiled, job, self._live_sender(job.id))
        recycle = (
            memory_error
            or bool(self._recycle_rss and heap_grown(self._recycle_rss, self._statm))
            or bool(
                self._recycle_mapped and statm_bytes(self._statm, STATM_SIZE) > self._recycle_mapped
            )
        )
        if not reply["ok"] or recycle:
            reply["recycle"] = recycle
        return reply

    def _live_sender(self, job_id: Any) -> Callable[[list[dict[str, Any]]], None] | None:
        out = self._live_logs
        if out is None:
            return None

        def send(batch: list[dict[str, Any]]) -> None:
            # LogSink made the text encodable; lost if the server is gone (the worker then
            # ends at its next read).
            with contextlib.suppress(OSError, TypeError), SerializationRoom():
                out.write(encode({"id": job_id, "op": "logs", "logs": batch}))
                out.flush()

        return send

    @staticmethod
    def _protocol_error(frame: Mapping[str, Any], message: str) -> dict[str, Any]:
        error = {"name": "ProtocolError", "message": message, "stack": f"ProtocolError: {message}"}
        return {"id": frame.get("id"), "ok": False, "error": error, "logs": [], "recycle": False}


def main() -> int:
    """`python -m wtpy.sandbox._worker`: one worker on stdin/stdout (no OS sandbox; the
    server forks its workers from the zygote instead, see _zygote.py)."""
    memory_mb = _memory_mb(os.environ)
    proto_in, proto_out = _private_stdio()
    if os.geteuid() == 0:
        _preload()  # before _drop_privileges (the files may be root's only)
    return serve(proto_in, proto_out, memory_mb, drop_privileges=True)


def serve(
    proto_in: BinaryIO,
    proto_out: BinaryIO,
    memory_mb: int,
    *,
    statm_fd: int | None = None,
    drop_privileges: bool = False,
    hello: Mapping[str, Any] | None = None,
) -> int:
    """Apply the rlimits, say ready, then answer frames until EOF (the exit status)."""
    warnings.simplefilter("ignore")  # e.g. SyntaxWarnings while compiling a hook
    apply_rlimits(memory_mb)
    if drop_privileges and _drop_privileges(os.environ):
        lower(resource.RLIMIT_NPROC, 0)  # now it applies: no fork, no threads
    signal.signal(signal.SIGALRM, on_alarm)
    worker = Worker(memory_mb, live_logs=proto_out, statm_fd=statm_fd)
    # Everything alive now is the worker's own and lives forever: take it out of the
    # cyclic collector so the per-invocation collection (_finalize_leftovers) stays cheap.
    gc.collect()
    gc.freeze()
    try:
        write_frame_blocking(proto_out, {"ready": True, "pid": os.getpid(), **(hello or {})})
        while True:
            try:
                frame = read_frame_blocking(proto_in)
            except FrameError:
                return 2  # the stream is out of sync: nothing sensible left to do
            if frame is None:
                return 0  # the pool closed our end
            reply = worker.handle(frame)
            write_reply(proto_out, reply)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sandbox worker: `python -m wtpy.sandbox._worker`, one hook invocation at a time.

Speaks the frame protocol of `_protocol.py` on private copies of stdin/stdout (fd 0 is
/dev/null and fd 1 is stderr while hooks run), under rlimits set once at start. Each
"run" executes a RestrictedPython-compiled hook module (cached per `key`) in fresh
globals and answers with its result or an error, plus the log lines it produced.
"""

from __future__ import annotations

import codecs
import contextlib
import gc
import inspect
import itertools
import math
import os
import resource
import signal
import sys
import traceback
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from time import process_time
from types import FrameType, FunctionType, GeneratorType, TracebackType
from typing import Any, BinaryIO, NamedTuple

import orjson

from ._policy import (
    COMPILE_ERROR_MESSAGE,
    HOOK_FILENAME,
    LIVE_LOG_INTERVAL,
    CompiledHook,
    CompileFailure,
    LogSink,
    compile_hook,
    make_globals,
    reset_module_state,
    resolve_hook,
)
from ._protocol import FrameError, encode, read_frame_blocking, write_frame_blocking

__all__ = ["main"]

CACHE_SIZE = 256
DEFAULT_MEMORY_MB = 512
DEFAULT_LIMITS = {"cpu_seconds": 20.0, "max_log_lines": 1000, "max_log_bytes": 65536}
SERIALIZE_ERROR = "Error when JSON serializing the result of the extension point"
# A result this big could not travel in one frame (the protocol caps frames at 64 MiB).
MAX_RESULT_BYTES = 32 * 1024 * 1024
MAX_ERROR_TEXT = 64 * 1024  # message and stack, each
CALLBACK_NAMES = ("cb", "callback")
_MISSING = object()


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


def _lower(limit: int, value: int) -> None:
    """Set soft and hard limit to `value` (never above an existing hard limit)."""
    _, hard = resource.getrlimit(limit)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(limit, (value, value))


# orjson reserves address space many times the size of its output (hundreds of bytes per
# list element) and crashes (SIGSEGV) when RLIMIT_AS refuses the reservation. The hard
# limit leaves this much room above the soft one, and _serialize lifts the soft limit to
# the hard one while orjson runs (no hook code runs meanwhile). The room is address space,
# not memory: what orjson touches is about the size of its output, which _serialize bounds.
SERIALIZE_HEADROOM = 8 * 1024 * 1024 * 1024


# RLIMIT_AS as _limit_address_space set it. Only this process changes it, so the room
# below need not read it back on every job (one syscall fewer per use).
_address_space: tuple[int, int] | None = None


def _limit_address_space(memory_mb: int) -> None:
    """Soft RLIMIT_AS = the worker's memory; hard = that plus SERIALIZE_HEADROOM."""
    global _address_space
    soft = memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = soft + SERIALIZE_HEADROOM
    if hard != resource.RLIM_INFINITY:
        soft, wanted = min(soft, hard), min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, wanted))
    _address_space = (soft, wanted)


class _SerializationRoom:
    """`with _SerializationRoom():` soft RLIMIT_AS = hard inside, restored on the way out.
    A class, not @contextmanager: half the cost, on every job."""

    __slots__ = ("_soft", "_hard")

    def __enter__(self) -> None:
        limits = _address_space or resource.getrlimit(resource.RLIMIT_AS)
        self._soft, self._hard = soft, hard = limits
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))

    def __exit__(self, *exc_info: object) -> None:
        if self._soft != self._hard:
            resource.setrlimit(resource.RLIMIT_AS, (self._soft, self._hard))


def _apply_rlimits(memory_mb: int) -> None:
    if memory_mb > 0:
        _limit_address_space(memory_mb)
    _lower(resource.RLIMIT_FSIZE, 0)  # no file writes
    _lower(resource.RLIMIT_CORE, 0)
    if os.getuid() != 0:  # root ignores RLIMIT_NPROC: set again after _drop_privileges
        _lower(resource.RLIMIT_NPROC, 0)  # no fork (nor threads)
    # With RLIMIT_FSIZE 0 a write to a regular file raises SIGXFSZ, whose default action
    # kills us: if stderr is a log file, Python's own warnings would. Fail the write instead.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Ctrl-C in the server's terminal reaches the whole process group; the pool decides
    # when workers stop (it kills them, or closes stdin and we exit at EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A sandboxed worker is PID 1 of its namespace, and the kernel does not apply a default
    # action to PID 1: without a handler, RLIMIT_CPU's SIGXCPU would be ignored. (A loop in
    # C that never returns to the interpreter is stopped by the pool's wall-clock deadline.)
    signal.signal(signal.SIGXCPU, _on_cpu_limit)


def _on_cpu_limit(signum: int, frame: Any) -> None:
    """Die of SIGXCPU as a process without the handler would; where that is not possible
    (PID 1 of a namespace, or signals refused by seccomp), exit with the shell's status."""
    signal.signal(signal.SIGXCPU, signal.SIG_DFL)
    with contextlib.suppress(OSError):
        os.kill(os.getpid(), signal.SIGXCPU)
    os._exit(128 + signal.SIGXCPU)


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
    import _strptime  # noqa: F401  (datetime.strptime, time.strptime)

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


# (soft, hard) RLIMIT_CPU as _set_cpu_budget last set it: only this process changes it, so
# consecutive invocations (whose whole-second budget is usually the same) skip two syscalls.
_cpu_limit: tuple[int, int] | None = None


def _set_cpu_budget(seconds: float | None) -> None:
    """Soft RLIMIT_CPU = CPU used so far + this invocation's budget: a runaway hook gets
    SIGXCPU (default action: terminate) and the pool replaces the worker."""
    global _cpu_limit
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1] if _cpu_limit is None else _cpu_limit[1]
    if seconds is None:
        soft = hard
    else:
        # CPU time of the process, the clock RLIMIT_CPU counts: getrusage's ru_utime +
        # ru_stime add up to the same, at twice the cost. (Imported by name, not looked up
        # on `time`, a module hooks can import.)
        used = process_time()
        soft = max(math.ceil(used + seconds), math.floor(used) + 1)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
    if _cpu_limit != (soft, hard):
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
        _cpu_limit = (soft, hard)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


_PAGE_SIZE = resource.getpagesize()


_STATM_SIZE, _STATM_RESIDENT = 0, 1  # fields of /proc/self/statm, in pages


def _statm_bytes(statm_fd: int, field: int) -> int:
    """A field of /proc/self/statm in bytes (one pread); huge when it cannot be read."""
    try:
        return int(os.pread(statm_fd, 64, 0).split()[field]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return sys.maxsize


def _heap_grown(threshold: int, statm_fd: int) -> bool:
    """Has this process's resident memory passed `threshold`? ru_maxrss is a cheap first
    check, but Linux keeps it across fork and exec: a worker started by a server whose RSS
    was above the threshold would look grown forever (and be replaced after every job).
    So past that check, the current RSS decides."""
    return _peak_rss_bytes() > threshold and _statm_bytes(statm_fd, _STATM_RESIDENT) > threshold


# ----------------------------------------------------------------------------- errors


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "... [truncated]"


def _safe_str(value: Any) -> str:
    try:
        return value if isinstance(value, str) else str(value)
    except BaseException as exc:  # a hook-defined __str__ may raise anything
        return f"<unprintable {type(value).__name__}: {type(exc).__name__}>"


Frames = list[tuple[int, str]]  # (line, function) of the hook's own frames, outermost first


def _frames_from_tb(tb: TracebackType | None) -> Frames:
    return [
        (lineno, frame.f_code.co_name)
        for frame, lineno in traceback.walk_tb(tb)
        if frame.f_code.co_filename == HOOK_FILENAME
    ]


def _frames_from_stack(frame: FrameType | None) -> Frames:
    frames = [
        (lineno, f.f_code.co_name)
        for f, lineno in traceback.walk_stack(frame)
        if f.f_code.co_filename == HOOK_FILENAME
    ]
    return frames[::-1]


def _stack(name: str, message: str, frames: Frames, filename: str, lines: tuple[str, ...]) -> str:
    """Python-style traceback text of the hook's own frames only, under the webtask's name
    (never a server path)."""
    last = f"{name}: {message}" if message else name
    if not frames:
        return last
    summary = traceback.StackSummary.from_list(
        [
            (filename, lineno, function, lines[lineno - 1].strip() if 0 < lineno <= len(lines) else "")
            for lineno, function in frames
        ]
    )
    return "Traceback (most recent call last):\n" + "".join(summary.format()) + last


@dataclass
class _Failure:
    name: str
    message: str
    frames: Frames
    cause: str = ""  # appended to the stack (e.g. why serialisation failed)

    def envelope(self, filename: str, lines: tuple[str, ...]) -> dict[str, Any]:
        message = _clip(self.message)
        stack = _stack(self.name, message, self.frames, filename, lines)
        if self.cause:
            stack += f"\nCaused by: {self.cause}"
        return {"name": self.name, "message": message, "stack": _clip(stack)}


def _failure_from_exception(exc: BaseException) -> _Failure:
    return _Failure(type(exc).__name__, _safe_str(exc), _frames_from_tb(exc.__traceback__))


def _failure_from_cb_error(err: Any, call_site: Frames) -> _Failure:
    """cb(err): an exception -> its class name; a string -> "Error"; a mapping with a
    message (a JavaScript-style error object) -> its name or "Error"."""
    if isinstance(err, BaseException):
        frames = _frames_from_tb(err.__traceback__) or call_site
        return _Failure(type(err).__name__, _safe_str(err), frames)
    if isinstance(err, type) and issubclass(err, BaseException):
        return _Failure(err.__name__, "", call_site)
    if isinstance(err, Mapping) and "message" in err:
        return _Failure(_safe_str(err.get("name") or "Error"), _safe_str(err["message"]), call_site)
    return _Failure("Error", _safe_str(err), call_site)


def _compile_error(description: str) -> dict[str, Any]:
    return {"name": "CompileError", "message": COMPILE_ERROR_MESSAGE, "error_description": _clip(description)}


# ----------------------------------------------------------------------------- invocation


class _Callback:
    """The `cb` a callback-style hook receives: the first call wins."""

    __slots__ = ("_sink", "_called", "_error", "_data", "_call_site")

    def __init__(self, sink: LogSink) -> None:
        self._sink = sink
        self._called = False
        self._error: Any = None
        self._data: Any = None
        self._call_site: Frames = []

    def __call__(self, err: Any = None, data: Any = None, *_rest: Any) -> None:
        if self._called:
            self._sink.emit("warn", "[wtpy] the callback was called more than once; later calls are ignored")
            return
        self._called = True
        self._error, self._data = err, data
        if err is not None:
            self._call_site = _frames_from_stack(sys._getframe(1))


# How to call a hook, decided from its signature: (mode, names, count, callback slot).
#   mode "names": keyword arguments `names`; "all": every value of `order` positionally;
#   "kwargs": every name of `order` as a keyword; "prefix": the first `count` values;
#   "opaque": no introspectable signature, every value positionally and no callback.
#   callback slot: None, a keyword name (str), or a positional-only index (int).
_Plan = tuple[str, tuple[str, ...], int, "str | int | None"]
_OPAQUE: _Plan = ("opaque", (), 0, None)
# Plans of plain functions by (code object, order): a hook module runs in fresh globals on
# every invocation, so its function object is new each time but its code object is not,
# and for a plain function the code alone fixes parameter names and kinds.
_PLANS: dict[tuple[Any, tuple[str, ...]], _Plan] = {}
_MAX_PLANS = 1024


def _plan(fn: Callable[..., Any], order: list[str]) -> _Plan:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # no introspectable signature: pass everything
        return _OPAQUE
    kinds = inspect.Parameter
    positional = [p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    cb = positional[-1] if positional and positional[-1].name in CALLBACK_NAMES else None
    named = [p for p in params if p is not cb and p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)]
    slot: str | int | None = None
    if cb is not None:
        # `def hook(a, b, cb, /)`: pad up to its slot
        slot = positional.index(cb) if cb.kind == kinds.POSITIONAL_ONLY else cb.name
    if named and all(p.name in order and p.kind != kinds.POSITIONAL_ONLY for p in named):
        return "names", tuple(p.name for p in named), 0, slot
    if any(p.kind == kinds.VAR_POSITIONAL for p in params):
        return "all", (), 0, slot
    if not named and any(p.kind == kinds.VAR_KEYWORD for p in params):  # hook(**kwargs)
        return "kwargs", (), 0, slot
    return "prefix", (), len(positional) - (cb is not None), slot


def _cached_plan(fn: Callable[..., Any], order: list[str]) -> _Plan:
    # Only plain functions without attributes: `__wrapped__` / `__signature__` (which
    # inspect.signature follows) would live in the function's __dict__.
    if type(fn) is not FunctionType or fn.__dict__:
        return _plan(fn, order)
    key = (fn.__code__, tuple(order))
    plan = _PLANS.get(key)
    if plan is None:
        plan = _plan(fn, order)
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _bind(
    fn: Callable[..., Any], args: Mapping[str, Any], order: list[str], callback: _Callback
) -> tuple[list[Any], dict[str, Any], bool]:
    """(positional, keyword, callback style?) for calling the hook.

    By name when every non-callback parameter is one of `order` (so the 5-parameter
    password-exchange form works), else positionally in `order`, as many as it takes."""
    mode, names, count, slot = _cached_plan(fn, order)
    pos: list[Any]
    kw: dict[str, Any]
    if mode == "names":
        pos, kw = [], {name: args.get(name) for name in names}
    elif mode == "kwargs":
        pos, kw = [], {name: args.get(name) for name in order}
    elif mode == "prefix":
        pos, kw = [args.get(name) for name in order[:count]], {}
    else:  # "all", "opaque"
        pos, kw = [args.get(name) for name in order], {}
    if slot is None:
        return pos, kw, False
    if isinstance(slot, int):
        pos = (pos + [None] * slot)[:slot] + [callback]
    else:
        kw[slot] = callback
    return pos, kw, True


_MAX_WALK_DEPTH = 256  # orjson refuses deeper nesting itself


def _json_surely_longer(value: Any, limit: int) -> bool:
    """True when the JSON text of `value` is certainly longer than `limit` bytes.

    A lower bound (a str counts its length plus quotes, an int its digits, other leaves one
    byte, containers their brackets and separators), computed without running hook code
    (dict.items, not a subclass's `items`), so that hopeless results never reach orjson."""
    total = 0
    stack: list[Any] = [iter((value,))]
    while stack:
        for item in stack[-1]:
            child: Any = None
            if isinstance(item, str):
                total += len(item) + 2
            elif isinstance(item, dict):
                total += 1 + len(item)
                child = itertools.chain.from_iterable(dict.items(item))
            elif isinstance(item, list | tuple):
                total += 1 + len(item)
                child = iter(item)
            elif isinstance(item, int) and not isinstance(item, bool):
                total += item.bit_length() * 3 // 10 + 1
            else:
                total += 1
            if total > limit:
                return True
            if child is not None and len(stack) < _MAX_WALK_DEPTH:
                stack.append(child)
                break  # walk the container, then come back to this level
        else:
            stack.pop()
    return False


def _serialize(value: Any) -> bytes | _Failure:
    if _json_surely_longer(value, MAX_RESULT_BYTES):
        return _Failure("Error", SERIALIZE_ERROR, [], cause=f"the result exceeds {MAX_RESULT_BYTES} bytes")
    try:
        with _SerializationRoom():
            payload = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as exc:
        # The message is fixed by the wire contract; the stack says why.
        return _Failure("Error", SERIALIZE_ERROR, [], cause=f"TypeError: {exc}")
    if len(payload) > MAX_RESULT_BYTES:
        return _Failure("Error", SERIALIZE_ERROR, [], cause=f"the result exceeds {MAX_RESULT_BYTES} bytes")
    return payload


# A NamedTuple: immutable, and built 3 times faster than a frozen dataclass.
class _Job(NamedTuple):
    id: Any
    key: str
    code: str | None
    filename: str
    args: dict[str, Any]
    order: list[str]
    cpu_seconds: float | None
    max_log_lines: int
    max_log_bytes: int

    @classmethod
    def parse(cls, frame: Mapping[str, Any]) -> _Job:
        get = frame.get
        key, code, filename = get("key"), get("code"), get("filename")
        args, order, limits = get("args") or {}, get("order") or [], get("limits")
        limits = {**DEFAULT_LIMITS, **limits} if limits else DEFAULT_LIMITS
        if not isinstance(key, str) or not (code is None or isinstance(code, str)):
            raise ValueError("a run frame needs a string key and code that is a string or null")
        if (
            not isinstance(args, dict)
            or not isinstance(order, list)
            or not all(map(isinstance, order, itertools.repeat(str)))  # a C loop, no generator
        ):
            raise ValueError("a run frame needs args as an object and order as a list of names")
        cpu = limits["cpu_seconds"]
        return cls(
            get("id"),
            key,
            code,
            filename if isinstance(filename, str) else "<webtask>",
            args,
            list(order),
            None if cpu is None else float(cpu),
            int(limits["max_log_lines"]),
            int(limits["max_log_bytes"]),
        )


# The running invocation's sink when its lines go out live: the SIGALRM handler flushes it.
_live_sink: LogSink | None = None


def _arm_live_flush() -> None:
    signal.setitimer(signal.ITIMER_REAL, LIVE_LOG_INTERVAL)


def _on_alarm(signum: int, frame: Any) -> None:
    """Send the lines a hook logged LIVE_LOG_INTERVAL ago, even if it logs nothing more."""
    sink = _live_sink
    if sink is not None:
        sink.flush()


def _invoke(
    compiled: CompiledHook, job: _Job, live: Callable[[list[dict[str, Any]]], None] | None = None
) -> tuple[dict[str, Any], bool]:
    """Run the hook once in fresh globals: (reply without id, saw MemoryError)."""
    global _live_sink
    if live is None:
        sink = LogSink(job.max_log_lines, job.max_log_bytes)
        return _invoke_with(compiled, job, sink)
    sink = _live_sink = LogSink(job.max_log_lines, job.max_log_bytes, live, _arm_live_flush)
    try:
        return _invoke_with(compiled, job, sink)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)  # no flush once the answer is being made
        _live_sink = None


def _invoke_with(compiled: CompiledHook, job: _Job, sink: LogSink) -> tuple[dict[str, Any], bool]:
    # (The `random` module's process-wide state is reseeded by the import guard, in the
    # invocations that can reach it: see make_globals.)
    namespace = make_globals(sink)
    callback = _Callback(sink)
    callback_style = False
    failure: _Failure | None = None
    value: Any = None
    payload: bytes | None = None
    memory_error = False
    try:
        try:
            exec(compiled.code, namespace)
            fn = resolve_hook(namespace, compiled)
            if isinstance(fn, CompileFailure):
                return {"ok": False, "error": _compile_error(fn.error_description), "logs": sink.entries}, False
            positional, keyword, callback_style = _bind(fn, job.args, job.order, callback)
            value = fn(*positional, **keyword)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt... are the hook's errors too
            memory_error = isinstance(exc, MemoryError)
            if callback._called:
                sink.emit("warn", f"[wtpy] the hook raised {type(exc).__name__} after calling its "
                          "callback; the callback's answer stands")  # fmt: skip
            else:
                failure = _failure_from_exception(exc)
        if callback_style and callback._called:
            if callback._error is not None:
                failure = _failure_from_cb_error(callback._error, callback._call_site)
            else:
                value = callback._data
        if failure is None and value is not None:
            serialized = _serialize(value)
            if isinstance(serialized, _Failure):
                failure = serialized
            else:
                payload = serialized
    except (MemoryError, RecursionError) as exc:  # while building the answer
        memory_error = memory_error or isinstance(exc, MemoryError)
        failure = _Failure(type(exc).__name__, _safe_str(exc), [])
    finally:
        # Pending `finally` blocks first, while their globals (`log`...) still exist.
        if compiled.has_generators and not _finalize_leftovers():
            memory_error = True  # not clean: ask to be replaced (the flag means "recycle")
        # Hook functions and the globals dict reference each other: break the cycle now
        # rather than leave the hook's data for the garbage collector.
        namespace.clear()
        # Module caches (re, strptime, codecs, ABCs) keep nothing of this invocation.
        reset_module_state()
    if failure is not None:
        error = failure.envelope(job.filename, compiled.lines)
        return {"ok": False, "error": error, "logs": sink.entries}, memory_error
    reply: dict[str, Any] = {"ok": True, "logs": sink.entries}
    if payload is not None:
        reply["result"] = orjson.Fragment(payload)
    return reply, memory_error


_FINALIZE_ROUNDS = 8


def _finalize_leftovers() -> bool:
    """Run whatever hook code is still pending now, inside this invocation's budget.

    The only hook code that can run after the hook returned is a suspended generator's
    `finally`/`with` exit, run when the generator is finalized (RestrictedPython refuses
    `__del__`). Left to the garbage collector, or parked in a stdlib cache (a str subclass
    instance used as a regex pattern keeps its attributes alive in `re`'s cache), it
    would run in the middle of a later invocation of another webtask: a hook could loop
    there and get another tenant's invocation killed. So: collect this invocation's
    garbage, then close the hook's suspended generators that are still alive, until none
    is left (a `finally` may start new ones, or yield again). False when some are still
    pending after a few rounds: the worker then asks to be replaced, and they die with it.
    Cheap because the worker's start-up objects are frozen out of the collector (see main)."""
    for _ in range(_FINALIZE_ROUNDS):
        gc.collect()
        pending = [
            obj
            for obj in gc.get_objects()
            if type(obj) is GeneratorType and obj.gi_suspended and obj.gi_code.co_filename == HOOK_FILENAME
        ]
        if not pending:
            return True
        for generator in pending:
            with contextlib.suppress(BaseException):  # the hook's own error, after its answer
                generator.close()
        del pending, generator
    return False


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
    address space (see SERIALIZE_HEADROOM): done with the room."""
    with _SerializationRoom():
        try:
            frame = encode(reply)
        except TypeError:
            try:
                frame = encode(_text_safe(reply))
            except TypeError:
                message = "The hook's answer could not be encoded"
                error = {"name": "Error", "message": message, "stack": f"Error: {message}"}
                frame = encode({"id": reply.get("id"), "ok": False, "error": error, "logs": [], "recycle": False})
    out.write(frame)
    out.flush()


class Worker:
    """Protocol handler: the compiled-code cache and the dispatch of frames."""

    def __init__(
        self, memory_mb: int = DEFAULT_MEMORY_MB, live_logs: BinaryIO | None = None, statm_fd: int | None = None
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
        self._recycle_mapped = _address_space[0] // 2 if _address_space is not None else 0
        if statm_fd is not None:  # opened before the OS sandbox took /proc away
            self._statm = statm_fd
            return
        try:
            self._statm = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:  # no /proc: _heap_grown then errs on the side of replacing
            self._statm, self._recycle_mapped = -1, 0

    def handle(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        op = frame.get("op")
        if op == "ping":
            return {"id": frame.get("id"), "ok": True}
        if op != "run":
            return self._protocol_error(frame, f"unknown op {op!r}")
        try:
            job = _Job.parse(frame)
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

    def _run(self, job: _Job) -> dict[str, Any]:
        compiled = self._cache.get(job.key)
        if compiled is None and job.code is None:
            return {"need_code": True}
        _set_cpu_budget(job.cpu_seconds)
        if compiled is None:
            assert job.code is not None
            compiled = compile_hook(job.code)
            self._cache[job.key] = compiled  # failures too: same code, same answer
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(job.key)
        if isinstance(compiled, CompileFailure):
            error = _compile_error(compiled.error_description)
            return {"ok": False, "error": error, "logs": [], "recycle": False}
        reply, memory_error = _invoke(compiled, job, self._live_sender(job.id))
        recycle = (
            memory_error
            or bool(self._recycle_rss and _heap_grown(self._recycle_rss, self._statm))
            or bool(self._recycle_mapped and _statm_bytes(self._statm, _STATM_SIZE) > self._recycle_mapped)
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
            with contextlib.suppress(OSError, TypeError), _SerializationRoom():
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
    _apply_rlimits(memory_mb)
    if drop_privileges and _drop_privileges(os.environ):
        _lower(resource.RLIMIT_NPROC, 0)  # now it applies: no fork, no threads
    signal.signal(signal.SIGALRM, _on_alarm)
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

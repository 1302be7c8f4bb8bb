"""One invocation of a hook: argument binding, the callback, running it in fresh globals,
failures and their error dicts, and the result's serialisation."""

from __future__ import annotations

import contextlib
import gc
import inspect
import itertools
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType, FunctionType, GeneratorType, TracebackType
from typing import Any, NamedTuple

import orjson

from wtpy.contract import SERIALIZE_ERROR

from ._hook import COMPILE_ERROR_MESSAGE, HOOK_FILENAME, CompiledHook, CompileFailure
from ._limits import SerializationRoom
from ._logcapture import LIVE_LOG_INTERVAL, LogSink
from ._protocol import RESULT
from ._rp_compile import resolve_hook
from ._rp_guards import make_globals, reset_module_state

__all__ = ["DEFAULT_LIMITS", "Job", "compile_error", "invoke", "on_alarm"]

DEFAULT_LIMITS = {"cpu_seconds": 20.0, "max_log_lines": 1000, "max_log_bytes": 65536}
# A result this big could not travel in one frame (the protocol caps frames at 64 MiB).
MAX_RESULT_BYTES = 32 * 1024 * 1024
MAX_ERROR_TEXT = 64 * 1024  # message and stack, each
CALLBACK_NAMES = ("cb", "callback")


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
            (
                filename,
                lineno,
                function,
                lines[lineno - 1].strip() if 0 < lineno <= len(lines) else "",
            )
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


def compile_error(description: str) -> dict[str, Any]:
    return {
        "name": "CompileError",
        "message": COMPILE_ERROR_MESSAGE,
        "error_description": _clip(description),
    }


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
            self._sink.emit(
                "warn", "[wtpy] the callback was called more than once; later calls are ignored"
            )
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
    positional = [
        p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    ]
    cb = positional[-1] if positional and positional[-1].name in CALLBACK_NAMES else None
    named = [
        p for p in params if p is not cb and p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)
    ]
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
        return _Failure(
            "Error", SERIALIZE_ERROR, [], cause=f"the result exceeds {MAX_RESULT_BYTES} bytes"
        )
    try:
        with SerializationRoom():
            try:
                payload = orjson.dumps(value)
            except orjson.JSONEncodeError:
                # Keys that are not exactly str are written as text. Two can then be equal
                # (`{1: "a", "1": "b"}`): parsed and written again, the last one stays, as
                # when the server parsed every result. The server passes these bytes on as
                # they are, so they must be what writing the parsed result gives.
                payload = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
                payload = orjson.dumps(orjson.loads(payload))
    except orjson.JSONEncodeError as exc:
        # The message is fixed by the wire contract; the stack says why.
        return _Failure("Error", SERIALIZE_ERROR, [], cause=f"TypeError: {exc}")
    if len(payload) > MAX_RESULT_BYTES:
        return _Failure(
            "Error", SERIALIZE_ERROR, [], cause=f"the result exceeds {MAX_RESULT_BYTES} bytes"
        )
    return payload


# A NamedTuple: immutable, and built 3 times faster than a frozen dataclass.
class Job(NamedTuple):
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
    def parse(cls, frame: Mapping[str, Any]) -> Job:
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


def on_alarm(signum: int, frame: Any) -> None:
    """Send the lines a hook logged LIVE_LOG_INTERVAL ago, even if it logs nothing more."""
    sink = _live_sink
    if sink is not None:
        sink.flush()


def invoke(
    compiled: CompiledHook, job: Job, live: Callable[[list[dict[str, Any]]], None] | None = None
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


def _invoke_with(compiled: CompiledHook, job: Job, sink: LogSink) -> tuple[dict[str, Any], bool]:
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
                return {
                    "ok": False,
                    "error": compile_error(fn.error_description),
                    "logs": sink.entries,
                }, False
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
        reply[RESULT] = payload  # the JSON text: written as the frame's tail
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
            if type(obj) is GeneratorType
            and obj.gi_suspended
            and obj.gi_code.co_filename == HOOK_FILENAME
        ]
        if not pending:
            return True
        for generator in pending:
            with contextlib.suppress(BaseException):  # the hook's own error, after its answer
                generator.close()
        del pending, generator
    return False

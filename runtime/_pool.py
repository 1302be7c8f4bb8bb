"""A pool of pre-started sandbox worker processes that run hooks one job at a time.

Each worker is a fresh interpreter (`python -I -m wtpy.runtime._worker`, never a fork
of the server) started with a minimal environment, so nothing of the server's state
or environment (admin token, secret key, other tenants' secrets) is in its memory.
Frames travel on the worker's stdin/stdout (see `_protocol.py`); stderr is inherited.

Failure handling, in one place:

* wall-clock timeout -> the worker is SIGKILLed, outcome ``timeout``;
* the worker dies or breaks the protocol mid-job -> outcome ``killed``;
* ``recycle: true`` in a reply, or ``max_jobs_per_worker`` reached -> replaced after the
  result is returned;
* the awaiting caller is cancelled -> the reply is still read in the background (until
  the job's deadline) before the worker goes back to the idle queue.

A replaced worker is reaped and a new one spawned in the background, retrying with
backoff until it starts, so the pool never loses capacity permanently and `run()`
never raises for a worker failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._protocol import MAX_FRAME_BYTES, FrameError, decode, encode

__all__ = ["ArgumentsNotEncodable", "JobResult", "PoolClosedError", "WorkerPool", "WorkerStartError"]

logger = logging.getLogger("wtpy.pool")

DEFAULT_WORKER_ARGV: tuple[str, ...] = (sys.executable, "-I", "-m", "wtpy.runtime._worker")
MEMORY_ENV = "WTPY_WORKER_MEMORY_MB"

KILLED_ERROR: dict[str, Any] = {
    "name": "WorkerKilled",
    "message": "The hook's sandbox process was terminated "
    "(memory or CPU limit exceeded, or it crashed)",
}

_REAP_TIMEOUT = 5.0
# How late past its deadline a job may be noticed (the timeout's resolution).
DEADLINE_CHECK_SECONDS = 0.01

EventCallback = Callable[[str, dict[str, Any]], None]
LogsCallback = Callable[[list[dict[str, Any]]], None]


def _pass_on_logs(frame: dict[str, Any], job_id: int, on_logs: LogsCallback | None) -> None:
    """A "logs" frame of the running job -> on_logs (which must not break the job)."""
    if frame.get("id") != job_id:
        raise _ProtocolViolation("log lines for another job")
    lines = frame.get("logs")
    if on_logs is None or not isinstance(lines, list):
        return
    try:
        on_logs([line for line in lines if isinstance(line, dict)])
    except Exception:
        logger.exception("passing on a running hook's log lines failed")


@dataclass(slots=True)
class JobResult:
    outcome: Literal["success", "error", "timeout", "killed"]
    result: Any = None
    has_result: bool = False
    error: dict[str, Any] | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    duration_ms: float = 0.0


class ArgumentsNotEncodable(TypeError):
    """run()'s arguments cannot be framed for a worker (not JSON-able, or nested too deeply)."""


class PoolClosedError(RuntimeError):
    """run() was called on (or was waiting for a worker of) a closed pool."""


class WorkerStartError(RuntimeError):
    """start() could not bring up the initial workers."""


class _ProtocolViolation(Exception):
    """The worker sent a well-formed frame that makes no sense here."""


class _Proc(asyncio.SubprocessProtocol):
    """One worker process. Its stdout is cut into frames right in the pipe callback (no
    StreamReader, no task switch per read); its stdin is the pipe transport itself."""

    def __init__(self) -> None:
        self.transport: asyncio.SubprocessTransport | None = None
        self.stdin: asyncio.WriteTransport | None = None
        self.pid = 0
        # stdout closed, or the stream broke (frames before it stay readable); from then on
        # the worker's output is dropped unread, and alive() is False.
        self.eof = False
        self.timed_out = False  # the running job's deadline passed (set by the pool's timer)
        self._buffer = bytearray()
        self._frames: deque[tuple[int, dict[str, Any] | FrameError]] = deque()  # (size, frame)
        self._queued = 0  # payload bytes in _frames
        self._waiter: asyncio.Future[None] | None = None
        # Kept: asyncio.get_running_loop() costs a getpid() syscall on every call (3.11).
        self.loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[None] = self.loop.create_future()

    # -- protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's process transport implements the interface without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        self.pid = transport.get_pid()
        self.stdin = transport.get_pipe_transport(0)  # type: ignore[assignment]

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        if fd != 1 or self.eof:
            return
        buffer = self._buffer
        if not buffer and 4 <= len(data) <= 4 + MAX_FRAME_BYTES and len(data) == 4 + int.from_bytes(data[:4], "big"):
            # The usual case: one whole reply in one read; decoded without a copy.
            self._accept(len(data) - 4, memoryview(data)[4:])
            self._wake()
            return
        buffer += data
        while len(buffer) >= 4:
            length = int.from_bytes(buffer[:4], "big")
            if length > MAX_FRAME_BYTES:
                self._break(FrameError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}"))
                break
            end = 4 + length
            if len(buffer) < end:
                break
            payload = bytes(buffer[4:end])
            del buffer[:end]
            if not self._accept(length, payload):
                break
        self._wake()

    def _accept(self, length: int, payload: bytes | memoryview) -> bool:
        """Queue one frame; False (and the stream broken) when it cannot be accepted."""
        # The pool asks for one reply at a time: a worker that sends more than a frame's
        # worth nobody has read yet is broken (or hostile); stop buffering its output.
        self._queued += length
        if self._queued > MAX_FRAME_BYTES:
            self._break(FrameError("the worker sent frames nobody asked for"))
            return False
        try:
            self._frames.append((length, decode(payload)))
        except FrameError as exc:
            self._break(exc)
            return False
        return True

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.eof = True
            self._wake()

    def process_exited(self) -> None:
        if not self._exited.done():
            self._exited.set_result(None)

    # -- used by the pool

    @property
    def returncode(self) -> int | None:
        return None if self.transport is None else self.transport.get_returncode()

    def alive(self) -> bool:
        return self.returncode is None and not self.eof

    def write(self, data: bytes) -> None:
        assert self.stdin is not None
        self.stdin.write(data)

    def expire(self) -> None:
        """The job's deadline passed: a pending or later read() raises TimeoutError."""
        self.timed_out = True
        self._wake()

    async def read(self) -> dict[str, Any]:
        """The next frame. Safe to cancel and call again: nothing is lost."""
        frames = self._frames
        while not frames:
            if self.timed_out:
                raise TimeoutError
            if self.eof:
                raise FrameError("peer closed the stream")
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        size, item = frames.popleft()
        self._queued -= size
        if isinstance(item, FrameError):
            raise item
        return item

    async def wait(self) -> None:
        await asyncio.shield(self._exited)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _break(self, error: FrameError) -> None:
        self._frames.append((0, error))
        self.eof = True
        self._buffer.clear()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Worker:
    __slots__ = ("proc", "pid", "keys", "jobs", "max_jobs")

    def __init__(self, proc: _Proc) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.keys: set[str] = set()  # code keys this worker has been sent
        self.jobs = 0
        self.max_jobs = 0  # set by the pool

    def alive(self) -> bool:
        return self.proc.alive()

    def read(self) -> Coroutine[Any, Any, dict[str, Any]]:
        """Read one frame (cancel-safe)."""
        return self.proc.read()


def _kill(proc: _Proc) -> None:
    """SIGKILL the worker's process group (it leads its own session), not yet reaped."""
    if proc.returncode is not None or proc.transport is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.transport.kill()


async def _reap(proc: _Proc) -> None:
    """Wait for a killed worker to exit, then close our ends of its pipes."""
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), _REAP_TIMEOUT)
    finally:
        # The transport of an exited process stays open until it is closed (a
        # ResourceWarning at GC).
        proc.close()


class WorkerPool:
    """`size` worker processes, each running one job at a time; callers queue for a worker."""

    def __init__(
        self,
        size: int = 2,
        *,
        memory_mb: int = 512,
        max_jobs_per_worker: int = 10_000,
        worker_argv: Sequence[str] | None = None,
        start_timeout: float = 30.0,
        max_log_lines: int = 1000,
        max_log_bytes: int = 65536,
        on_event: EventCallback | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        if max_jobs_per_worker < 1:
            raise ValueError("max_jobs_per_worker must be at least 1")
        self.size = size
        self.memory_mb = memory_mb
        self.max_jobs_per_worker = max_jobs_per_worker
        self._argv = list(worker_argv) if worker_argv is not None else list(DEFAULT_WORKER_ARGV)
        # The whole environment of a worker: nothing is inherited from the server.
        self._env = {
            "PATH": os.defpath,
            "LANG": "C.UTF-8",
            "TZ": "UTC",
            MEMORY_ENV: str(memory_mb),
        }
        self._start_timeout = start_timeout
        self._max_log_lines = max_log_lines
        self._max_log_bytes = max_log_bytes
        self._on_event = on_event
        self._backoff_initial = 0.05
        self._backoff_max = 5.0

        self._ids = itertools.count(1)
        self._idle: deque[_Worker] = deque()
        self._waiters: deque[asyncio.Future[_Worker | None]] = deque()
        self._workers: dict[int, _Worker] = {}  # ready workers (idle or busy) by pid
        self._starting: set[_Proc] = set()
        self._dying: set[_Proc] = set()  # killed, not yet reaped
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False
        self._close_done = asyncio.Event()
        # Deadlines of the jobs in flight, checked every DEADLINE_CHECK_SECONDS while there
        # are any: cheaper than arming and cancelling a timer for every job.
        self._deadlines: dict[_Proc, float] = {}
        self._deadline_check: asyncio.TimerHandle | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the workers that are up (idle or busy); replacements appear once ready."""
        return list(self._workers)

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self) -> None:
        """Spawn `size` workers concurrently and wait until each has said it is ready."""
        if self._started or self._closed:
            raise RuntimeError("WorkerPool.start() may be called once, before close()")
        self._started = True
        results = await asyncio.gather(
            *(self._spawn_retrying(max_attempts=3) for _ in range(self.size)),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.close()
            raise WorkerStartError(f"could not start sandbox workers: {errors[0]!r}") from errors[0]
        for index, worker in enumerate(results):
            assert isinstance(worker, _Worker)
            # Workers started together and served round-robin would all reach
            # max_jobs_per_worker within a few jobs of each other and be replaced at
            # once; staggering the first generation's limits spreads that out.
            worker.max_jobs -= index * self.max_jobs_per_worker // (2 * self.size)
            self._release(worker)

    async def close(self) -> None:
        """Kill every worker (idle, busy or starting). Idempotent; every caller returns
        once the workers are gone."""
        if self._closed:
            await self._close_done.wait()
            return
        self._closed = True
        if self._deadline_check is not None:
            self._deadline_check.cancel()
            self._deadline_check = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        procs = [w.proc for w in self._workers.values()] + list(self._starting | self._dying)
        self._workers.clear()
        self._idle.clear()
        for proc in procs:
            _kill(proc)
        try:
            await asyncio.gather(*tasks, *(_reap(p) for p in procs), return_exceptions=True)
        finally:
            self._close_done.set()

    # ----------------------------------------------------------------- hot path

    async def run(
        self,
        *,
        key: str,
        code: str,
        filename: str,
        args: dict[str, Any],
        order: Sequence[str],
        timeout: float,
        cpu_seconds: float | None = None,
        on_logs: LogsCallback | None = None,
    ) -> JobResult:
        """Run one hook invocation on an idle worker (waiting for one if all are busy).

        `timeout` is wall-clock seconds from when the job is handed to a worker. `on_logs`
        gets the lines a slow hook logs while it runs (the rest come in the JobResult).
        Never raises for a worker failure: those come back as `timeout` / `killed`.
        Raises ArgumentsNotEncodable (a TypeError) when `args` cannot be framed.
        """
        worker = await self._acquire()
        job_id = next(self._ids)
        message: dict[str, Any] = {
            "id": job_id,
            "op": "run",
            "key": key,
            "code": None if key in worker.keys else code,
            "filename": filename,
            "args": args,
            "order": order,
            "limits": {
                "cpu_seconds": timeout if cpu_seconds is None else cpu_seconds,
                "max_log_lines": self._max_log_lines,
                "max_log_bytes": self._max_log_bytes,
            },
        }
        try:
            frame = encode(message)
        except TypeError as exc:  # nothing was sent
            self._release(worker)
            raise ArgumentsNotEncodable(str(exc)) from None
        except BaseException:
            self._release(worker)
            raise
        proc = worker.proc
        deadline = proc.loop.time() + timeout
        started = time.perf_counter()
        worker.keys.add(key)
        self._watch_deadline(proc, deadline)
        try:
            proc.write(frame)
            reply = await proc.read()
            if reply.get("need_code") is True and reply.get("id") == job_id:
                if message["code"] is not None:
                    raise _ProtocolViolation("need_code although code was sent")
                message["code"] = code
                proc.write(encode(message))
                reply = await proc.read()
            while reply.get("op") == "logs":  # lines of a hook still running
                _pass_on_logs(reply, job_id, on_logs)
                reply = await proc.read()
        except TimeoutError:
            duration = (time.perf_counter() - started) * 1000.0
            self._discard(worker, "timeout")
            return JobResult(
                "timeout",
                error={
                    "name": "TimeoutError",
                    "message": f"Script execution timed out after {timeout:g} seconds",
                },
                duration_ms=duration,
            )
        except asyncio.CancelledError:
            # The caller went away mid-job: finish reading this job's reply in the
            # background so the worker returns to the idle queue in a known state.
            self._background(self._drain(worker, job_id, deadline))
            raise
        except (FrameError, _ProtocolViolation, EOFError, OSError) as exc:
            duration = (time.perf_counter() - started) * 1000.0
            self._discard(worker, f"died mid-job: {exc}")
            return JobResult("killed", error=dict(KILLED_ERROR), duration_ms=duration)
        except BaseException:
            self._discard(worker, "unexpected error mid-job")  # never leak a busy worker
            raise
        finally:
            self._deadlines.pop(proc, None)
        duration = (time.perf_counter() - started) * 1000.0

        if reply.get("id") != job_id or reply.get("need_code"):
            self._discard(worker, f"protocol violation: unexpected reply {str(reply)[:200]}")
            return JobResult("killed", error=dict(KILLED_ERROR), duration_ms=duration)
        self._finish(worker, reply)
        logs = reply.get("logs") or []
        if reply.get("ok") is True:
            has_result = "result" in reply
            return JobResult(
                "success",
                result=reply["result"] if has_result else None,
                has_result=has_result,
                logs=logs,
                duration_ms=duration,
            )
        error = reply.get("error")
        if not isinstance(error, dict):
            error = {"name": "Error", "message": "The hook failed without an error description"}
        return JobResult("error", error=error, logs=logs, duration_ms=duration)

    def _watch_deadline(self, proc: _Proc, deadline: float) -> None:
        self._deadlines[proc] = deadline
        if self._deadline_check is None:
            self._deadline_check = proc.loop.call_later(DEADLINE_CHECK_SECONDS, self._check_deadlines)

    def _check_deadlines(self) -> None:
        """Expire the jobs past their deadline (their read() raises TimeoutError)."""
        self._deadline_check = None
        if not self._deadlines:
            return  # idle: the next job starts the checks again
        loop = asyncio.get_running_loop()
        now = loop.time()
        for proc, deadline in list(self._deadlines.items()):
            if now >= deadline:
                del self._deadlines[proc]
                proc.expire()
        self._deadline_check = loop.call_later(DEADLINE_CHECK_SECONDS, self._check_deadlines)

    def _finish(self, worker: _Worker, reply: dict[str, Any]) -> None:
        """Account a completed job and hand the worker back (or replace it)."""
        worker.jobs += 1
        if reply.get("recycle") is True:
            self._discard(worker, "recycle requested")
        elif worker.jobs >= worker.max_jobs:
            self._discard(worker, "max_jobs_per_worker reached")
        else:
            self._release(worker)

    async def _drain(self, worker: _Worker, job_id: int, deadline: float) -> None:
        self._watch_deadline(worker.proc, deadline)  # the job's own deadline still holds
        try:
            reply = await worker.read()
            while reply.get("op") == "logs" and reply.get("id") == job_id:  # nobody follows
                reply = await worker.read()
        except (TimeoutError, FrameError, EOFError, OSError) as exc:
            self._discard(worker, f"abandoned job did not finish cleanly: {exc!r}")
            return
        finally:
            self._deadlines.pop(worker.proc, None)
        if reply.get("id") != job_id:
            self._discard(worker, "protocol violation while draining")
        elif reply.get("need_code"):
            self._release(worker)  # the worker is waiting for the next request
        else:
            self._finish(worker, reply)

    # ----------------------------------------------------------------- idle queue

    async def _acquire(self) -> _Worker:
        while True:
            if self._closed:
                raise PoolClosedError("the worker pool is closed")
            if not self._started:
                raise RuntimeError("WorkerPool.start() has not been called")
            if self._idle:
                # Last in, first out: the worker that finished most recently has its caches
                # warm and may not be asleep yet (+20% at c=1). That a big job's grown address
                # space then meets the next caller is handled in the worker, which asks to be
                # replaced after such a job (_worker.Worker._recycle_mapped).
                worker: _Worker | None = self._idle.pop()
            else:
                waiter: asyncio.Future[_Worker | None] = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    worker = await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                        # Handed a worker in the same tick we were cancelled: pass it on.
                        self._release(waiter.result())  # type: ignore[arg-type]
                    else:
                        with contextlib.suppress(ValueError):
                            self._waiters.remove(waiter)
                    raise
            if worker is None:
                continue  # closed while waiting; raises above
            if worker.alive():
                return worker
            self._discard(worker, "found dead while idle")

    def _release(self, worker: _Worker) -> None:
        if self._closed:
            # close() has already taken (and reaps) every worker it knew about.
            _kill(worker.proc)
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    # ----------------------------------------------------------------- replacement

    def _discard(self, worker: _Worker, reason: str) -> None:
        """Kill a worker now; reap it and start its replacement in the background."""
        self._workers.pop(worker.pid, None)
        _kill(worker.proc)
        if self._closed:
            return  # close() reaps it
        self._emit("worker_exit", pid=worker.pid, reason=reason, jobs=worker.jobs)
        logger.debug("replacing sandbox worker %d: %s", worker.pid, reason)
        self._dying.add(worker.proc)
        self._background(self._replace(worker.proc))

    async def _replace(self, proc: _Proc) -> None:
        try:
            await _reap(proc)  # at most `size` worker processes exist at any time
        finally:
            self._dying.discard(proc)
        if self._closed:
            return
        worker = await self._spawn_retrying(max_attempts=None)
        if worker is not None:
            self._release(worker)

    async def _spawn_retrying(self, *, max_attempts: int | None) -> _Worker | None:
        """Spawn a worker, retrying with exponential backoff. None once the pool is closed."""
        delay = self._backoff_initial
        attempt = 0
        while not self._closed:
            attempt += 1
            try:
                return await self._spawn()
            except Exception as exc:
                if self._closed:
                    return None
                if max_attempts is not None and attempt >= max_attempts:
                    raise
                logger.warning(
                    "sandbox worker failed to start (attempt %d, retrying in %.2fs): %r",
                    attempt,
                    delay,
                    exc,
                )
                self._emit("spawn_failed", attempt=attempt, retry_in=delay, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)
        return None

    async def _spawn(self) -> _Worker:
        _, proc = await asyncio.get_running_loop().subprocess_exec(
            _Proc,
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=self._env,
            cwd="/",
            start_new_session=True,  # no terminal signals; killpg reaches anything it started
        )
        self._starting.add(proc)
        try:
            async with asyncio.timeout(self._start_timeout):
                hello = await proc.read()
            if hello.get("ready") is not True:
                raise FrameError(f"unexpected first frame from worker: {str(hello)[:200]}")
        except BaseException:
            _kill(proc)
            await _reap(proc)
            raise
        finally:
            self._starting.discard(proc)
        worker = _Worker(proc)
        worker.max_jobs = self.max_jobs_per_worker
        self._workers[worker.pid] = worker
        self._emit("worker_ready", pid=worker.pid)
        return worker

    # ----------------------------------------------------------------- plumbing

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("worker pool background task failed", exc_info=task.exception())

    def _emit(self, event: str, **info: Any) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event, info)
        except Exception:
            logger.exception("worker pool on_event callback failed")


"""A pool of sandbox worker processes that run hooks one job at a time.

Workers are forked by a zygote (`_zygote.py`: a fresh interpreter started with a minimal
environment, never a fork of the server, so nothing of the server's state or environment
is in its memory), and each enters the OS sandbox (`_oslayer.py`) before it says ready.
Frames travel on a socket per worker (see `_protocol.py`); stderr is inherited.

A worker serves one container for its whole life (as Webtask ran a container per tenant):
a trap one tenant leaves in a worker can only ever meet that tenant again. The pool keeps
`size` processes: workers bound to a container, and pristine spares not yet bound. A call
for a container takes an idle worker of its own, else a spare; else an idle worker of
another container is retired (least recently used first) and its replacement, a spare,
serves the call. Waiting calls are served first come, first served.

Failure handling, in one place:

* wall-clock timeout -> the worker is SIGKILLed, outcome ``timeout``;
* the worker dies or breaks the protocol mid-job -> outcome ``killed``;
* ``recycle: true`` in a reply, or ``max_jobs_per_worker`` reached -> replaced after the
  result is returned;
* the awaiting caller is cancelled -> the reply is still read in the background (until
  the job's deadline) before the worker goes back to the idle queue;
* a worker that dies while idle is noticed when it exits (its pidfd, or the end of its
  stream), dropped from the idle lists and replaced; a job is never sent to a worker
  whose exit has been seen.

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
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from wtpy.contract import DEFAULT_WORKER_MAX_JOBS

from ._procs import ExecLauncher, Launcher, WorkerProc, ZygoteLauncher
from ._protocol import RESULT, FrameError, encode, frame

__all__ = [
    "ArgumentsNotEncodable", "JobResult", "OsSandboxUnavailable", "PoolClosedError", "WorkerPool",
    "WorkerStartError",
]  # fmt: skip

logger = logging.getLogger("wtpy.pool")

MEMORY_ENV = "WTPY_WORKER_MEMORY_MB"

KILLED_ERROR: dict[str, Any] = {
    "name": "WorkerKilled",
    "message": "The hook's sandbox process was terminated "
    "(memory or CPU limit exceeded, or it crashed)",
}

UNSAFE_ENV = "WTPY_UNSAFE_NO_OS_SANDBOX"
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
    # The hook's result as JSON text, as the worker's orjson wrote it (the pool never parses
    # it: callers splice it into their answer); None when the hook returned nothing.
    result_json: bytes | None = None
    error: dict[str, Any] | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    duration_ms: float = 0.0

    @property
    def has_result(self) -> bool:
        return self.result_json is not None

    @property
    def result(self) -> Any:
        """The result's value (parsed on every read); None when there is none."""
        return None if self.result_json is None else orjson.loads(self.result_json)


class ArgumentsNotEncodable(TypeError):
    """run()'s arguments cannot be framed for a worker (not JSON-able, or nested too deeply)."""


class PoolClosedError(RuntimeError):
    """run() was called on (or was waiting for a worker of) a closed pool."""


class WorkerStartError(RuntimeError):
    """start() could not bring up the initial workers."""


class OsSandboxUnavailable(WorkerStartError):
    """The OS layer of the sandbox cannot be set up on this machine (start() refuses)."""


class _ProtocolViolation(Exception):
    """The worker sent a well-formed frame that makes no sense here."""


_NO_CODE = b'"code":null}'


def _with_code(request: bytes, code: str) -> bytes:
    """The run frame `request` (sent with code null) again, with `code`: its encoded
    arguments reused as they are. `code` is the frame's last field, so this is a splice."""
    payload = memoryview(request)[4:]
    assert payload[-len(_NO_CODE) :] == _NO_CODE
    return frame(b"".join((payload[: -len(b"null}")], orjson.dumps(code), b"}")))


class _Worker:
    __slots__ = ("proc", "pid", "keys", "jobs", "max_jobs", "container", "idle")

    def __init__(self, proc: WorkerProc) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.keys: set[str] = set()  # code keys this worker has been sent
        self.jobs = 0
        self.max_jobs = 0  # set by the pool
        self.container: str | None = None  # bound on its first job, for life
        self.idle = False  # in the pool's idle lists (bound or spare)

    def alive(self) -> bool:
        return self.proc.alive()

    def read(self) -> Coroutine[Any, Any, dict[str, Any]]:
        """Read one frame (cancel-safe)."""
        return self.proc.read()


class WorkerPool:
    """`size` worker processes, each running one job at a time and serving one container
    for life; callers queue for a worker."""

    def __init__(
        self,
        size: int = 2,
        *,
        memory_mb: int = 512,
        max_jobs_per_worker: int = DEFAULT_WORKER_MAX_JOBS,
        worker_argv: Sequence[str] | None = None,
        zygote_argv: Sequence[str] | None = None,
        os_sandbox: bool = True,
        uid_base: int | None = None,
        start_timeout: float = 30.0,
        max_log_lines: int = 1000,
        max_log_bytes: int = 65536,
        on_event: EventCallback | None = None,
    ) -> None:
        """`worker_argv` starts every worker as its own process on pipes, with no OS sandbox
        (the pool tests' fake worker); by default the zygote forks them (`zygote_argv`
        replaces its command, for tests), inside the OS sandbox unless `os_sandbox` is off."""
        if size < 1:
            raise ValueError("size must be at least 1")
        if max_jobs_per_worker < 1:
            raise ValueError("max_jobs_per_worker must be at least 1")
        self.size = size
        self.memory_mb = memory_mb
        self.max_jobs_per_worker = max_jobs_per_worker
        # The whole environment of a worker: nothing is inherited from the server.
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "TZ": "UTC", MEMORY_ENV: str(memory_mb)}
        self._launcher: Launcher = (
            ExecLauncher(worker_argv, env)
            if worker_argv is not None
            else ZygoteLauncher(
                env,
                os_sandbox=os_sandbox,
                argv=zygote_argv,
                uid_base=uid_base,
                start_timeout=start_timeout,
            )
        )
        self.os_sandbox = self._launcher.os_sandbox
        self._start_timeout = start_timeout
        self._max_log_lines = max_log_lines
        self._max_log_bytes = max_log_bytes
        self._on_event = on_event
        self._backoff_initial = 0.05
        self._backoff_max = 5.0

        self._ids = itertools.count(1)
        # Idle workers bound to a container (last in, first out), their least recently used
        # order across containers (which one to retire), and pristine spares.
        self._idle: dict[str, list[_Worker]] = {}
        self._idle_lru: OrderedDict[_Worker, None] = OrderedDict()
        self._spares: list[_Worker] = []
        self._waiters: deque[tuple[str, asyncio.Future[_Worker | None]]] = deque()
        self._workers: dict[int, _Worker] = {}  # ready workers (idle or busy) by pid
        self._starting: set[WorkerProc] = set()
        self._dying: set[WorkerProc] = set()  # killed, not yet reaped
        self._replacing = 0  # replacements on their way (each one becomes a spare)
        # Worker slots (a distinct host uid each, under the OS sandbox): freed on exit.
        self._free_slots = list(range(2 * size + 2))[::-1]
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False
        self._close_done = asyncio.Event()
        # Deadlines of the jobs in flight, checked every DEADLINE_CHECK_SECONDS while there
        # are any: cheaper than arming and cancelling a timer for every job.
        self._deadlines: dict[WorkerProc, float] = {}
        self._deadline_check: asyncio.TimerHandle | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the workers that are up (idle or busy); replacements appear once ready."""
        return list(self._workers)

    @property
    def closed(self) -> bool:
        return self._closed

    def bound_containers(self) -> dict[int, str | None]:
        """pid -> the container each ready worker serves (None: a spare not yet bound)."""
        return {pid: worker.container for pid, worker in self._workers.items()}

    async def start(self) -> None:
        """Start the launcher and `size` workers; refuse (OsSandboxUnavailable) when the OS
        sandbox was asked for and cannot be set up."""
        if self._started or self._closed:
            raise RuntimeError("WorkerPool.start() may be called once, before close()")
        self._started = True
        try:
            problem = await self._launcher.start()
        except BaseException as exc:
            await self.close()
            raise WorkerStartError(f"could not start the sandbox zygote: {exc!r}") from exc
        if problem is not None and self.os_sandbox:
            await self.close()
            raise OsSandboxUnavailable(
                f"the OS sandbox cannot be set up on this machine: {problem}. wtpy refuses to run "
                f"hooks without it; for development only, set {UNSAFE_ENV}=1 (or pass "
                "--unsafe-no-os-sandbox to wtpy serve) to run them under RestrictedPython and rlimits alone"
            )
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
        """Kill every worker (idle, busy or starting) and the zygote. Idempotent; every
        caller returns once the workers are gone."""
        if self._closed:
            await self._close_done.wait()
            return
        self._closed = True
        if self._deadline_check is not None:
            self._deadline_check.cancel()
            self._deadline_check = None
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        procs = [w.proc for w in self._workers.values()] + list(self._starting | self._dying)
        self._workers.clear()
        self._idle.clear()
        self._idle_lru.clear()
        self._spares.clear()
        for proc in procs:
            proc.on_dead = None
            proc.kill()
        try:
            await asyncio.gather(*tasks, *(p.reap() for p in procs), return_exceptions=True)
            await self._launcher.close()
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
        container: str = "",
    ) -> JobResult:
        """Run one hook invocation on an idle worker of `container` (waiting for one if
        none is free).

        `timeout` is wall-clock seconds from when the job is handed to a worker. `on_logs`
        gets the lines a slow hook logs while it runs (the rest come in the JobResult).
        Never raises for a worker failure: those come back as `timeout` / `killed`.
        Raises ArgumentsNotEncodable (a TypeError) when `args` cannot be framed.
        """
        worker = await self._acquire(container)
        job_id = next(self._ids)
        message: dict[str, Any] = {
            "id": job_id,
            "op": "run",
            "key": key,
            "filename": filename,
            "args": args,
            "order": order,
            "limits": {
                "cpu_seconds": timeout if cpu_seconds is None else cpu_seconds,
                "max_log_lines": self._max_log_lines,
                "max_log_bytes": self._max_log_bytes,
            },
            "code": None if key in worker.keys else code,  # last: see _with_code
        }
        try:
            request = encode(message)
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
            proc.write(request)
            reply = await proc.read()
            if reply.get("need_code") is True and reply.get("id") == job_id:
                if message["code"] is not None:
                    raise _ProtocolViolation("need_code although code was sent")
                proc.write(_with_code(request, code))
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
            # The frame's tail, as bytes (see _protocol): passed on as the worker wrote it.
            return JobResult(
                "success", result_json=reply.get(RESULT), logs=logs, duration_ms=duration
            )
        error = reply.get("error")
        if not isinstance(error, dict):
            error = {"name": "Error", "message": "The hook failed without an error description"}
        return JobResult("error", error=error, logs=logs, duration_ms=duration)

    def _watch_deadline(self, proc: WorkerProc, deadline: float) -> None:
        self._deadlines[proc] = deadline
        if self._deadline_check is None:
            self._deadline_check = proc.loop.call_later(
                DEADLINE_CHECK_SECONDS, self._check_deadlines
            )

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

    # ----------------------------------------------------------------- idle lists

    def _take_idle(self, container: str, *, spare: bool = True) -> _Worker | None:
        """An idle worker for `container`: its own (last in, first out: caches warm), else
        (if `spare`) a spare, which is bound to it now."""
        own = self._idle.get(container)
        if own:
            worker = own.pop()
            if not own:
                del self._idle[container]
            del self._idle_lru[worker]
        elif spare and self._spares:
            worker = self._spares.pop()
            worker.container = container
        else:
            return None
        worker.idle = False
        return worker

    def _park(self, worker: _Worker) -> None:
        worker.idle = True
        if worker.container is None:
            self._spares.append(worker)
        else:
            self._idle.setdefault(worker.container, []).append(worker)
            self._idle_lru[worker] = None

    def _unpark(self, worker: _Worker) -> None:
        """Take an idle worker out of the idle lists (it died, or is being retired)."""
        if not worker.idle:
            return
        worker.idle = False
        if worker.container is None:
            with contextlib.suppress(ValueError):
                self._spares.remove(worker)
            return
        self._idle_lru.pop(worker, None)
        own = self._idle.get(worker.container)
        if own is not None:
            with contextlib.suppress(ValueError):
                own.remove(worker)
            if not own:
                del self._idle[worker.container]

    async def _acquire(self, container: str) -> _Worker:
        while True:
            if self._closed:
                raise PoolClosedError("the worker pool is closed")
            if not self._started:
                raise RuntimeError("WorkerPool.start() has not been called")
            # Its own idle worker serves a call at once; a spare goes to the oldest waiter.
            worker = self._take_idle(container, spare=not self._waiters)
            if worker is None:
                waiter: asyncio.Future[_Worker | None] = asyncio.get_running_loop().create_future()
                self._waiters.append((container, waiter))
                self._make_room()
                try:
                    worker = await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                        # Handed a worker in the same tick we were cancelled: pass it on.
                        self._release(waiter.result())  # type: ignore[arg-type]
                    else:
                        with contextlib.suppress(ValueError):
                            self._waiters.remove((container, waiter))
                    raise
            if worker is None:
                continue  # closed while waiting; raises above
            if worker.alive():
                return worker
            self._discard(worker, "found dead while idle")

    def _uncovered(self) -> int:
        """Waiters that no replacement on its way will serve."""
        return sum(1 for _, waiter in self._waiters if not waiter.done()) - self._replacing

    def _make_room(self) -> None:
        """Retire idle workers of other containers (least recently used first) while
        waiters outnumber the replacements on their way."""
        self._serve_waiters()
        while self._idle_lru and self._uncovered() > 0:
            victim = next(iter(self._idle_lru))
            self._discard(victim, "retired to make room for another container")

    def _serve_waiters(self) -> None:
        """Hand idle workers to the waiters they can serve, oldest waiter first."""
        waiters = self._waiters
        while waiters and (waiters[0][1].done()):
            waiters.popleft()
        if not waiters:
            return
        for container, waiter in list(waiters):
            if waiter.done():
                continue
            worker = self._take_idle(container)
            if worker is None:
                continue
            waiters.remove((container, waiter))
            waiter.set_result(worker)

    def _release(self, worker: _Worker) -> None:
        """A worker is free (a job finished, or it just started): to the oldest waiter it
        can serve, else to the idle lists; then make room for the waiters left."""
        if self._closed:
            # close() has already taken (and reaps) every worker it knew about.
            worker.proc.kill()
            return
        if not worker.alive():
            self._discard(worker, "died")
            return
        waiters = self._waiters
        while waiters and waiters[0][1].done():
            waiters.popleft()
        if waiters:
            container, waiter = waiters[0]
            if worker.container is None or worker.container == container:
                waiters.popleft()
                worker.container = container
                waiter.set_result(worker)
                return
            # The oldest waiter needs another container. Serve a younger waiter of this
            # worker's container only if replacements already cover every waiter before it.
            ahead = 0
            for index, (other, pending) in enumerate(waiters):
                if pending.done():
                    continue
                if other == worker.container:
                    if ahead <= self._replacing:
                        del waiters[index]
                        pending.set_result(worker)
                        return
                    break
                ahead += 1
            if self._uncovered() > 0:
                self._discard(worker, "retired to make room for another container")
                return
        self._park(worker)
        if waiters:
            self._make_room()

    # ----------------------------------------------------------------- replacement

    def _worker_died(self, worker: _Worker) -> None:
        """The process exited or its stream ended. Idle: replace it now. Busy: the job's
        read() sees it and run() replaces it."""
        if worker.idle and not self._closed:
            self._unpark(worker)
            self._discard(worker, "died while idle")

    def _discard(self, worker: _Worker, reason: str) -> None:
        """Kill a worker now; reap it and start its replacement in the background."""
        if self._workers.pop(worker.pid, None) is None:
            return  # already discarded
        self._unpark(worker)
        worker.proc.on_dead = None
        worker.proc.kill()
        if self._closed:
            return  # close() reaps it
        self._emit(
            "worker_exit",
            pid=worker.pid,
            reason=reason,
            jobs=worker.jobs,
            container=worker.container,
        )
        logger.debug("replacing sandbox worker %d: %s", worker.pid, reason)
        self._dying.add(worker.proc)
        self._replacing += 1
        self._background(self._replace(worker.proc))

    async def _replace(self, proc: WorkerProc) -> None:
        try:
            try:
                await proc.reap()  # at most `size` worker processes exist at any time
            finally:
                self._dying.discard(proc)
                self._free_slot(proc)
            if self._closed:
                return
            worker = await self._spawn_retrying(max_attempts=None)
        finally:
            self._replacing -= 1
        if worker is not None:
            self._release(worker)

    def _free_slot(self, proc: WorkerProc) -> None:
        """A slot is reused only once its process has exited (one that survived SIGKILL
        for _REAP_TIMEOUT keeps its slot, and its uid, for good)."""
        if proc.slot >= 0 and proc.exited:
            self._free_slots.append(proc.slot)
            proc.slot = -1

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
        if not self._free_slots:
            raise WorkerStartError("no free worker slot (workers killed but not yet exited)")
        slot = self._free_slots.pop()
        try:
            proc = await self._launcher.spawn(slot)
        except BaseException:
            self._free_slots.append(slot)
            raise
        self._starting.add(proc)
        try:
            async with asyncio.timeout(self._start_timeout):
                hello = await proc.read()
            if hello.get("ready") is not True:
                raise FrameError(f"unexpected first frame from worker: {str(hello)[:200]}")
        except BaseException:
            proc.kill()
            await proc.reap()
            self._free_slot(proc)
            raise
        finally:
            self._starting.discard(proc)
        worker = _Worker(proc)
        worker.max_jobs = self.max_jobs_per_worker
        self._workers[worker.pid] = worker
        proc.on_dead = lambda: self._worker_died(worker)
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

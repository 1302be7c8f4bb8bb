"""Worker process handles and the two ways to get one (launchers).

* `ZygoteLauncher` (what the server uses): one zygote process (`_zygote.py`) forks every
  worker; a worker talks on a socketpair, and the pool holds a pidfd of it (kill without a
  pid-reuse race, and its exit is seen at once: the pidfd turns readable).
* `ExecLauncher`: one fresh interpreter per worker on stdin/stdout pipes (`argv`). Used by
  the pool tests' fake worker; it has no OS sandbox.

Both hand out a `WorkerProc`: frames are cut right in the transport's data callback (no
StreamReader, no task switch per read), and `on_dead` fires once when the process exits or
its stream ends, whether or not a job is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ._protocol import MAX_FRAME_BYTES, FrameError, decode

__all__ = ["ExecLauncher", "Launcher", "WorkerProc", "ZygoteLauncher", "ZygoteError"]

_REAP_TIMEOUT = 5.0


class WorkerProc:
    """One worker process: frame reading (transport-agnostic) plus life and death."""

    def __init__(self) -> None:
        self.pid = 0
        self.slot = -1
        # stdout closed, or the stream broke (frames before it stay readable); from then on
        # the worker's output is dropped unread, and alive() is False.
        self.eof = False
        self.exited = False
        self.timed_out = False  # the running job's deadline passed (set by the pool's timer)
        self.on_dead: Callable[[], None] | None = None
        self._buffer = bytearray()
        self._frames: deque[tuple[int, dict[str, Any] | FrameError]] = deque()  # (size, frame)
        self._queued = 0  # payload bytes in _frames
        self._waiter: asyncio.Future[None] | None = None
        # Kept: asyncio.get_running_loop() costs a getpid() syscall on every call (3.11).
        self.loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[None] = self.loop.create_future()

    # -- transport callbacks (names of SubprocessProtocol; the socket protocol maps onto them)

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        if fd != 1 or self.eof:
            return
        buffer = self._buffer
        if (
            not buffer
            and 4 <= len(data) <= 4 + MAX_FRAME_BYTES
            and len(data) == 4 + int.from_bytes(data[:4], "big")
        ):
            # The usual case: one whole reply in one read; decoded without a copy.
            self._accept(len(data) - 4, data, 4)
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

    def _accept(self, length: int, payload: bytes | bytearray, start: int = 0) -> bool:
        """Queue one frame; False (and the stream broken) when it cannot be accepted."""
        # The pool asks for one reply at a time: a worker that sends more than a frame's
        # worth nobody has read yet is broken (or hostile); stop buffering its output.
        self._queued += length
        if self._queued > MAX_FRAME_BYTES:
            self._break(FrameError("the worker sent frames nobody asked for"))
            return False
        try:
            self._frames.append((length, decode(payload, start)))
        except FrameError as exc:
            self._break(exc)
            return False
        return True

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.eof = True
            self._wake()
            self._dead()

    def process_exited(self) -> None:
        self.exited = True
        if not self._exited.done():
            self._exited.set_result(None)
        self._dead()

    # -- used by the pool

    def alive(self) -> bool:
        return not self.exited and not self.eof

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL the worker (idempotent; a no-op once it has exited)."""

    def close(self) -> None:
        """Release the transport (after the process has exited or been killed)."""

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

    async def reap(self) -> None:
        """Wait (boundedly) for a killed worker to exit, then release its transport."""
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wait(), _REAP_TIMEOUT)
        finally:
            self.close()

    def _break(self, error: FrameError) -> None:
        self._frames.append((0, error))
        self.eof = True
        self._buffer.clear()
        self._dead()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _dead(self) -> None:
        callback, self.on_dead = self.on_dead, None
        if callback is not None:
            callback()


# ----------------------------------------------------------------------------- exec


class ExecProc(WorkerProc, asyncio.SubprocessProtocol):
    """A worker started with its own argv; its stdin is the pipe transport itself."""

    def __init__(self) -> None:
        super().__init__()
        self.transport: asyncio.SubprocessTransport | None = None
        self.stdin: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's process transport implements the interface without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        self.pid = transport.get_pid()  # type: ignore[attr-defined]
        self.stdin = transport.get_pipe_transport(0)  # type: ignore[attr-defined]

    @property
    def returncode(self) -> int | None:
        return None if self.transport is None else self.transport.get_returncode()

    def alive(self) -> bool:
        return self.returncode is None and not self.eof

    def write(self, data: bytes) -> None:
        assert self.stdin is not None
        self.stdin.write(data)

    def kill(self) -> None:
        """SIGKILL the worker's process group (it leads its own session), not yet reaped."""
        if self.returncode is not None or self.transport is None:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                self.transport.kill()

    def close(self) -> None:
        if self.transport is not None:
            # The transport of an exited process stays open until it is closed.
            self.transport.close()


class ExecLauncher:
    """Every worker a fresh `argv` process on pipes (no OS sandbox)."""

    os_sandbox = False

    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        self._argv = list(argv)
        self._env = env

    async def start(self) -> str | None:
        return None

    async def spawn(self, slot: int) -> WorkerProc:
        _, proc = await asyncio.get_running_loop().subprocess_exec(
            ExecProc,
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=self._env,
            cwd="/",
            start_new_session=True,  # no terminal signals; killpg reaches anything it started
        )
        proc.slot = slot
        return proc

    async def close(self) -> None:
        return None


# ----------------------------------------------------------------------------- zygote


class ForkedProc(WorkerProc, asyncio.Protocol):
    """A worker forked by the zygote: frames on a socket, life and death through a pidfd."""

    def __init__(self, pidfd: int, pid: int, slot: int) -> None:
        super().__init__()
        self.pidfd = pidfd
        self.pid = pid
        self.slot = slot
        self.transport: asyncio.Transport | None = None
        self._poll = select.poll()
        self._poll.register(pidfd, select.POLLIN)
        self.loop.add_reader(pidfd, self._pidfd_ready)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.pipe_data_received(1, data)

    def eof_received(self) -> bool:
        return False  # close the transport: the worker never half-closes on purpose

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe_connection_lost(1, exc)

    def _pidfd_ready(self) -> None:
        self.loop.remove_reader(self.pidfd)
        self.process_exited()

    def alive(self) -> bool:
        # The pidfd turns readable the moment the process exits: asked directly, so a job is
        # never sent to a worker that died since the event loop last looked.
        if self.exited or self.eof:
            return False
        if self._poll.poll(0):
            self._pidfd_ready()
            return False
        return True

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def kill(self) -> None:
        if self.exited or self.pidfd < 0:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.pidfd >= 0:
            if not self.exited:
                self.loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = -1


class ZygoteError(RuntimeError):
    """The zygote could not fork a worker (or is gone)."""


DEFAULT_ZYGOTE_ARGV: tuple[str, ...] = (sys.executable, "-I", "-m", "wtpy.sandbox._zygote")


class ZygoteLauncher:
    """Workers forked by one zygote process, restarted when it dies."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        os_sandbox: bool = True,
        argv: Sequence[str] | None = None,
        uid_base: int | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.os_sandbox = os_sandbox
        self._argv = list(argv or DEFAULT_ZYGOTE_ARGV)
        if not os_sandbox:
            self._argv.append("--no-os-sandbox")
        if uid_base is not None:
            self._argv += ["--uid-base", str(uid_base)]
        self._env = env
        self._start_timeout = start_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        self._replies: dict[int, asyncio.Future[tuple[dict[str, Any], list[int]]]] = {}
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._ids = 0
        self._lock = asyncio.Lock()
        self.pid = 0

    async def start(self) -> str | None:
        """Start the zygote; None, or why the OS sandbox cannot be set up here."""
        async with self._lock:
            return await self._start_locked()

    async def _start_locked(self) -> str | None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv, "--control-fd", str(theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sys.stderr.fileno() if _valid_fd(2) else asyncio.subprocess.DEVNULL,
                stderr=None,
                env=self._env,
                cwd="/",
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )  # fmt: skip
        finally:
            theirs.close()
        self.pid = self._process.pid
        ours.setblocking(False)
        self._control = ours
        self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_control)
        try:
            async with asyncio.timeout(self._start_timeout):
                hello = await self._ready
        except BaseException:
            await self._stop()
            raise
        problem = hello.get("sandbox")
        return problem if isinstance(problem, str) else None

    def _on_control(self) -> None:
        control = self._control
        assert control is not None
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(control, 65536, 4)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message:
                self._lost()
                return
            try:
                reply = json.loads(message)
            except ValueError:
                reply = {}
            if reply.get("ready") is True and self._ready is not None and not self._ready.done():
                self._ready.set_result(reply)
                continue
            future = (
                self._replies.pop(reply.get("id"), None)
                if isinstance(reply.get("id"), int)
                else None
            )
            if future is None or future.done():
                for fd in fds:
                    os.close(fd)
                continue
            future.set_result((reply, fds))

    def _lost(self) -> None:
        """The zygote is gone: fail what waits on it; the next spawn starts a new one."""
        control, self._control = self._control, None
        if control is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(control.fileno())
            control.close()
        error = ZygoteError("the zygote exited")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        for future in self._replies.values():
            if not future.done():
                future.set_exception(error)
        self._replies.clear()

    async def spawn(self, slot: int) -> WorkerProc:
        async with self._lock:
            if self._control is None:
                await self._stop()
                problem = await self._start_locked()
                if problem is not None and self.os_sandbox:
                    raise ZygoteError(f"the OS sandbox cannot be set up: {problem}")
            control = self._control
            assert control is not None
            self._ids += 1
            job_id = self._ids
            future: asyncio.Future[tuple[dict[str, Any], list[int]]] = (
                asyncio.get_running_loop().create_future()
            )
            self._replies[job_id] = future
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                request = json.dumps({"op": "spawn", "id": job_id, "slot": slot}).encode()
                socket.send_fds(control, [request], [theirs.fileno()])
            except OSError as exc:
                self._replies.pop(job_id, None)
                ours.close()
                raise ZygoteError(f"the zygote is not listening: {exc}") from None
            finally:
                theirs.close()
        try:
            async with asyncio.timeout(self._start_timeout):
                reply, fds = await future
        except BaseException:
            self._replies.pop(job_id, None)
            ours.close()
            raise
        if "error" in reply or len(fds) != 1 or not isinstance(reply.get("pid"), int):
            for fd in fds:
                os.close(fd)
            ours.close()
            raise ZygoteError(str(reply.get("error") or f"unexpected zygote reply {reply!r}"))
        proc = ForkedProc(fds[0], reply["pid"], slot)
        ours.setblocking(False)
        await asyncio.get_running_loop().connect_accepted_socket(lambda: proc, ours)
        return proc

    async def close(self) -> None:
        async with self._lock:
            await self._stop()

    async def _stop(self) -> None:
        self._lost()
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), _REAP_TIMEOUT)


def _valid_fd(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


Launcher = ExecLauncher | ZygoteLauncher

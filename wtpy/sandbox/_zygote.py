"""The zygote: a pristine template process that forks one sandboxed worker per request.

`python -I -m wtpy.sandbox._zygote [--no-os-sandbox] [--uid-base N] [--control-fd FD]`, started by the pool
with a minimal environment, stdin on /dev/null, stdout on stderr, and a SOCK_SEQPACKET control
socket on --control-fd (default 3). It imports everything a hook may use (the allowed modules, every codec,
`_strptime`, libseccomp) and then never runs hook code itself. On each request it forks a
worker that enters the OS sandbox (`_oslayer.enter`) and serves the frame protocol of
`_protocol.py` on the socket that came with the request, so a new worker is ready in
milliseconds instead of an interpreter's start-up, and it starts from the same clean state
every time: nothing one tenant did in a worker is in the next one.

Control messages (JSON, one per datagram):

    pool -> zygote  {"op": "spawn", "id": N, "slot": K}   + SCM_RIGHTS: the worker's socket
    zygote -> pool  {"id": N, "pid": P}                   + SCM_RIGHTS: a pidfd of the worker
                    {"id": N, "error": "..."}
    zygote -> pool  {"ready": true, "sandbox": null | "why the OS layer cannot be set up"}

The pidfd is how the pool kills the worker and learns at once that it exited (it polls
readable), with no pid-reuse race. The zygote is a subreaper: it reaps every worker.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import encodings
import hashlib
import importlib
import json
import os
import pkgutil
import select
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

from . import _oslayer
from . import _worker as worker_module

__all__ = ["CONTROL_FD", "main"]

CONTROL_FD = 3
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

# How a forked worker serves: (protocol in, protocol out, memory MB, statm fd, hello) -> exit
# status. tests/raw_zygote.py passes another one (unrestricted Python, to test the OS layer).
ServeFn = Callable[[BinaryIO, BinaryIO, int, "int | None", dict[str, Any]], int]


def _serve_restricted(proto_in: BinaryIO, proto_out: BinaryIO, memory_mb: int, statm: int | None,
                      hello: dict[str, Any]) -> int:  # fmt: skip
    return worker_module.serve(proto_in, proto_out, memory_mb, statm_fd=statm, hello=hello)


def preload() -> None:
    """Import what hooks would otherwise import lazily: a sandboxed worker sees no files."""
    worker_module._preload()
    for info in pkgutil.iter_modules(encodings.__path__):
        with contextlib.suppress(Exception):
            importlib.import_module(f"encodings.{info.name}")
    for algorithm in sorted(hashlib.algorithms_available):
        with contextlib.suppress(Exception):
            hashlib.new(algorithm, b"")
    with contextlib.suppress(OSError):
        _oslayer.load_libraries()


class Zygote:
    def __init__(self, control: socket.socket, *, sandbox: bool, uid_base: int, memory_mb: int,
                 serve: ServeFn) -> None:  # fmt: skip
        self.control = control
        self.sandbox = sandbox
        self.uid_base = uid_base
        self.memory_mb = memory_mb
        self.serve = serve
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def run(self) -> int:
        problem = _oslayer.probe(0, self.uid_base) if self.sandbox else None
        self._send({"ready": True, "sandbox": problem, "os_sandbox": self.sandbox})
        signal.set_wakeup_fd(self._wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd does the work
        while True:
            watched: list[socket.socket | int] = [self.control, self._wakeup_r]
            readable, _, _ = select.select(watched, [], [])
            if self._wakeup_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wakeup_r, 4096)
            self._reap()
            if self.control in readable:
                try:
                    message, fds, _, _ = socket.recv_fds(self.control, 4096, 4)
                except OSError:
                    return 1
                if not message:
                    return 0  # the pool is gone; the workers end at their own EOF
                self._handle(message, fds)

    def _handle(self, raw: bytes, fds: list[int]) -> None:
        try:
            request = json.loads(raw)
            job_id, slot = request["id"], int(request["slot"])
            if request.get("op") != "spawn" or len(fds) != 1:
                raise ValueError("a spawn request carries one socket")
        except (ValueError, KeyError, TypeError) as exc:
            for fd in fds:
                os.close(fd)
            self._send({"id": None, "error": f"bad control message: {exc}"})
            return
        try:
            pidfd, pid = self._spawn(fds[0], slot)
        except OSError as exc:
            self._send({"id": job_id, "error": f"could not start a worker: {exc}"})
            return
        finally:
            os.close(fds[0])
        try:
            self._send({"id": job_id, "pid": pid}, [pidfd])
        finally:
            os.close(pidfd)

    def _spawn(self, channel: int, slot: int) -> tuple[int, int]:
        """Fork a worker on `channel`: (pidfd, host pid). Called only from the main loop,
        which is also the only place that reaps: the reported pid cannot be reaped (and
        reused) before its pidfd is open."""
        report_r, report_w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(report_r)
            self._worker_child(channel, slot, report_w)  # never returns
        os.close(report_w)
        with os.fdopen(report_r, "rb") as report:
            text = report.readline()  # the rest of the set-up goes on in the worker meanwhile
        if self.sandbox:
            os.waitpid(child, 0)  # the intermediate process, gone once it has reported
        try:
            pid = int(text.split()[0])
        except (ValueError, IndexError):
            raise OSError("the worker died while entering the sandbox") from None
        return os.pidfd_open(pid), pid

    def _worker_child(self, channel: int, slot: int, report_w: int) -> None:
        status = 70
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (self._wakeup_r, self._wakeup_w):
                os.close(fd)
            self.control.close()
            # A worker never outlives the zygote's decision to stop it: if the zygote dies
            # the pool's end of the socket still ends the worker (EOF).
            hello: dict[str, Any] = {"slot": slot, "os_sandbox": self.sandbox}
            if self.sandbox:
                statm: int | None = _oslayer.enter(
                    slot, self.uid_base, report_pid=lambda pid: _report(report_w, pid)
                )
            else:
                _report(report_w, os.getpid())
                statm = None
            with contextlib.suppress(OSError):  # still open here when the intermediate reported
                os.close(report_w)
            proto_in = os.fdopen(channel, "rb")
            proto_out = os.fdopen(os.dup(channel), "wb")
            status = self.serve(proto_in, proto_out, self.memory_mb, statm, hello)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(2, f"wtpy worker: failed to start: {exc}\n".encode())
        finally:
            os._exit(status)

    def _reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        socket.send_fds(self.control, [json.dumps(message).encode()], fds or [])


def _report(fd: int, pid: int) -> None:
    os.write(fd, b"%d\n" % pid)
    os.close(fd)


def main(serve: ServeFn = _serve_restricted, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wtpy-zygote")
    parser.add_argument("--no-os-sandbox", action="store_true")
    parser.add_argument("--uid-base", type=int, default=_oslayer.DEFAULT_UID_BASE)
    parser.add_argument("--control-fd", type=int, default=CONTROL_FD)
    options = parser.parse_args(argv)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # gone with the server
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # sandboxed workers are reparented here
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the pool decides when we stop
    control = socket.socket(fileno=options.control_fd)
    control.setblocking(True)
    preload()
    # Objects alive now live in every worker: keep them out of the workers' collections.
    import gc

    gc.collect()
    gc.freeze()
    zygote = Zygote(
        control,
        sandbox=not options.no_os_sandbox,
        uid_base=options.uid_base,
        memory_mb=worker_module._memory_mb(os.environ),
        serve=serve,
    )
    return zygote.run()


if __name__ == "__main__":
    sys.exit(main())

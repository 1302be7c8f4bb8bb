"""A worker's resource limits: rlimits set once at start (memory, no files, no processes),
the per-invocation CPU budget, and the memory checks after a job."""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import sys
from time import process_time
from typing import Any

__all__ = [
    "SERIALIZE_HEADROOM", "STATM_SIZE", "SerializationRoom", "apply_rlimits", "heap_grown", "lower",
    "set_cpu_budget", "statm_bytes",
]  # fmt: skip


def lower(limit: int, value: int) -> None:
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
address_space: tuple[int, int] | None = None


def _limit_address_space(memory_mb: int) -> None:
    """Soft RLIMIT_AS = the worker's memory; hard = that plus SERIALIZE_HEADROOM."""
    global address_space
    soft = memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = soft + SERIALIZE_HEADROOM
    if hard != resource.RLIM_INFINITY:
        soft, wanted = min(soft, hard), min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, wanted))
    address_space = (soft, wanted)


class SerializationRoom:
    """`with SerializationRoom():` soft RLIMIT_AS = hard inside, restored on the way out.
    A class, not @contextmanager: half the cost, on every job."""

    __slots__ = ("_soft", "_hard")

    def __enter__(self) -> None:
        limits = address_space or resource.getrlimit(resource.RLIMIT_AS)
        self._soft, self._hard = soft, hard = limits
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))

    def __exit__(self, *exc_info: object) -> None:
        if self._soft != self._hard:
            resource.setrlimit(resource.RLIMIT_AS, (self._soft, self._hard))


def apply_rlimits(memory_mb: int) -> None:
    if memory_mb > 0:
        _limit_address_space(memory_mb)
    lower(resource.RLIMIT_FSIZE, 0)  # no file writes
    lower(resource.RLIMIT_CORE, 0)
    if os.getuid() != 0:  # root ignores RLIMIT_NPROC: set again after _drop_privileges
        lower(resource.RLIMIT_NPROC, 0)  # no fork (nor threads)
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


# (soft, hard) RLIMIT_CPU as set_cpu_budget last set it: only this process changes it, so
# consecutive invocations (whose whole-second budget is usually the same) skip two syscalls.
_cpu_limit: tuple[int, int] | None = None


def set_cpu_budget(seconds: float | None) -> None:
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


STATM_SIZE, _STATM_RESIDENT = 0, 1  # fields of /proc/self/statm, in pages


def statm_bytes(statm_fd: int, field: int) -> int:
    """A field of /proc/self/statm in bytes (one pread); huge when it cannot be read."""
    try:
        return int(os.pread(statm_fd, 64, 0).split()[field]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return sys.maxsize


def heap_grown(threshold: int, statm_fd: int) -> bool:
    """Has this process's resident memory passed `threshold`? ru_maxrss is a cheap first
    check, but Linux keeps it across fork and exec: a worker started by a server whose RSS
    was above the threshold would look grown forever (and be replaced after every job).
    So past that check, the current RSS decides."""
    return _peak_rss_bytes() > threshold and statm_bytes(statm_fd, _STATM_RESIDENT) > threshold

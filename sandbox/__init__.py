"""wtpy.sandbox: runs hooks in sandboxed worker processes.

A pool of workers forked from a zygote into an OS sandbox (namespaces, an empty root,
seccomp), each running hooks compiled with RestrictedPython under wtpy's guards. Nothing
here imports the web stack.

The pool's names resolve lazily: the zygote (`python -I -m wtpy.sandbox._zygote`) imports
this package first, and its workers must not hold the pool's side (asyncio, ssl).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._policy import CompiledHook, CompileFailure, compile_hook

__all__ = [
    "ArgumentsNotEncodable",
    "CompileFailure",
    "CompiledHook",
    "JobResult",
    "OsSandboxUnavailable",
    "PoolClosedError",
    "WorkerPool",
    "WorkerStartError",
    "compile_hook",
]

_POOL_EXPORTS = frozenset(
    {"ArgumentsNotEncodable", "JobResult", "OsSandboxUnavailable", "PoolClosedError", "WorkerPool",
     "WorkerStartError"}
)  # fmt: skip

if TYPE_CHECKING:
    from ._pool import (
        ArgumentsNotEncodable,
        JobResult,
        OsSandboxUnavailable,
        PoolClosedError,
        WorkerPool,
        WorkerStartError,
    )


def __getattr__(name: str) -> Any:
    if name not in _POOL_EXPORTS:
        raise AttributeError(f"module 'wtpy.sandbox' has no attribute {name!r}")
    return getattr(import_module("._pool", __name__), name)

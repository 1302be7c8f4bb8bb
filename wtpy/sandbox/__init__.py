"""wtpy.sandbox: runs hooks in sandboxed worker processes.

A pool of workers forked from a zygote into an OS sandbox (namespaces, an empty root,
seccomp), each running hooks compiled with RestrictedPython under wtpy's guards. Nothing
here imports the web stack.

Exports resolve lazily, so that a process loads only the side it uses: the server the
pool (asyncio), the zygote (`python -I -m wtpy.sandbox._zygote`, which imports this
package first) and its workers the worker side (RestrictedPython, the allowed modules).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

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

_EXPORTS = {
    "ArgumentsNotEncodable": "._pool",
    "CompileFailure": "._hook",
    "CompiledHook": "._hook",
    "JobResult": "._pool",
    "OsSandboxUnavailable": "._pool",
    "PoolClosedError": "._pool",
    "WorkerPool": "._pool",
    "WorkerStartError": "._pool",
    "compile_hook": "._rp_compile",
}

if TYPE_CHECKING:
    from ._hook import CompiledHook, CompileFailure
    from ._pool import (
        ArgumentsNotEncodable,
        JobResult,
        OsSandboxUnavailable,
        PoolClosedError,
        WorkerPool,
        WorkerStartError,
    )
    from ._rp_compile import compile_hook


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wtpy.sandbox' has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)

"""`wt-compiler` registry: body parsing, auth header, validation and envelopes.

Compilers run in the server process and never execute hook code: `prepare` turns an
invocation into a finished error envelope (bytes) or a `HookCall` for the sandbox, and
`success` / `failure` shape the envelope from the hook's outcome.
"""

from ._base import Compiler, HookCall, HookRequest, WebtaskContext
from ._envelope import error_envelope
from ._registry import compiler_names, get_compiler, register

__all__ = [
    "Compiler",
    "HookCall",
    "HookRequest",
    "WebtaskContext",
    "compiler_names",
    "error_envelope",
    "get_compiler",
    "register",
]

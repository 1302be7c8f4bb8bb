"""`wt-compiler` registry: body parsing, auth header, validation and envelopes.

Compilers run in the server process and never execute hook code: `prepare` turns an
invocation into a finished error envelope (bytes) or a `HookCall` for the sandbox, and
`success` / `failure` shape the envelope from the hook's outcome.
"""

from ._base import (
    Check,
    Compiler,
    ExchangeCompiler,
    HookCall,
    HookRequest,
    WebtaskContext,
    is_array,
    is_empty_or_array,
    is_object,
    is_string,
    js_truthy,
)
from ._envelope import error_envelope
from ._registry import ENTRY_POINT_GROUP, compiler_names, get_compiler, load_entry_points, register

__all__ = [
    "ENTRY_POINT_GROUP",
    "Check",
    "Compiler",
    "ExchangeCompiler",
    "HookCall",
    "HookRequest",
    "WebtaskContext",
    "compiler_names",
    "error_envelope",
    "get_compiler",
    "is_array",
    "is_empty_or_array",
    "is_object",
    "is_string",
    "js_truthy",
    "load_entry_points",
    "register",
]

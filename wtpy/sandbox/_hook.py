"""The hook contract every isolation tier shares: the modules a hook may import, the error
classes it raises, the name its code runs under, and what compiling it gives."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import CodeType

__all__ = [
    "ALLOWED_MODULES",
    "COMPILE_ERROR_MESSAGE",
    "ERROR_CLASSES",
    "HOOK_FILENAME",
    "IMPORTABLE_MODULES",
    "MISSING_HOOK",
    "RANDOM_STATE_MODULES",
    "CompileFailure",
    "CompiledHook",
    "ExtensibilityUserError",
    "InvalidRequestError",
    "InvalidScopeError",
    "ServerError",
]

# Every hook is compiled under this filename; the worker recognises the hook's own
# frames by it and shows them under the webtask's name (the same code can back several
# webtasks, and the compiled code object is shared between them).
HOOK_FILENAME = "<wtpy-hook>"
COMPILE_ERROR_MESSAGE = "Unable to compile the extensibility code as python"
MISSING_HOOK = "The extensibility code must define a function named hook"

ALLOWED_MODULES = frozenset(
    {
        "base64", "collections", "collections.abc", "datetime", "functools", "hashlib", "hmac",
        "itertools", "json", "math", "random", "re", "string", "time", "uuid",
    }
)  # fmt: skip
# Allowed modules through which a hook reaches the `random` module's process-wide state:
# `random` itself, and `uuid` (uuid1 and getnode draw from it: `import random` in their own
# code). No other allowed module reaches it (tests/test_worker.py checks the sources and the
# public attributes), and a hook reaches a module only by importing it in this invocation.
RANDOM_STATE_MODULES = frozenset({"random", "uuid"})
# `from __future__ import annotations` is harmless and common; it is importable but not
# something a hook can reach as an attribute.
IMPORTABLE_MODULES = ALLOWED_MODULES | {"__future__"}

# Import every allowed module now, in the worker's start-up, before the rlimits apply.
for _name in sorted(IMPORTABLE_MODULES):
    importlib.import_module(_name)


class ExtensibilityUserError(Exception):
    """Base class of the errors a hook raises (or passes to cb) on purpose."""


class InvalidRequestError(ExtensibilityUserError):
    pass


class InvalidScopeError(ExtensibilityUserError):
    pass


class ServerError(ExtensibilityUserError):
    pass


ERROR_CLASSES: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (ExtensibilityUserError, InvalidRequestError, InvalidScopeError, ServerError)
}


@dataclass(frozen=True)
class CompiledHook:
    code: CodeType
    entry: str  # the global that holds the hook function after the module has run
    lines: tuple[str, ...]  # the source, for stack traces
    # Whether the code has generator functions (`yield`): only they can leave hook code
    # pending after the hook returns (see _invocation._finalize_leftovers).
    has_generators: bool = True


@dataclass(frozen=True)
class CompileFailure:
    error_description: str  # "Line 3: SyntaxError: invalid syntax ..."; lines joined by "\n"

"""The sandbox policy: compile a hook with RestrictedPython and build its restricted globals.

RestrictedPython rewrites attribute access, item access, iteration, writes and print
into calls to guard functions that it looks up in the module globals (`_getattr_`,
`_write_`, ...). This module supplies those guards, the builtins a hook may use, the
import allow-list, the hook error classes, and the per-invocation log sink.

The guards add three rules on top of RestrictedPython's own (no names or attributes
starting with `_`, no frame/code introspection attributes, no `str.format`):

* an allowed module is exposed as the real module object, but an attribute that is a
  module outside the allow-list is refused (`datetime.sys`, `uuid.os`, `re.enum` exist);
* a few functions of allowed modules are refused because they read/write arbitrary
  attributes or evaluate annotations unrestricted (`functools.update_wrapper` can copy a
  stdlib function's `__globals__` into the hook's globals; `singledispatch` evals
  string annotations);
* objects are read-only except dicts, lists and instances of classes the hook itself
  defined in this invocation, and `setattr` never takes a name starting with `_`.
"""

from __future__ import annotations

import abc
import ast
import builtins
import collections
import copy
import importlib
import operator
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, ModuleType, SimpleNamespace
from typing import Any

from RestrictedPython import compile_restricted_exec, safe_builtins
from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safer_getattr,
    safer_getattr_raise,
)

__all__ = [
    "ALLOWED_MODULES",
    "COMPILE_ERROR_MESSAGE",
    "HOOK_FILENAME",
    "LIVE_LOG_INTERVAL",
    "RANDOM_STATE_MODULES",
    "CompileFailure",
    "CompiledHook",
    "ExtensibilityUserError",
    "InvalidRequestError",
    "InvalidScopeError",
    "LogSink",
    "ServerError",
    "compile_hook",
    "make_globals",
    "reseed_random",
    "resolve_hook",
]

# Every hook is compiled under this filename; the worker recognises the hook's own
# frames by it and shows them under the webtask's name (the same code can back several
# webtasks, and the compiled code object is shared between them).
HOOK_FILENAME = "<wtpy-hook>"
COMPILE_ERROR_MESSAGE = "Unable to compile the extensibility code as python"
MISSING_HOOK = "The extensibility code must define a function named hook"

ALLOWED_MODULES = frozenset(
    {
        "base64", "collections", "datetime", "functools", "hashlib", "hmac", "itertools",
        "json", "math", "random", "re", "string", "time", "uuid",
    }
)  # fmt: skip
# Allowed modules through which a hook reaches the `random` module's process-wide state:
# `random` itself, and `uuid` (uuid1 and getnode draw from it: `import random` in their own
# code). No other allowed module reaches it (tests/test_worker.py checks the sources and the
# public attributes), and a hook reaches a module only by importing it in this invocation.
RANDOM_STATE_MODULES = frozenset({"random", "uuid"})
# `from __future__ import annotations` is harmless and common; it is importable but not
# something a hook can reach as an attribute.
_IMPORTABLE = ALLOWED_MODULES | {"__future__"}

# module name -> attributes refused even though the module is allowed (see docstring).
_DENIED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "functools": frozenset({"update_wrapper", "wraps", "singledispatch", "singledispatchmethod"}),
}

# Import every allowed module now, in the worker's start-up, before the rlimits apply.
for _name in sorted(_IMPORTABLE):
    importlib.import_module(_name)

# C code of allowed modules imports these through the *calling frame's* `__import__`, i.e.
# ours when a hook calls it: datetime.strptime and time.strptime import `_strptime`. A hook
# cannot ask for them itself (imports are checked at compile time and `__import__` is not a
# name it can reach), and the module goes back to that C code, not to the hook.
_INTERNAL_IMPORTS = frozenset({"_strptime"})


class ExtensibilityUserError(Exception):
    """Base class of the errors a hook raises (or passes to cb) on purpose."""


class InvalidRequestError(ExtensibilityUserError):
    pass


class InvalidScopeError(ExtensibilityUserError):
    pass


class ServerError(ExtensibilityUserError):
    pass


_ERROR_CLASSES: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (ExtensibilityUserError, InvalidRequestError, InvalidScopeError, ServerError)
}


# ----------------------------------------------------------------------------- compile


@dataclass(frozen=True)
class CompiledHook:
    code: CodeType
    entry: str  # the global that holds the hook function after the module has run
    lines: tuple[str, ...]  # the source, for stack traces
    # Whether the code has generator functions (`yield`): only they can leave hook code
    # pending after the hook returns (see _worker._finalize_leftovers).
    has_generators: bool = True


@dataclass(frozen=True)
class CompileFailure:
    error_description: str  # "Line 3: SyntaxError: invalid syntax ..."; lines joined by "\n"


def compile_hook(source: str) -> CompiledHook | CompileFailure:
    """Compile a hook module once; the result is reusable for any number of invocations."""
    try:
        tree = ast.parse(source, HOOK_FILENAME, "exec")
    except SyntaxError as exc:
        statement = f" at statement: {exc.text.strip()!r}" if exc.text and exc.text.strip() else ""
        return CompileFailure(f"Line {exc.lineno}: {type(exc).__name__}: {exc.msg}{statement}")
    except (ValueError, RecursionError) as exc:  # NUL bytes; absurdly deep nesting
        return CompileFailure(f"Line 1: {type(exc).__name__}: {exc}")

    # Both checks read the original tree: RestrictedPython rewrites it in place.
    errors = _import_errors(tree)
    entry = _entry_point(tree)
    generators = any(isinstance(node, ast.Yield | ast.YieldFrom) for node in ast.walk(tree))
    try:
        result = compile_restricted_exec(tree, HOOK_FILENAME)
    except RecursionError:
        return CompileFailure("Line 1: RecursionError: the code is nested too deeply")
    errors.extend((_line_of(message), message) for message in result.errors)
    if errors:
        return CompileFailure("\n".join(message for _, message in sorted(errors)))
    if isinstance(entry, CompileFailure):
        return entry
    assert result.code is not None
    return CompiledHook(
        code=result.code, entry=entry, lines=tuple(source.splitlines()), has_generators=generators
    )


def _line_of(message: str) -> int:
    # RestrictedPython messages start with "Line <n>: "
    head = message.split(":", 1)[0]
    return int(head[5:]) if head.startswith("Line ") and head[5:].isdigit() else 0


def _import_errors(tree: ast.Module) -> list[tuple[int, str]]:
    """Refuse, at compile time, every import outside the allow-list (the guarded
    `__import__` checks again at run time)."""
    errors: list[tuple[int, str]] = []
    allowed = ", ".join(sorted(ALLOWED_MODULES))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = ["." * node.level + (node.module or "")]
        else:
            continue
        for module in modules:
            if not _importable(module):
                errors.append(
                    (node.lineno, f"Line {node.lineno}: import of module {module!r} is not "
                     f"allowed (allowed: {allowed})")
                )  # fmt: skip
    return errors


def _importable(module: str) -> bool:
    if module == "__future__":
        return True
    parts = module.split(".")
    return parts[0] in ALLOWED_MODULES and all(part and not part.startswith("_") for part in parts)


def _entry_point(tree: ast.Module) -> str | CompileFailure:
    """`hook` if the module binds that name at top level, else its only public function."""
    functions: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [node.name]
            if not isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                functions.append(node.name)
        else:  # `hook = ...`, `from json import loads as hook`, `if x: def hook(...)`
            names = [
                sub.name
                for sub in ast.walk(node)
                if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            ] + [
                target.id
                for sub in ast.walk(node)
                if isinstance(sub, ast.Assign | ast.AnnAssign | ast.AugAssign | ast.NamedExpr)
                for target in (sub.targets if isinstance(sub, ast.Assign) else [sub.target])
                if isinstance(target, ast.Name)
            ] + [
                (alias.asname or alias.name).split(".")[0]
                for sub in ast.walk(node)
                if isinstance(sub, ast.Import | ast.ImportFrom)
                for alias in sub.names
            ]
        if "hook" in names:
            return "hook"
    if len(functions) == 1:
        return functions[0]
    if not functions:
        return CompileFailure(MISSING_HOOK)
    return CompileFailure(
        f"{MISSING_HOOK} (or exactly one public top-level function; found "
        f"{len(functions)}: {', '.join(functions)})"
    )


def resolve_hook(namespace: dict[str, Any], compiled: CompiledHook) -> Callable[..., Any] | CompileFailure:
    """The hook function, once the module has run in `namespace`."""
    value = namespace.get(compiled.entry)
    if callable(value):
        return value
    kind = "missing" if value is None else f"a {type(value).__name__}, not a function"
    return CompileFailure(f"{MISSING_HOOK} ({compiled.entry} is {kind})")


# ----------------------------------------------------------------------------- logs


# A running hook's lines are sent on (see LogSink) at most this often.
LIVE_LOG_INTERVAL = 0.1


class LogSink:
    """Collects one invocation's log lines, capped by count and by message bytes.

    With `live`, waiting lines are handed to it (and dropped from `entries`) once the first
    of them has waited LIVE_LOG_INTERVAL: when the hook emits its next line, or when `flush`
    is called (the worker arms a timer with `arm` for that). So a slow hook's output is
    followed as it runs; `entries` keeps the rest for the final answer. Never after the
    output was cut: a cut line and the marker after it always travel together.
    """

    def __init__(
        self,
        max_lines: int,
        max_bytes: int,
        live: Callable[[list[dict[str, Any]]], None] | None = None,
        arm: Callable[[], None] | None = None,
    ) -> None:
        self.entries: list[dict[str, Any]] = []
        self._max_lines = max_lines if max_lines > 0 else 0  # max(0, ...) costs a call
        self._max_bytes = max_bytes if max_bytes > 0 else 0
        self._lines = 0  # counted across live batches: the caps are per invocation
        self._bytes = 0
        self._truncated = False
        self._live = live
        self._arm = arm
        self._oldest = 0.0  # time.monotonic() of the first line in entries

    def flush(self) -> None:
        """Hand the waiting lines to `live` now (nothing after the output was cut)."""
        if self._live is not None and self.entries and not self._truncated:
            batch, self.entries = self.entries, []
            self._live(batch)

    def emit(self, level: str, message: str) -> None:
        if self._truncated:
            return
        if self._live is not None:
            if self.entries and time.monotonic() - self._oldest >= LIVE_LOG_INTERVAL:
                self.flush()
            if not self.entries:  # this line will be the oldest waiting
                self._oldest = time.monotonic()
                if self._arm is not None:
                    self._arm()
        try:
            size = len(message.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates: no JSON frame can carry them
            message = message.encode("utf-8", "replace").decode("utf-8")
            size = len(message.encode("utf-8"))
        if self._lines < self._max_lines and self._bytes + size <= self._max_bytes:
            self._bytes += size
            self._lines += 1
            self.entries.append({"level": level, "message": message, "time": time.time()})
            return
        room = self._max_bytes - self._bytes
        if room > 0 and self._lines < self._max_lines:  # keep what fits of a long line
            head = message.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
            self.entries.append({"level": level, "message": head, "time": time.time()})
        self._truncated = True
        self.entries.append(
            {
                "level": "warn",
                "message": f"[wtpy] output truncated: the limit is {self._max_lines} log lines "
                f"and {self._max_bytes} bytes per invocation",
                "time": time.time(),
            }
        )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


class HookLog:
    """The `log` global: log.info / log.warn / log.error (arguments joined by spaces)."""

    __slots__ = ("_sink",)

    def __init__(self, sink: LogSink) -> None:
        self._sink = sink

    def info(self, *parts: Any) -> None:
        self._sink.emit("info", " ".join(map(_text, parts)))

    def warn(self, *parts: Any) -> None:
        self._sink.emit("warn", " ".join(map(_text, parts)))

    warning = warn

    def error(self, *parts: Any) -> None:
        self._sink.emit("error", " ".join(map(_text, parts)))


_MAX_PRINTED = 1024 * 1024


class _PrintCollector:
    """RestrictedPython's `_print_`: one instance per scope; each print() is a log line.

    One class for every invocation (defining a class per call costs more than the rest of
    make_globals): the hook never reaches it, `_print` being a name it cannot write."""

    __slots__ = ("txt", "size", "_sink")

    def __init__(self, sink: LogSink) -> None:
        self.txt: list[str] = []  # for RestrictedPython's `printed` name
        self.size = 0
        self._sink = sink

    def write(self, text: str) -> None:
        if self.size < _MAX_PRINTED:  # a print loop must not grow this without bound
            self.txt.append(text)
            self.size += len(text)

    def __call__(self) -> str:  # the `printed` name
        return "".join(self.txt)

    def _call_print(self, *objects: Any, sep: Any = " ", end: Any = "\n", file: Any = None,
                    flush: bool = False) -> None:  # fmt: skip
        sep = " " if sep is None else _text(sep)
        end = "\n" if end is None else _text(end)
        text = sep.join(map(_text, objects))
        if file is not None:  # a hook object with a write method; never a real file
            guarded_getattr(file, "write")(text + end)
            return
        self.write(text + end)
        self._sink.emit("info", text)


def _print_factory(sink: LogSink) -> Callable[..., Any]:
    def collector(_getattr_: Any = None) -> _PrintCollector:
        return _PrintCollector(sink)

    return collector


# ----------------------------------------------------------------------------- guards

_RAISE = object()


def _module_allowed(module: ModuleType) -> bool:
    return module.__name__.split(".", 1)[0] in ALLOWED_MODULES


def guarded_getattr(obj: Any, name: str, default: Any = _RAISE) -> Any:
    """`obj.name` for hooks: safer_getattr, plus the module rules in the docstring.

    Missing attributes raise AttributeError like plain Python (safer_getattr's default
    of None would silently turn typos into None)."""
    if isinstance(obj, ModuleType) and name in _DENIED_ATTRIBUTES.get(obj.__name__, ()):
        raise AttributeError(f"{obj.__name__}.{name} is not available to hooks")
    if name == "register" and isinstance(obj, abc.ABCMeta):
        # collections.abc.Mapping.register(list) would change isinstance() for every later
        # invocation in this worker, other webtasks' included.
        raise AttributeError(f"{obj.__name__}.register is not available to hooks")
    if name in ("format", "format_map") and (
        isinstance(obj, collections.UserString)
        or (isinstance(obj, type) and issubclass(obj, collections.UserString))
    ):  # UserString.format is str.format with the same attribute walk
        raise NotImplementedError("Using the format*() methods of `str` is not safe")
    value = safer_getattr_raise(obj, name) if default is _RAISE else safer_getattr(obj, name, default)
    if isinstance(value, ModuleType) and not _module_allowed(value):
        raise AttributeError(f"module {value.__name__!r} is not available to hooks")
    if isinstance(obj, ModuleType) and isinstance(value, list | dict | set | bytearray):
        # e.g. json.decoder.BACKSLASH: a hook may read it, not change it for the next one
        return copy.copy(value)
    return value


def _guarded_hasattr(obj: Any, name: str) -> bool:
    try:
        guarded_getattr(obj, name)
    except (AttributeError, NotImplementedError):
        return False
    return True


def _guarded_getitem(obj: Any, index: Any) -> Any:
    value = obj[index]
    if isinstance(value, ModuleType) and not _module_allowed(value):
        raise KeyError(index)
    return value


def _guarded_import(
    name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
) -> Any:
    if level == 0 and name in _INTERNAL_IMPORTS:
        return builtins.__import__(name)  # PyImport_Import passes fromlist ["__doc__"]
    if level != 0 or not isinstance(name, str) or not _importable(name):
        raise ImportError(f"import of module {name!r} is not allowed")
    module = builtins.__import__(name, None, None, fromlist, 0)
    if not fromlist:
        return module
    # `from m import x` reads x off whatever we return, without _getattr_: hand back a
    # namespace of the guarded values instead of the module itself.
    values: dict[str, Any] = {}
    for item in fromlist:
        try:
            values[item] = guarded_getattr(module, item)
        except (AttributeError, NotImplementedError) as exc:
            raise ImportError(f"cannot import name {item!r} from {name!r}: {exc}") from None
    return SimpleNamespace(**values)


# Bound now, not looked up on `random` (a module hooks can import) when reseeding. The
# Python-level seed, not the C one: it also drops the instance's cached gauss value.
_seed_random = random.seed


def reseed_random() -> None:
    """Fresh, unpredictable state for the `random` module's process-wide instance: 256 bits
    from the OS (random.seed() would read 2,496 bytes: twice the cost, no gain here)."""
    _seed_random(int.from_bytes(os.urandom(32), "big"))


_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "<<=": operator.ilshift,
    ">>=": operator.irshift, "&=": operator.iand, "^=": operator.ixor, "|=": operator.ior,
    "@=": operator.imatmul,
}  # fmt: skip


def _inplacevar(op: str, x: Any, y: Any) -> Any:
    return _INPLACE[op](x, y)


def _apply(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)


_EXTRA_BUILTINS = (
    "all", "any", "bytes", "dict", "enumerate", "filter", "frozenset", "iter", "list", "map",
    "max", "min", "next", "reversed", "set", "sorted", "sum", "tuple", "zip",
)  # fmt: skip


# The builtins every invocation starts from (copied per call, then the per-call guards added).
# Built without deleting a key: dict.copy() of a dict with no deleted slot is one memcpy
# (about 7 times faster than copying this one after a pop).
_BASE_BUILTINS: dict[str, Any] = {
    name: value
    for name, value in {
        **safe_builtins,
        **{name: getattr(builtins, name) for name in _EXTRA_BUILTINS},
        "getattr": guarded_getattr,
        "hasattr": _guarded_hasattr,
    }.items()
    if name != "_getattr_"
}


# The globals every invocation starts from (copied per call, then the per-call ones added).
_BASE_GLOBALS: dict[str, Any] = {
    "__name__": "webtask",
    "__metaclass__": type,
    "_getattr_": guarded_getattr,
    "_getitem_": _guarded_getitem,
    "_getiter_": iter,
    "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
    "_unpack_sequence_": guarded_unpack_sequence,
    "_inplacevar_": _inplacevar,
    "_apply_": _apply,
    **_ERROR_CLASSES,
}


def make_globals(sink: LogSink) -> dict[str, Any]:
    """Fresh restricted globals for one invocation (nothing is shared between two calls
    except immutable builtins and the allowed modules, which hooks cannot write to)."""
    hook_classes: set[type] = set()

    def build_class(func: Any, name: str, *bases: Any, **kwargs: Any) -> Any:
        cls = builtins.__build_class__(func, name, *bases, **kwargs)
        hook_classes.add(cls)
        return cls

    def write_guard(obj: Any) -> Any:
        # Instances of the hook's own classes are its own to write (public names only:
        # RestrictedPython refuses `obj._x = ...` at compile time, setattr below at run time).
        # Plain dicts and lists (what full_write_guard passes as they are) without a call.
        cls = type(obj)
        if cls is dict or cls is list or cls in hook_classes:
            return obj
        return full_write_guard(obj)

    def guarded_setattr(obj: Any, name: str, value: Any) -> None:
        if not isinstance(name, str) or name.startswith("_"):
            raise AttributeError(f"setattr of {name!r} is not allowed")
        setattr(write_guard(obj), name, value)

    def guarded_delattr(obj: Any, name: str) -> None:
        if not isinstance(name, str) or name.startswith("_"):
            raise AttributeError(f"delattr of {name!r} is not allowed")
        delattr(write_guard(obj), name)

    reseeded = False

    def guarded_import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        # The `random` module's state is process-wide: the first import in this invocation
        # of a module that reaches it reseeds it, so no hook sees values another one seeded
        # or drew (reseeding on every job cost more than the rest of this function). Once
        # only: the hook's own random.seed() holds for the rest of its run.
        nonlocal reseeded
        if not reseeded and isinstance(name, str) and name.partition(".")[0] in RANDOM_STATE_MODULES:
            reseed_random()
            reseeded = True
        return _guarded_import(name, globals, locals, fromlist, level)

    restricted_builtins = _BASE_BUILTINS.copy()
    restricted_builtins["__build_class__"] = build_class
    restricted_builtins["__import__"] = guarded_import
    restricted_builtins["setattr"] = guarded_setattr
    restricted_builtins["delattr"] = guarded_delattr
    namespace = _BASE_GLOBALS.copy()
    namespace["__builtins__"] = restricted_builtins
    namespace["_write_"] = write_guard
    namespace["_print_"] = _print_factory(sink)
    namespace["log"] = HookLog(sink)
    return namespace

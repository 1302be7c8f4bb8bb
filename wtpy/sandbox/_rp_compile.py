"""Compiling a hook with RestrictedPython, and finding its entry point.

RestrictedPython's compile_restricted rewrites the tree so that attribute access, item
access, iteration, writes and print go through the guards of `_rp_guards.py`; on top of
its rules, every import outside the allow-list is refused here, at compile time.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from RestrictedPython.compile import compile_restricted_exec

from ._hook import (
    ALLOWED_MODULES,
    HOOK_FILENAME,
    IMPORTABLE_MODULES,
    MISSING_HOOK,
    CompiledHook,
    CompileFailure,
)

__all__ = ["compile_hook", "resolve_hook"]


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
    """Only modules on the allow-list, by their exact name: not a submodule of one."""
    return module in IMPORTABLE_MODULES


def _entry_point(tree: ast.Module) -> str | CompileFailure:
    """`hook` if the module binds that name at top level, else its only public function."""
    functions: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [node.name]
            if not isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                functions.append(node.name)
        else:  # `hook = ...`, `from json import loads as hook`, `if x: def hook(...)`
            names = (
                [
                    sub.name
                    for sub in ast.walk(node)
                    if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                ]
                + [
                    target.id
                    for sub in ast.walk(node)
                    if isinstance(sub, ast.Assign | ast.AnnAssign | ast.AugAssign | ast.NamedExpr)
                    for target in (sub.targets if isinstance(sub, ast.Assign) else [sub.target])
                    if isinstance(target, ast.Name)
                ]
                + [
                    (alias.asname or alias.name).split(".")[0]
                    for sub in ast.walk(node)
                    if isinstance(sub, ast.Import | ast.ImportFrom)
                    for alias in sub.names
                ]
            )
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


def resolve_hook(
    namespace: dict[str, Any], compiled: CompiledHook
) -> Callable[..., Any] | CompileFailure:
    """The hook function, once the module has run in `namespace`."""
    value = namespace.get(compiled.entry)
    if callable(value):
        return value  # type: ignore[no-any-return]
    kind = "missing" if value is None else f"a {type(value).__name__}, not a function"
    return CompileFailure(f"{MISSING_HOOK} ({compiled.entry} is {kind})")

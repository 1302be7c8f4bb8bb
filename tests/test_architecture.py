"""The import structure: the domain loads without the web stack, and no two of wtpy's
modules import each other (directly or around a loop), not even from inside a function."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WEB_STACK = ("starlette", "sse_starlette", "uvicorn")


def _modules() -> dict[str, Path]:
    """Every module of wtpy (name -> file): the files under wtpy/."""
    modules: dict[str, Path] = {}
    for path in sorted((REPO / "wtpy").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported wtpy module, line, inside a function?) for every import statement in the
    file, wherever it is: module level, `if TYPE_CHECKING:`, or a function body."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            in_function.update(id(inner) for inner in ast.walk(node) if inner is not node)
    found: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod.
            targets = [
                f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                for a in node.names
            ]
        else:
            continue
        found += [
            (target, node.lineno, id(node) in in_function)
            for target in targets
            if target in modules
        ]
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_wtpy_modules() -> None:
    modules = _modules()
    assert {"wtpy.runtime", "wtpy.server", "wtpy.server._app", "wtpy.runtime._runtime"} <= set(
        modules
    )
    graph: dict[str, set[str]] = {name: set() for name in modules}
    late: dict[tuple[str, str], int] = {}
    for name, path in modules.items():
        for target, line, inside in _imports(name, path, modules):
            graph[name].add(target)
            if inside:
                late[(name, target)] = line
    cycles = _cycles(graph)
    report = []
    for component in cycles:
        members = set(component)
        dodges = [f"{a} -> {b} (line {line}, inside a function)" for (a, b), line in sorted(late.items())
                  if a in members and b in members]  # fmt: skip
        report.append(" <-> ".join(component) + "".join(f"\n    {d}" for d in dodges))
    assert not cycles, "import cycles:\n  " + "\n  ".join(report)


def test_the_domain_does_not_import_the_http_layer() -> None:
    modules = _modules()
    upward = [
        f"{name} -> {target} (line {line})"
        for name, path in modules.items()
        if name == "wtpy.runtime" or name.startswith("wtpy.runtime.")
        for target, line, _ in _imports(name, path, modules)
        if target == "wtpy.server" or target.startswith("wtpy.server.")
    ]
    assert not upward, "wtpy.runtime imports wtpy.server:\n  " + "\n  ".join(upward)


def test_the_graph_sees_imports_inside_functions() -> None:
    modules = _modules()
    cli_main = _imports("wtpy.cli._main", modules["wtpy.cli._main"], modules)
    assert any(target == "wtpy.server" and inside for target, _, inside in cli_main)
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"], ["d"]]


def test_the_runtime_loads_without_the_web_stack() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import wtpy.runtime as runtime\n"
        "for name in runtime.__all__:\n"
        "    getattr(runtime, name)\n"
        "for info in pkgutil.iter_modules(runtime.__path__):\n"
        "    importlib.import_module(f'wtpy.runtime.{info.name}')\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {WEB_STACK!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"wtpy.runtime imported the web stack: {result.stdout}"

"""The `wt-compiler` registry: meta value -> Compiler.

The two exchanges are built in. Other packages add compilers without forking wtpy by
declaring an entry point in the `wtpy.compilers` group (datasette loads its plugins the
same way); its object is a Compiler, or a class whose instances are:

    [project.entry-points."wtpy.compilers"]
    my-exchange = "my_package.compiler:MyExchange"

Entry points load on the first lookup that misses and on the first `compiler_names()`,
not at import: a plugin module imports `wtpy.compilers` itself.
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import entry_points

from ._base import Compiler
from .client_credentials import ClientCredentialsExchange
from .password import PasswordExchange

__all__ = ["ENTRY_POINT_GROUP", "compiler_names", "get_compiler", "load_entry_points", "register"]

ENTRY_POINT_GROUP = "wtpy.compilers"

_log = logging.getLogger("wtpy.compilers")
_lock = threading.Lock()
_compilers: dict[str, Compiler] = {}
_entry_points_loaded = False


def register(compiler: Compiler, *, replace: bool = False) -> None:
    """Add a compiler under `compiler.name` (exact string). ValueError if taken and not `replace`."""
    if not isinstance(compiler, Compiler):
        raise TypeError(f"{compiler!r} does not implement the Compiler protocol")
    name = compiler.name
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"invalid compiler name {name!r}")
    with _lock:
        if name in _compilers and not replace:
            raise ValueError(f"a compiler named {name!r} is already registered")
        _compilers[name] = compiler


def get_compiler(name: str) -> Compiler | None:
    """The compiler registered under exactly `name` (no trimming, case-sensitive), else None."""
    if not isinstance(name, str):
        return None
    compiler = _compilers.get(name)  # one dict read is atomic: no lock on the hot path
    if compiler is None and not _entry_points_loaded:
        load_entry_points()
        compiler = _compilers.get(name)
    return compiler


def compiler_names() -> list[str]:
    if not _entry_points_loaded:
        load_entry_points()
    with _lock:
        return sorted(_compilers)


def load_entry_points() -> list[str]:
    """Register the compilers of every installed `wtpy.compilers` entry point, once; the
    names of those registered. A plugin that fails to load, is not a Compiler or takes a
    name already registered is logged and skipped: a broken plugin must not take down
    the server or the built-in exchanges."""
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return []
        _entry_points_loaded = True
    added: list[str] = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
            compiler = loaded() if isinstance(loaded, type) else loaded
            register(compiler)
        except Exception as exc:  # a plugin's bug, reported with its entry point's name
            _log.warning(
                "wt-compiler entry point %r (%s) skipped: %s", point.name, point.value, exc
            )
            continue
        added.append(compiler.name)
    return added


register(ClientCredentialsExchange())
register(PasswordExchange())

"""The `wt-compiler` registry: meta value -> Compiler."""

from __future__ import annotations

import threading

from ._base import Compiler
from .client_credentials import ClientCredentialsExchange
from .password import PasswordExchange

__all__ = ["compiler_names", "get_compiler", "register"]

_lock = threading.Lock()
_compilers: dict[str, Compiler] = {}


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
    return _compilers.get(name)  # one dict read is atomic: no lock on the hot path


def compiler_names() -> list[str]:
    with _lock:
        return sorted(_compilers)


register(ClientCredentialsExchange())
register(PasswordExchange())

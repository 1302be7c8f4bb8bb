"""What the CLI prints: pretty JSON, and rich tables for people (plain, wide text when piped)."""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import click
import orjson
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = [
    "COMPILER_META",
    "echo_json",
    "info",
    "stdout_console",
    "stdout_printer",
    "webtask_details",
    "webtask_table",
]

from wtpy.contract import COMPILER_META

# Piped output is for scripts and grep: never wrap or truncate a URL to fit 80 columns.
_PIPE_WIDTH = 4096


def echo_json(value: Any) -> None:
    """Pretty JSON on stdout (key order kept, UTF-8 as is)."""
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def info(message: str) -> None:
    """A line for people on stderr, keeping stdout for the command's result."""
    click.echo(message, err=True)


class _Printer:
    """Prints rich renderables: styled on a terminal; plain, unwrapped, right-trimmed when piped."""

    def __init__(self) -> None:
        self._terminal = Console(file=sys.stdout, highlight=False)
        self._piped = not self._terminal.is_terminal

    def print(self, renderable: Any) -> None:
        if not self._piped:
            self._terminal.print(renderable)
            return
        buffer = io.StringIO()
        Console(file=buffer, highlight=False, width=_PIPE_WIDTH, color_system=None).print(
            renderable
        )
        click.echo("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()))


def stdout_printer() -> _Printer:
    """Something with .print(renderable) writing to stdout, trimmed when piped (tables)."""
    return _Printer()


def stdout_console() -> Console:
    """A rich Console on stdout; when piped: no colour, and wide so nothing wraps or truncates."""
    console = Console(file=sys.stdout, highlight=False)
    if not console.is_terminal:
        console = Console(file=sys.stdout, highlight=False, width=_PIPE_WIDTH, color_system=None)
    return console


def _text(value: Any) -> Text:
    # Text, never markup: names and meta values may contain "[...]".
    return Text("" if value is None else str(value))


def webtask_table(webtasks: Sequence[Mapping[str, Any]]) -> None:
    """`wtpy ls`: one row per webtask."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("NAME", "COMPILER", "UPDATED", "URL"):
        table.add_column(column, no_wrap=column in ("NAME", "URL"))
    for webtask in webtasks:
        meta = webtask.get("meta") or {}
        table.add_row(
            _text(webtask.get("name")),
            _text(meta.get(COMPILER_META, "") if isinstance(meta, Mapping) else ""),
            _text(webtask.get("updated_at")),
            _text(webtask.get("url")),
        )
    stdout_printer().print(table)


def webtask_details(webtask: Mapping[str, Any], *, decrypted: bool, show_code: bool) -> None:
    """`wtpy inspect`: fields, meta, secret names (values only when `decrypted`), maybe code."""
    console = stdout_printer()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for label, key in (
        ("Container", "container"),
        ("Name", "name"),
        ("URL", "url"),
        ("Version", "version"),
        ("Created", "created_at"),
        ("Updated", "updated_at"),
        ("Code hash", "code_hash"),
    ):
        grid.add_row(label, _text(webtask.get(key)))
    console.print(grid)

    meta = webtask.get("meta") or {}
    console.print(Text("Meta:", style="bold"))
    if meta:
        console.print(_pairs(meta.items()))
    else:
        console.print("  (none)")

    secrets = webtask.get("secrets") or []
    if decrypted and isinstance(secrets, Mapping):
        console.print(Text("Secrets:", style="bold"))
        console.print(_pairs(secrets.items()) if secrets else "  (none)")
    else:
        names = sorted(secrets) if isinstance(secrets, Mapping | list) else []
        hint = " (values hidden; use --decrypt to show them)" if names else ""
        console.print(Text(f"Secrets:{hint}", style="bold"))
        for name in names:
            console.print(Text(f"  {name}"))
        if not names:
            console.print("  (none)")

    if show_code:
        console.print(Text("Code:", style="bold"))
        # Raw, not through rich: the code must come out byte for byte.
        code = str(webtask.get("code", ""))
        click.echo(code, nl=bool(code) and not code.endswith("\n"))


def _pairs(items: Any) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column()
    for key, value in items:
        table.add_row(_text(f"  {key}"), _text(value))
    return table

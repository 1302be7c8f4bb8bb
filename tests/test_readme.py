"""The README is part of the product: its commands must be the ones that work."""

from __future__ import annotations

import re

from click.testing import CliRunner
from conftest import REPO

from wtpy.cli import cli

README = (REPO / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [line for line in quick_start.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2, "the quick start has exactly two set-up commands"
    assert "wtpy serve" in commands[0]
    test_command = commands[1]
    assert test_command.endswith("&& scripts/check")
    check_script = (REPO / "scripts" / "check").read_text()
    assert '"$py" -m coverage run -m pytest "$@"' in check_script.splitlines()
    ci_script = (REPO / ".ci" / "run").read_text()
    assert test_command in ci_script.splitlines()


def _commands(group, prefix=()):
    ctx = group.make_context("wtpy", [], resilient_parsing=True)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        path = (*prefix, name)
        yield path, command
        if hasattr(command, "list_commands"):
            yield from _commands(command, path)


def test_every_cli_command_and_option_is_documented() -> None:
    missing = []
    for path, command in _commands(cli):
        words = " ".join(path)
        if not re.search(rf"wtpy {re.escape(words)}\b", README):
            missing.append(f"wtpy {words}")
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt not in ("--help",) and opt not in README:
                    missing.append(f"wtpy {words} {opt}")
    assert not missing, f"undocumented in README.md: {missing}"


def test_cli_help_runs() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "create" in result.output

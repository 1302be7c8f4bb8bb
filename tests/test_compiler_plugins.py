"""Third-party compilers: an installed distribution's `wtpy.compilers` entry point adds a
wt-compiler to a running server without forking wtpy; a broken one is skipped."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WtpyServer

from wtpy.compilers import ENTRY_POINT_GROUP, _registry, compiler_names, get_compiler

PLUGIN = """
from typing import ClassVar

from wtpy.compilers import Check, ExchangeCompiler, is_string


class EchoExchange(ExchangeCompiler):
    name: ClassVar[str] = "acme/echo-exchange"
    order: ClassVar[tuple[str, ...]] = ("greeting", "context")
    checks: ClassVar[tuple[Check, ...]] = (
        Check("greeting", is_string, "Body .greeting received by extensibility point is not a string"),
    )


class NotACompiler:
    pass
"""

ENTRY_POINTS = f"""
[{ENTRY_POINT_GROUP}]
echo = acme_compiler:EchoExchange
not-a-compiler = acme_compiler:NotACompiler
missing = acme_compiler_gone:Nothing
"""


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    """A directory holding an installed distribution: its module and its dist-info."""
    (tmp_path / "acme_compiler.py").write_text(PLUGIN)
    info = tmp_path / "acme_compiler-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-compiler\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return tmp_path


@pytest.fixture
def installed(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setattr(_registry, "_entry_points_loaded", False)
    yield
    _registry._compilers.pop("acme/echo-exchange", None)
    sys.modules.pop("acme_compiler", None)


def test_entry_point_compiler_is_found_and_broken_ones_are_skipped(
    installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="wtpy.compilers"):
        compiler = get_compiler("acme/echo-exchange")
    assert compiler is not None and type(compiler).__name__ == "EchoExchange"
    assert "acme/echo-exchange" in compiler_names()
    assert get_compiler("auth0-ext-compilers/client-credentials-exchange") is not None
    skipped = {record.getMessage().split("'")[1] for record in caplog.records}
    assert skipped == {"not-a-compiler", "missing"}


def test_without_the_distribution_the_name_is_unknown() -> None:
    assert get_compiler("acme/echo-exchange") is None


def test_a_server_runs_hooks_with_a_plugin_compiler(plugin_dir: Path, tmp_path: Path) -> None:
    server = WtpyServer(tmp_path / "data", workers=1, env={"PYTHONPATH": str(plugin_dir)})
    server.start()
    try:
        code = textwrap.dedent("""
            def hook(greeting, context):
                return {"echo": greeting, "secret": context["webtask"]["secrets"]["k"]}
        """)
        meta = {"wt-compiler": "acme/echo-exchange", "auth0-extension-secret": "s3"}
        response = server.put("echo", code, meta, {"auth0-extension-secret": "s3", "k": "v"})
        assert response.status_code in (200, 201), response.text
        answer = server.run("echo", {"greeting": "hi"}, secret="s3")
        assert answer.json() == {
            "status": "success",
            "statusCode": 200,
            "headers": {},
            "data": {"echo": "hi", "secret": "v"},
        }
        refused = server.run("echo", {"greeting": 1}, secret="s3").json()
        assert refused["status"] == "error"
        assert (
            refused["data"]["message"]
            == "Body .greeting received by extensibility point is not a string"
        )
        unauthorized = server.run("echo", {"greeting": "hi"}, secret="wrong").json()
        assert unauthorized["data"]["message"] == "Unauthorized extensibility point"
    finally:
        server.stop()

"""The `wtpy` CLI against an in-memory fake of the management API (httpx.MockTransport).

The fake implements design.md section 4; end-to-end CLI tests against the real server live
elsewhere.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import stat
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
import yaml
from click.testing import CliRunner, Result

from wtpy.cli import ApiError, ManagementClient, WtpyGroup, cli, exit_code_for, main
from wtpy.cli import _main as cli_main

ADMIN = "admin-token-1234"
URL = "http://wtpy.test:8721"
CC = "auth0-ext-compilers/client-credentials-exchange"
SECRET = "s3cr3t-value-xyz"
CODE = "def hook(client, scope, audience, context, cb):\n    cb(None, {})\n"
MASK = "********"


class FakeWtpy:
    """Just enough of the wtpy server: management API + a run endpoint echoing what it got."""

    def __init__(self, token: str = ADMIN) -> None:
        self.token = token
        self.webtasks: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.forced: tuple[int, str] | None = None
        self.clock = 0

    # helpers for tests
    def add(
        self,
        name: str,
        meta: dict[str, str] | None = None,
        secrets: dict[str, str] | None = None,
        container: str = "default",
        code: str = CODE,
    ) -> None:
        self.clock += 1
        stamp = f"2026-11-23T10:00:{self.clock:02d}Z"
        self.webtasks[(container, name)] = {
            "code": code, "meta": dict(meta or {"wt-compiler": CC}), "secrets": dict(secrets or {}),
            "version": 1, "created_at": stamp, "updated_at": stamp,
        }  # fmt: skip

    def last(self, method: str | None = None, prefix: str = "/api/webtask") -> httpx.Request:
        matching = [
            r for r in self.requests
            if (method is None or r.method == method) and r.url.path.startswith(prefix)
        ]  # fmt: skip
        assert matching, f"no {method} request to {prefix}"
        return matching[-1]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # the fake server
    def view(
        self, request: httpx.Request, container: str, name: str, decrypt: bool, code: bool
    ) -> dict[str, Any]:
        w = self.webtasks[(container, name)]
        values = set(w["secrets"].values())
        meta = (
            dict(w["meta"])
            if decrypt
            else {k: MASK if v in values else v for k, v in w["meta"].items()}
        )
        out = {
            "container": container, "name": name,
            "url": f"{request.url.scheme}://{request.url.netloc.decode()}/api/run/{container}/{name}",
            "meta": meta, "secrets": dict(w["secrets"]) if decrypt else sorted(w["secrets"]),
            "version": w["version"], "code_hash": "abc", "created_at": w["created_at"], "updated_at": w["updated_at"],
        }  # fmt: skip
        if code:
            out["code"] = w["code"]
        return out

    @staticmethod
    def error(status: int, code: str, message: str) -> httpx.Response:
        return httpx.Response(status, json={"error": code, "message": message})

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.forced is not None:
            return self.error(*self.forced, "forced failure")
        parts = request.url.path.split("/")[1:]
        if parts[:2] == ["api", "run"]:
            return self.run(request, parts[2], parts[3], "/".join(parts[4:]))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            if "authorization" not in request.headers:
                return self.error(401, "unauthorized", "Send a management token")
            return self.error(403, "forbidden", "This token may not manage webtasks")
        if parts[:2] != ["api", "webtask"] or len(parts) not in (3, 4):
            return self.error(404, "not_found", "no route")
        container = parts[2]
        decrypt = request.url.params.get("decrypt") == "1"
        if len(parts) == 3:
            if request.method != "GET":
                return self.error(405, "method_not_allowed", "nope")
            filters = dict(item.split(":", 1) for item in request.url.params.get_list("meta"))
            found = [
                self.view(request, c, n, decrypt, False)
                for (c, n), w in sorted(self.webtasks.items())
                if c == container and all(w["meta"].get(k) == v for k, v in filters.items())
            ]
            return httpx.Response(200, json=found)
        name = parts[3]
        key = (container, name)
        if request.method == "PUT":
            body = json.loads(request.content)
            if len(body["code"].encode()) > 100 * 1024:
                return self.error(413, "payload_too_large", "Code exceeds the limit")
            if "wt-compiler" not in (body.get("meta") or {}):
                return self.error(422, "invalid_webtask", "meta 'wt-compiler' is required")
            created = key not in self.webtasks
            version = 1 if created else self.webtasks[key]["version"] + 1
            self.add(
                name, body.get("meta") or {}, body.get("secrets") or {}, container, body["code"]
            )
            self.webtasks[key]["version"] = version
            return httpx.Response(
                201 if created else 200, json=self.view(request, container, name, False, False)
            )
        if key not in self.webtasks:
            return self.error(404, "not_found", f"Webtask {container}/{name} not found")
        w = self.webtasks[key]
        if request.method == "GET":
            return httpx.Response(200, json=self.view(request, container, name, decrypt, True))
        if request.method == "DELETE":
            del self.webtasks[key]
            return httpx.Response(204)
        if request.method == "PATCH":
            body = json.loads(request.content)
            if "code" in body:
                w["code"] = body["code"]
            for field in ("meta", "secrets"):
                for k, v in (body.get(field) or {}).items():
                    if v is None:
                        w[field].pop(k, None)
                    else:
                        w[field][k] = v
            w["version"] += 1
            return httpx.Response(200, json=self.view(request, container, name, False, False))
        return self.error(405, "method_not_allowed", "nope")

    def run(self, request: httpx.Request, container: str, name: str, sub: str) -> httpx.Response:
        w = self.webtasks.get((container, name))
        if w is None:
            return self.error(404, "not_found", f"Webtask {container}/{name} not found")
        secret = w["secrets"].get("auth0-extension-secret")
        if secret and request.headers.get("authorization") != f"Bearer {secret}":
            return httpx.Response(200, json={"status": "error", "data": {
                "message": "Unauthorized extensibility point", "name": "Error", "statusCode": 500}})  # fmt: skip
        body = json.loads(request.content) if request.content else None
        return httpx.Response(200, json={
            "statusCode": 200, "headers": {}, "status": "success",
            "data": {"body": body, "path": sub, "method": request.method},
        })  # fmt: skip


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated config dir and no WTPY_* from the outer environment; returns the config dir."""
    for key in list(os.environ):
        if key.startswith("WTPY_"):
            monkeypatch.delenv(key)
    config = tmp_path / "config"
    monkeypatch.setenv("WTPY_CONFIG_DIR", str(config))
    return config


@pytest.fixture
def fake(env: Path, monkeypatch: pytest.MonkeyPatch) -> FakeWtpy:
    server = FakeWtpy()
    monkeypatch.setattr(
        cli_main,
        "make_client",
        lambda url, token: ManagementClient(url, token, transport=server.transport()),
    )
    return server


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def profile(fake: FakeWtpy, env: Path) -> Path:
    """A default profile pointing at the fake."""
    path = env / "profiles.yaml"
    env.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"default": "local", "profiles": {
        "local": {"url": URL, "token": ADMIN, "container": "default"},
        "other": {"url": "http://other.test", "token": "other-token", "container": "staging"},
    }}))  # fmt: skip
    path.chmod(0o600)
    return path


def wtpy(runner: CliRunner, *args: str, input: str | None = None) -> Result:
    return runner.invoke(cli, list(args), input=input, catch_exceptions=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- help --------------------------------------------------------------------------------------


def iter_commands(group: click.Group) -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        yield name, command


def test_help_lists_every_command(runner: CliRunner) -> None:
    result = wtpy(runner, "--help")
    assert result.exit_code == 0
    for name in ("serve", "init", "create", "update", "ls", "inspect", "rm", "invoke"):
        assert f"  {name} " in result.output
    assert "Exit codes" in result.output


def test_every_command_and_option_has_help_text() -> None:
    missing = []
    for name, command in iter_commands(cli):
        if not (command.help or "").strip() or not (command.get_short_help_str() or "").strip():
            missing.append(name)
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                missing.append(f"{name} {param.opts[0]}")
    assert missing == []
    assert all(isinstance(p, click.Option) and p.help for p in cli.params)


def test_main_entry_point_and_version(runner: CliRunner) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert "wtpy" in wtpy(runner, "--version").output


def test_lazy_commands_and_error_mapping_for_plugins(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    @click.group(cls=WtpyGroup)
    def group() -> None:
        """A group."""

    @click.command()
    @click.option("--status", type=int, help="Status to fail with.")
    def plugin(status: int) -> None:
        """A plugin command."""
        raise ApiError(status, "nope", "plugin failed")

    module = types.ModuleType("wtpy_test_plugin")
    module.plugin = plugin  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wtpy_test_plugin", module)
    group.add_lazy_command("plug", "wtpy_test_plugin:plugin")
    assert "plug" in runner.invoke(group, ["--help"]).output
    result = runner.invoke(group, ["plug", "--status", "404"])
    assert result.exit_code == 5 and result.stderr == "error: plugin failed (HTTP 404 nope)\n"


# -- serve -------------------------------------------------------------------------------------


def test_serve_passes_options(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = importlib.import_module("wtpy.server")
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(server, "serve", lambda **kw: calls.append(kw))
    result = wtpy(
        runner,
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "9000",
        "--data-dir",
        str(tmp_path),
        "--workers",
        "3",
    )
    assert result.exit_code == 0, result.output
    assert calls == [{"host": "0.0.0.0", "port": 9000, "data_dir": tmp_path, "workers": 3}]
    calls.clear()
    assert wtpy(runner, "serve").exit_code == 0
    assert calls == [{"host": "127.0.0.1", "port": 8721, "data_dir": None, "workers": None}]
    assert wtpy(runner, "serve", "--workers", "0").exit_code == 2


# -- init --------------------------------------------------------------------------------------


def test_init_writes_private_yaml_and_verifies(
    runner: CliRunner, fake: FakeWtpy, env: Path
) -> None:
    fake.add("a")
    result = wtpy(runner, "init", "--url", URL + "/", "--token", ADMIN)
    assert result.exit_code == 0, result.output
    path = env / "profiles.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert yaml.safe_load(path.read_text()) == {
        "default": "default",
        "profiles": {"default": {"url": URL, "token": ADMIN, "container": "default"}},
    }
    assert "verified" in result.stderr and "1 webtask " in result.stderr
    assert result.stdout == ""
    assert ADMIN not in result.output
    assert fake.last("GET").url.path == "/api/webtask/default"
    assert [p.name for p in env.iterdir()] == ["profiles.yaml"]  # no temp files left


def test_init_reads_token_from_data_dir(
    runner: CliRunner, fake: FakeWtpy, env: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin.token").write_text(ADMIN + "\n")
    result = wtpy(runner, "init", "--url", URL, "--data-dir", str(data), "--container", "c1")
    assert result.exit_code == 0, result.output
    profiles = yaml.safe_load((env / "profiles.yaml").read_text())["profiles"]
    assert profiles["default"] == {"url": URL, "token": ADMIN, "container": "c1"}
    missing = wtpy(runner, "init", "--data-dir", str(tmp_path / "nope"))
    assert missing.exit_code == 2
    assert "error: no admin token" in missing.stderr


def test_init_prompts_for_token_hidden(runner: CliRunner, fake: FakeWtpy, env: Path) -> None:
    result = wtpy(runner, "init", "--url", URL, input=ADMIN + "\n")
    assert result.exit_code == 0, result.output
    assert ADMIN not in result.output
    assert (
        yaml.safe_load((env / "profiles.yaml").read_text())["profiles"]["default"]["token"] == ADMIN
    )


def test_init_second_profile_keeps_default_unless_asked(
    runner: CliRunner, fake: FakeWtpy, env: Path
) -> None:
    assert wtpy(runner, "init", "--url", URL, "--token", ADMIN).exit_code == 0
    assert wtpy(runner, "init", "--url", URL, "--token", ADMIN, "-p", "two").exit_code == 0
    data = yaml.safe_load((env / "profiles.yaml").read_text())
    assert data["default"] == "default" and set(data["profiles"]) == {"default", "two"}
    assert (
        wtpy(
            runner, "init", "--url", URL, "--token", ADMIN, "-p", "two", "--make-default"
        ).exit_code
        == 0
    )
    assert yaml.safe_load((env / "profiles.yaml").read_text())["default"] == "two"


def test_init_reports_failed_verification(runner: CliRunner, fake: FakeWtpy, env: Path) -> None:
    bad = wtpy(runner, "init", "--url", URL, "--token", "wrong")
    assert bad.exit_code == 8
    assert "profile saved, but verification failed" in bad.stderr
    assert (env / "profiles.yaml").exists()
    before = len(fake.requests)
    skipped = wtpy(runner, "init", "--url", URL, "--token", "wrong", "--no-verify")
    assert skipped.exit_code == 0 and len(fake.requests) == before


def test_init_unreachable_and_bad_url(runner: CliRunner, env: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = wtpy(runner, "init", "--url", url, "--token", ADMIN)
    assert result.exit_code == 7
    assert f"cannot reach wtpy at {url}: connection refused" in result.stderr
    assert wtpy(runner, "init", "--url", "ftp://x", "--token", ADMIN).exit_code == 2
    assert (
        wtpy(runner, "init", "--url", URL, "--token", ADMIN, "--container", "bad name").exit_code
        == 2
    )


# -- profile resolution ------------------------------------------------------------------------


def test_missing_profile_suggests_init(runner: CliRunner, fake: FakeWtpy) -> None:
    result = wtpy(runner, "ls")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "wtpy init" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert fake.requests == []


def test_env_alone_is_enough(
    runner: CliRunner, fake: FakeWtpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WTPY_URL", URL)
    monkeypatch.setenv("WTPY_TOKEN", ADMIN)
    monkeypatch.setenv("WTPY_CONTAINER", "envc")
    assert wtpy(runner, "ls").exit_code == 0
    assert fake.last().url.path == "/api/webtask/envc"


def test_profile_selection_and_overrides(
    runner: CliRunner, profile: Path, fake: FakeWtpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert wtpy(runner, "ls").exit_code == 0
    request = fake.last()
    assert str(request.url).startswith(URL) and request.url.path == "/api/webtask/default"
    assert request.headers["authorization"] == f"Bearer {ADMIN}"

    assert wtpy(runner, "ls", "-p", "other").exit_code == 8  # the fake rejects other-token
    request = fake.last()
    assert request.url.host == "other.test" and request.url.path == "/api/webtask/staging"
    assert request.headers["authorization"] == "Bearer other-token"

    monkeypatch.setenv("WTPY_PROFILE", "other")
    monkeypatch.setenv("WTPY_URL", URL)
    monkeypatch.setenv("WTPY_TOKEN", ADMIN)
    assert wtpy(runner, "ls").exit_code == 0
    assert fake.last().url.host == "wtpy.test" and fake.last().url.path == "/api/webtask/staging"

    monkeypatch.setenv("WTPY_CONTAINER", "fromenv")
    assert wtpy(runner, "ls").exit_code == 0
    assert fake.last().url.path == "/api/webtask/fromenv"
    assert wtpy(runner, "ls", "--container", "fromflag").exit_code == 0
    assert fake.last().url.path == "/api/webtask/fromflag"


def test_unknown_profile_is_invalid(runner: CliRunner, profile: Path) -> None:
    result = wtpy(runner, "ls", "-p", "nope")
    assert result.exit_code == 2
    assert (
        "no profile named 'nope'" in result.stderr and "wtpy init --profile nope" in result.stderr
    )


def test_broken_profiles_file(runner: CliRunner, profile: Path) -> None:
    profile.write_text("profiles: [1, 2")
    result = wtpy(runner, "ls")
    assert result.exit_code == 2 and "not valid YAML" in result.stderr


def test_world_readable_profiles_file_warns(runner: CliRunner, profile: Path) -> None:
    profile.chmod(0o644)
    result = wtpy(runner, "ls")
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "chmod 600" in result.stderr


# -- create ------------------------------------------------------------------------------------


def test_create_prints_only_the_url(
    runner: CliRunner, profile: Path, fake: FakeWtpy, tmp_path: Path
) -> None:
    rule = write(tmp_path / "myrule.py", CODE)
    result = wtpy(runner, "create", rule, "--meta", f"wt-compiler={CC}",
                  "--meta", f"auth0-extension-secret={SECRET}", "--secret", f"auth0-extension-secret={SECRET}")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{URL}/api/run/default/myrule\n"
    assert "created webtask default/myrule (version 1)" in result.stderr
    assert SECRET not in result.output
    body = json.loads(fake.last("PUT").content)
    assert body == {"code": CODE, "meta": {"wt-compiler": CC, "auth0-extension-secret": SECRET},
                    "secrets": {"auth0-extension-secret": SECRET}}  # fmt: skip
    again = wtpy(runner, "create", rule, "--meta", f"wt-compiler={CC}")
    assert again.exit_code == 0 and "replaced webtask default/myrule (version 2)" in again.stderr


def test_create_splits_on_first_equals(
    runner: CliRunner, profile: Path, fake: FakeWtpy, tmp_path: Path
) -> None:
    rule = write(tmp_path / "r.py", CODE)
    result = wtpy(runner, "create", rule, "--name", "named", "--meta", f"wt-compiler={CC}",
                  "-m", "q=a=b==c", "-m", "empty=", "-s", "k=v=w", "-s", "k2= spaced ")  # fmt: skip
    assert result.exit_code == 0, result.output
    request = fake.last("PUT")
    assert request.url.path == "/api/webtask/default/named"
    body = json.loads(request.content)
    assert body["meta"] == {"wt-compiler": CC, "q": "a=b==c", "empty": ""}
    assert body["secrets"] == {"k": "v=w", "k2": " spaced "}


def test_create_reads_meta_and_secrets_files(
    runner: CliRunner, profile: Path, fake: FakeWtpy, tmp_path: Path
) -> None:
    rule = write(tmp_path / "r.py", CODE)
    cases = {
        "meta.yaml": f"wt-compiler: {CC}\nnum: 3\nflag: true\nover: file\n",
        "meta.json": json.dumps({"wt-compiler": CC, "num": 3, "flag": True, "over": "file"}),
        "meta.env": f"# comment\nwt-compiler={CC}\nexport num=3\nflag='true'\n\nover=file\n",
        "meta.txt": f"wt-compiler={CC}\nnum=3\nflag=true\nover=file\n",
        "meta.conf": f"wt-compiler: {CC}\nnum: 3\nflag: true\nover: file\n",
    }
    secrets = write(tmp_path / "secrets.env", 'a=1=2\nb="quoted value"\n')
    for filename, text in cases.items():
        meta_file = write(tmp_path / filename, text)
        result = wtpy(runner, "create", rule, "--meta-file", meta_file, "--meta", "over=flag",
                      "--secrets-file", secrets, "--secret", "b=flag")  # fmt: skip
        assert result.exit_code == 0, (filename, result.output)
        body = json.loads(fake.last("PUT").content)
        assert body["meta"] == {"wt-compiler": CC, "num": "3", "flag": "true", "over": "flag"}, (
            filename
        )
        assert body["secrets"] == {"a": "1=2", "b": "flag"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- a\n- b\n", "must hold a mapping"),
        ("a: [1, 2]\n", "must be a string"),
        ("a: null\n", "is null"),
        ("a: {b: 1\n", "not valid YAML (line"),
    ],
)
def test_create_rejects_bad_mapping_files(
    runner: CliRunner, profile: Path, fake: FakeWtpy, tmp_path: Path, content: str, message: str
) -> None:
    rule = write(tmp_path / "r.py", CODE)
    result = wtpy(runner, "create", rule, "--secrets-file", write(tmp_path / "s.yaml", content))
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.startswith("error: ")
    assert fake.requests == []


def test_create_bad_pairs_do_not_echo_values(
    runner: CliRunner, profile: Path, fake: FakeWtpy, tmp_path: Path
) -> None:
    rule = write(tmp_path / "r.py", CODE)
    result = wtpy(runner, "create", rule, "--secret", SECRET)
    assert result.exit_code == 2
    assert "--secret expects KEY=VALUE" in result.stderr and SECRET not in result.output
    assert wtpy(runner, "create", rule, "--meta", "=x").exit_code == 2
    assert fake.requests == []


def test_create_file_problems(
    runner: CliRunner, profile: Path, fake: FakeWtpy, tmp_path: Path
) -> None:
    missing = wtpy(runner, "create", str(tmp_path / "nope.py"))
    assert missing.exit_code == 2
    assert missing.stderr == f"error: cannot read FILE {tmp_path / 'nope.py'}: no such file\n"
    binary = tmp_path / "bin.py"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "not UTF-8" in wtpy(runner, "create", str(binary)).stderr
    assert wtpy(runner, "create", str(tmp_path)).exit_code == 2
    assert "needs --name" in wtpy(runner, "create", "-").stderr
    assert wtpy(runner, "create", str(tmp_path / "r.py"), "--name", "bad/name").exit_code == 2
    assert wtpy(runner, "create", str(tmp_path / "r.py"), "--name", "..").exit_code == 2
    assert fake.requests == []


def test_create_from_stdin_with_bom(runner: CliRunner, profile: Path, fake: FakeWtpy) -> None:
    result = wtpy(
        runner, "create", "-", "--name", "piped", "-m", f"wt-compiler={CC}", input="\ufeff" + CODE
    )
    assert result.exit_code == 0, result.output
    assert json.loads(fake.last("PUT").content)["code"] == CODE


def test_create_server_rejections(
    runner: CliRunner, profile: Path, fake: FakeWtpy, tmp_path: Path
) -> None:
    no_compiler = wtpy(runner, "create", write(tmp_path / "r.py", CODE))
    assert no_compiler.exit_code == 6
    assert (
        no_compiler.stderr == "error: meta 'wt-compiler' is required (HTTP 422 invalid_webtask)\n"
    )
    big = wtpy(
        runner, "create", write(tmp_path / "big.py", "#" * 200_000), "-m", f"wt-compiler={CC}"
    )
    assert big.exit_code == 6 and "413" in big.stderr


def test_names_with_special_characters_round_trip(
    runner: CliRunner, profile: Path, fake: FakeWtpy, tmp_path: Path
) -> None:
    result = wtpy(
        runner,
        "create",
        write(tmp_path / "r.py", CODE),
        "--name",
        "a:b@c$d+e=f!g~h",
        "-m",
        f"wt-compiler={CC}",
    )
    assert result.exit_code == 0, result.output
    assert ("default", "a:b@c$d+e=f!g~h") in fake.webtasks


# -- update ------------------------------------------------------------------------------------


def test_update_sends_merge_patch(
    runner: CliRunner, profile: Path, fake: FakeWtpy, tmp_path: Path
) -> None:
    fake.add("r", {"wt-compiler": CC, "keep": "1", "drop": "x"}, {"s1": "a", "s2": "b"})
    result = wtpy(
        runner,
        "update",
        "r",
        "-m",
        "new=v=w",
        "--unset-meta",
        "drop",
        "-s",
        "s1=new",
        "--unset-secret",
        "s2",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(fake.last("PATCH").content) == {
        "meta": {"new": "v=w", "drop": None}, "secrets": {"s1": "new", "s2": None},
    }  # fmt: skip
    assert result.stdout == f"{URL}/api/run/default/r\n"
    assert "updated webtask default/r (version 2)" in result.stderr
    assert fake.webtasks[("default", "r")]["meta"] == {"wt-compiler": CC, "keep": "1", "new": "v=w"}
    assert fake.webtasks[("default", "r")]["secrets"] == {"s1": "new"}


def test_update_code_and_files(
    runner: CliRunner, profile: Path, fake: FakeWtpy, tmp_path: Path
) -> None:
    fake.add("r", {"wt-compiler": CC, "gone": "x"})
    new_code = "def hook(client, scope, audience, context, cb):\n    cb(None, {'x': 1})\n"
    meta_file = write(tmp_path / "m.yaml", "gone: null\nadded: yes-please\n")
    result = wtpy(
        runner, "update", "r", write(tmp_path / "new.py", new_code), "--meta-file", meta_file
    )
    assert result.exit_code == 0, result.output
    assert json.loads(fake.last("PATCH").content) == {
        "code": new_code,
        "meta": {"gone": None, "added": "yes-please"},
    }


def test_update_usage_errors(runner: CliRunner, profile: Path, fake: FakeWtpy) -> None:
    nothing = wtpy(runner, "update", "r")
    assert nothing.exit_code == 2 and "nothing to update" in nothing.stderr
    conflict = wtpy(runner, "update", "r", "-m", "a=1", "--unset-meta", "a")
    assert conflict.exit_code == 2 and "conflicts" in conflict.stderr
    assert fake.requests == []
    missing = wtpy(runner, "update", "nope", "-m", "a=1")
    assert missing.exit_code == 5
    assert missing.stderr == "error: Webtask default/nope not found (HTTP 404 not_found)\n"


# -- ls ----------------------------------------------------------------------------------------


def test_ls_table_and_json(runner: CliRunner, profile: Path, fake: FakeWtpy) -> None:
    fake.add(
        "alpha",
        {"wt-compiler": CC, "auth0-extension-secret": SECRET},
        {"auth0-extension-secret": SECRET},
    )
    fake.add("beta", {"wt-compiler": "auth0-ext-compilers/password-exchange"})
    table = wtpy(runner, "ls")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert all(line == line.rstrip() for line in lines)  # piped: no rich padding
    assert lines[0].split() == ["NAME", "COMPILER", "UPDATED", "URL"]
    rows = [line.split() for line in lines[2:]]
    assert rows == [
        ["alpha", CC, "2026-11-23T10:00:01Z", f"{URL}/api/run/default/alpha"],
        [
            "beta",
            "auth0-ext-compilers/password-exchange",
            "2026-11-23T10:00:02Z",
            f"{URL}/api/run/default/beta",
        ],
    ]
    raw = wtpy(runner, "ls", "--json")
    assert raw.exit_code == 0
    listing = json.loads(raw.stdout)
    assert [w["name"] for w in listing] == ["alpha", "beta"]
    assert listing[0]["meta"]["auth0-extension-secret"] == MASK
    assert SECRET not in table.output + raw.output


def test_ls_filters_and_empty(runner: CliRunner, profile: Path, fake: FakeWtpy) -> None:
    fake.add("alpha", {"wt-compiler": CC, "auth0-extension": "runtime"})
    fake.add("beta", {"wt-compiler": CC})
    result = wtpy(
        runner, "ls", "--json", "--meta", "auth0-extension=runtime", "-m", f"wt-compiler={CC}"
    )
    assert [w["name"] for w in json.loads(result.stdout)] == ["alpha"]
    assert fake.last().url.params.get_list("meta") == [
        "auth0-extension:runtime",
        f"wt-compiler:{CC}",
    ]
    empty = wtpy(runner, "ls", "-c", "void")
    assert (
        empty.exit_code == 0
        and empty.stdout == ""
        and "no webtasks in container 'void'" in empty.stderr
    )
    assert json.loads(wtpy(runner, "ls", "-c", "void", "--json").stdout) == []


# -- inspect -----------------------------------------------------------------------------------


def test_inspect_masks_secrets_by_default(runner: CliRunner, profile: Path, fake: FakeWtpy) -> None:
    fake.add(
        "r",
        {"wt-compiler": CC, "auth0-extension-secret": SECRET},
        {"auth0-extension-secret": SECRET, "other": "v2-hidden"},
    )
    result = wtpy(runner, "inspect", "r")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in (
        "default",
        f"{URL}/api/run/default/r",
        CC,
        "auth0-extension-secret",
        "other",
        "--decrypt",
        "2026-11-23T10:00:01Z",
        MASK,
    ):
        assert expected in out
    assert SECRET not in out and "v2-hidden" not in out and "def hook" not in out
    assert fake.last().url.params.get("decrypt") is None
    as_json = json.loads(wtpy(runner, "inspect", "r", "--json").stdout)
    assert as_json["secrets"] == ["auth0-extension-secret", "other"] and "code" not in as_json


def test_inspect_decrypt_and_code(runner: CliRunner, profile: Path, fake: FakeWtpy) -> None:
    fake.add(
        "r",
        {"wt-compiler": CC, "auth0-extension-secret": SECRET},
        {"auth0-extension-secret": SECRET},
    )
    result = wtpy(runner, "inspect", "r", "--decrypt", "--fetch-code")
    assert result.exit_code == 0, result.output
    assert SECRET in result.stdout and MASK not in result.stdout
    assert result.stdout.endswith(CODE)
    assert fake.last().url.params.get("decrypt") == "1"
    as_json = json.loads(wtpy(runner, "inspect", "r", "--json", "--decrypt", "--fetch-code").stdout)
    assert as_json["secrets"] == {"auth0-extension-secret": SECRET} and as_json["code"] == CODE
    assert wtpy(runner, "inspect", "missing").exit_code == 5


# -- rm ----------------------------------------------------------------------------------------


def test_rm_without_tty_or_with_yes(runner: CliRunner, profile: Path, fake: FakeWtpy) -> None:
    fake.add("a")
    fake.add("b")
    assert wtpy(runner, "rm", "a").exit_code == 0  # stdin is not a terminal: no question
    assert wtpy(runner, "rm", "b", "--yes").exit_code == 0
    assert fake.webtasks == {}
    assert wtpy(runner, "rm", "a", "-y").exit_code == 5


def test_rm_confirms_on_a_terminal(
    runner: CliRunner, profile: Path, fake: FakeWtpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_main, "_stdin_is_tty", lambda: True)
    fake.add("a")
    cancelled = wtpy(runner, "rm", "a", input="n\n")
    assert cancelled.exit_code == 1
    assert (
        "Delete webtask default/a?" in cancelled.stderr and "error: cancelled" in cancelled.stderr
    )
    assert ("default", "a") in fake.webtasks and not [
        r for r in fake.requests if r.method == "DELETE"
    ]
    assert wtpy(runner, "rm", "a", input="\n").exit_code == 1  # default is no
    confirmed = wtpy(runner, "rm", "a", input="y\n")
    assert confirmed.exit_code == 0 and "deleted webtask default/a" in confirmed.stderr
    assert fake.webtasks == {}


# -- invoke ------------------------------------------------------------------------------------


def test_invoke_sends_the_webtask_secret(runner: CliRunner, profile: Path, fake: FakeWtpy) -> None:
    fake.add(
        "r",
        {"wt-compiler": CC, "auth0-extension-secret": SECRET},
        {"auth0-extension-secret": SECRET},
    )
    result = wtpy(runner, "invoke", "r", "--data", '{"client": {"id": "c"}, "scope": ["a"]}')
    assert result.exit_code == 0, result.output
    envelope = json.loads(result.stdout)
    assert envelope["status"] == "success"
    assert envelope["data"]["body"] == {"client": {"id": "c"}, "scope": ["a"]}
    assert fake.last("GET").url.params.get("decrypt") == "1"
    run = fake.last("POST", "/api/run")
    assert run.headers["authorization"] == f"Bearer {SECRET}"
    assert run.headers["content-type"] == "application/json"
    assert ADMIN not in str(run.headers)  # the management token never reaches the hook
    assert SECRET not in result.output


def test_invoke_error_envelope_exits_3(runner: CliRunner, profile: Path, fake: FakeWtpy) -> None:
    fake.add("r", {"wt-compiler": CC}, {"auth0-extension-secret": SECRET})
    result = wtpy(runner, "invoke", "r", "--no-auth", "-d", "{}")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["data"]["message"] == "Unauthorized extensibility point"
    assert (
        "error: the hook answered an error envelope: Error: Unauthorized extensibility point"
        in result.stderr
    )
    assert "authorization" not in fake.last("POST", "/api/run").headers
    assert not [
        r for r in fake.requests if r.url.path.startswith("/api/webtask")
    ]  # --no-auth: no fetch


def test_invoke_options(runner: CliRunner, profile: Path, fake: FakeWtpy, tmp_path: Path) -> None:
    fake.add("plain")
    data_file = write(tmp_path / "body.json", '{"audience": "x"}')
    result = wtpy(runner, "invoke", "plain", "--data-file", data_file, "-X", "put", "--path", "sub/dir",
                  "-H", "X-Trace: abc:def", "-H", "Content-Type: application/vnd.x+json")  # fmt: skip
    assert result.exit_code == 0, result.output
    run = fake.last(prefix="/api/run")
    assert run.method == "PUT" and run.url.path == "/api/run/default/plain/sub/dir"
    assert run.headers["x-trace"] == "abc:def"
    assert run.headers["content-type"] == "application/vnd.x+json"
    assert "authorization" not in run.headers  # no auth0-extension-secret on this webtask
    assert json.loads(result.stdout)["data"]["body"] == {"audience": "x"}
    no_body = wtpy(runner, "invoke", "plain")
    assert no_body.exit_code == 0 and fake.last(prefix="/api/run").content == b""


def test_invoke_explicit_authorization_wins(
    runner: CliRunner, profile: Path, fake: FakeWtpy
) -> None:
    fake.add("r", {"wt-compiler": CC}, {"auth0-extension-secret": SECRET})
    result = wtpy(runner, "invoke", "r", "-H", "Authorization: Bearer wrong")
    assert result.exit_code == 3
    assert fake.last(prefix="/api/run").headers["authorization"] == "Bearer wrong"


def test_invoke_usage_and_http_errors(runner: CliRunner, profile: Path, fake: FakeWtpy) -> None:
    bad_json = wtpy(runner, "invoke", "r", "--data", "{nope")
    assert bad_json.exit_code == 2 and "--data is not valid JSON" in bad_json.stderr
    both = wtpy(runner, "invoke", "r", "--data", "{}", "--data-file", "x")
    assert both.exit_code == 2 and "not both" in both.stderr
    assert wtpy(runner, "invoke", "r", "-H", "novalue").exit_code == 2
    assert fake.requests == []
    assert wtpy(runner, "invoke", "missing").exit_code == 5
    assert wtpy(runner, "invoke", "missing", "--no-auth").exit_code == 5


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, 6),
        (413, 6),
        (415, 6),
        (422, 6),
        (401, 8),
        (403, 8),
        (404, 5),
        (500, 7),
        (502, 7),
        (503, 7),
    ],
)
def test_api_error_status_to_exit_code(
    runner: CliRunner, profile: Path, fake: FakeWtpy, tmp_path: Path, status: int, code: int
) -> None:
    fake.forced = (status, "some_code")
    rule = write(tmp_path / "r.py", CODE)
    for args in (
        ["ls"],
        ["inspect", "r"],
        ["rm", "r", "-y"],
        ["create", rule],
        ["update", "r", "-m", "a=b"],
        ["invoke", "r"],
    ):
        result = wtpy(runner, *args)
        assert result.exit_code == code, (args, result.output)
        assert (
            result.stderr
            == f"error: forced failure (HTTP {status} some_code)"
            + ("; check the profile's token (`wtpy init`)" if code == 8 else "")
            + "\n"
        )
    assert exit_code_for(ApiError(status, "x", "y")) == code


def test_non_json_error_body(
    runner: CliRunner, profile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(502, text="<html>bad gateway</html>")
    )
    monkeypatch.setattr(
        cli_main,
        "make_client",
        lambda url, token: ManagementClient(url, token, transport=transport),
    )
    result = wtpy(runner, "ls")
    assert (
        result.exit_code == 7
        and result.stderr == "error: HTTP 502 Bad Gateway (HTTP 502 bad_gateway)\n"
    )


def test_connection_refused_exits_7(
    runner: CliRunner, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("WTPY_URL", url)
    monkeypatch.setenv("WTPY_TOKEN", ADMIN)
    for args in (
        ["ls"],
        ["inspect", "x"],
        ["rm", "x", "-y"],
        ["invoke", "x"],
        ["invoke", "x", "--no-auth"],
    ):
        result = wtpy(runner, *args)
        assert result.exit_code == 7, args
        assert result.stderr == f"error: cannot reach wtpy at {url}: connection refused\n"


def test_timeout_exits_7(runner: CliRunner, profile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    transport = httpx.MockTransport(slow)
    monkeypatch.setattr(
        cli_main,
        "make_client",
        lambda url, token: ManagementClient(url, token, transport=transport),
    )
    result = wtpy(runner, "ls")
    assert (
        result.exit_code == 7 and result.stderr == f"error: cannot reach wtpy at {URL}: timed out\n"
    )

"""The `wtpy` console script: serve the runtime and manage webtasks over its HTTP API."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
import orjson
import yaml

from wtpy import __version__
from wtpy.contract import MAX_NAME_LENGTH, SECRET_NAME, valid_name

from ._api import ApiError, ManagementClient, UnreachableError
from ._output import echo_json, info, webtask_details, webtask_table
from ._profiles import (
    DEFAULT_CONTAINER,
    DEFAULT_PROFILE,
    DEFAULT_URL,
    Profile,
    ProfileError,
    profiles_path,
    resolve_profile,
    save_profile,
)

__all__ = [
    "EXIT_BAD_REQUEST",
    "EXIT_CANCELLED",
    "EXIT_HOOK_ERROR",
    "EXIT_INVALID",
    "EXIT_NOT_FOUND",
    "EXIT_SERVER",
    "EXIT_UNAUTHORISED",
    "CliError",
    "WtpyGroup",
    "cli",
    "exit_code_for",
    "get_profile",
    "main",
    "make_client",
    "profile_options",
]

# Exit codes: the original `wt` CLI's, plus 3 for "the hook answered an error envelope".
EXIT_CANCELLED = 1
EXIT_INVALID = 2
EXIT_HOOK_ERROR = 3
EXIT_NOT_FOUND = 5
EXIT_BAD_REQUEST = 6
EXIT_SERVER = 7
EXIT_UNAUTHORISED = 8

AUTH_SECRET = SECRET_NAME  # the meta the hook command reads the bearer from
F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """A failure reported as one line `error: ...` on stderr, with a chosen exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_INVALID) -> None:
        super().__init__(message)
        # click types exit_code a ClassVar, but its main() exits with the instance's value.
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def exit_code_for(error: ApiError) -> int:
    """400/413/415/422 (any other 4xx too) -> 6, 401/403 -> 8, 404 -> 5, 5xx/unreachable -> 7."""
    status = error.status
    if isinstance(error, UnreachableError) or status == 0 or status >= 500:
        return EXIT_SERVER
    if status in (401, 403):
        return EXIT_UNAUTHORISED
    if status == 404:
        return EXIT_NOT_FOUND
    if 400 <= status < 500:
        return EXIT_BAD_REQUEST
    return EXIT_SERVER


def _api_error_message(error: ApiError) -> str:
    if isinstance(error, UnreachableError) or error.status == 0:
        return error.message
    message = f"{error.message} (HTTP {error.status} {error.code})"
    if error.status in (401, 403):
        message += "; check the profile's token (`wtpy init`)"
    return message


class WtpyGroup(click.Group):
    """A click group that turns ApiError/ProfileError into `error: ...` lines and exit codes,
    and can register subcommands lazily (imported only when used or listed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, str] = {}

    def add_lazy_command(self, name: str, import_path: str) -> None:
        """Register `name` as "package.module:attribute", imported on first use."""
        self._lazy[name] = import_path

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self._lazy:
            module_name, _, attribute = self._lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module_name), attribute)
            self.add_command(command, cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as error:
            raise CliError(_api_error_message(error), exit_code_for(error)) from None
        except ProfileError as error:
            raise CliError(str(error), EXIT_INVALID) from None


def make_client(url: str, token: str) -> ManagementClient:
    """Every command's HTTP client comes from here (tests monkeypatch it with a MockTransport)."""
    return ManagementClient(url, token)


# -- shared options and helpers -------------------------------------------------------------


def _check_name(what: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return value
        if not valid_name(value):
            raise CliError(
                f"invalid {what} name {value!r}: use 1 to {MAX_NAME_LENGTH} of the characters "
                "a-z A-Z 0-9 - . _ ~ ! $ + = : @ (not '.' or '..')"
            )
        return value

    return callback


def profile_options(function: F) -> F:
    """Add `-p/--profile` and `--container` to a command (passed on as `profile`, `container`)."""
    function = click.option(
        "--container",
        "-c",
        metavar="NAME",
        callback=_check_name("container"),
        help="Container to use instead of the profile's (also $WTPY_CONTAINER).",
    )(function)
    function = click.option(
        "--profile",
        "-p",
        metavar="NAME",
        help="Profile from profiles.yaml to use (also $WTPY_PROFILE; default: the file's default).",
    )(function)
    return function


def _warn(message: str) -> None:
    info(f"warning: {message}")


def get_profile(profile: str | None, container: str | None) -> Profile:
    """The resolved profile for a command's -p/--container options (raises ProfileError)."""
    resolved = resolve_profile(profile, container=container, warn=_warn)
    if not valid_name(resolved.container):
        raise CliError(
            f"invalid container name {resolved.container!r} in profile {resolved.name!r}"
        )
    return resolved


@contextmanager
def _client(profile: Profile) -> Iterator[ManagementClient]:
    client = make_client(profile.url, profile.token)
    try:
        yield client
    finally:
        client.close()


def _stdin_is_tty() -> bool:
    return sys.stdin.isatty()


def _read_text(path: str, what: str) -> str:
    """A UTF-8 file's text ("-" reads stdin); a clear exit-2 error when it cannot be read."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).expanduser().read_bytes()
    except FileNotFoundError:
        raise CliError(f"cannot read {what} {path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"cannot read {what} {path}: it is a directory") from None
    except OSError as error:
        raise CliError(f"cannot read {what} {path}: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CliError(f"{what} {path} is not UTF-8 text (byte {error.start})") from None


def parse_pairs(values: Sequence[str], option: str) -> dict[str, str]:
    """KEY=VALUE arguments, split on the first '='; later ones win. Values are never echoed."""
    result: dict[str, str] = {}
    for index, item in enumerate(values, 1):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise CliError(f"{option} expects KEY=VALUE; occurrence {index} has no '='")
        if not key:
            raise CliError(f"{option} expects KEY=VALUE; occurrence {index} has an empty key")
        result[key] = value
    return result


def _scalar(value: Any, key: str, where: str, allow_null: bool) -> str | None:
    if value is None:
        if allow_null:
            return None
        raise CliError(
            f"{where}: value of {key!r} is null (only `wtpy update` files may delete keys)"
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise CliError(f"{where}: value of {key!r} must be a string, not {type(value).__name__}")


def _parse_dotenv(text: str, where: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise CliError(f"{where}: line {number} is not KEY=VALUE")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        result[key] = value
    return result


def _parse_structured(text: str, where: str, json_only: bool) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        if json_only:
            raise CliError(
                f"{where} is not valid JSON (line {error.lineno}, column {error.colno})"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        # Only the position: a YAML error's snippet could show a secret value.
        mark = getattr(error, "problem_mark", None)
        where_in = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise CliError(f"{where} is not valid YAML{where_in}") from None


def read_mapping_file(path: str, option: str, *, allow_null: bool = False) -> dict[str, str | None]:
    """A meta/secrets file: a YAML or JSON mapping, or .env-style KEY=VALUE lines.

    .json -> JSON, .yaml/.yml -> YAML, .env -> KEY=VALUE lines; other names are sniffed.
    """
    text = _read_text(path, f"{option}")
    where = f"{option} {path}"
    suffix = Path(path).suffix.lower()
    name = Path(path).name.lower()
    if suffix == ".env" or name.startswith(".env"):
        data: Any = _parse_dotenv(text, where)
    elif suffix == ".json":
        data = _parse_structured(text, where, json_only=True)
    elif suffix in (".yaml", ".yml"):
        data = _parse_structured(text, where, json_only=False)
    else:
        first = next(
            (
                s
                for s in (line.strip() for line in text.splitlines())
                if s and not s.startswith("#")
            ),
            "",
        )
        key, sep, _ = first.removeprefix("export ").partition("=")
        looks_dotenv = bool(sep) and bool(key.strip()) and not any(c in key for c in ":{\"' ")
        data = _parse_dotenv(text, where) if looks_dotenv else _parse_structured(text, where, False)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CliError(f"{where} must hold a mapping of KEY: VALUE")
    return {str(key): _scalar(value, str(key), where, allow_null) for key, value in data.items()}


def _merged(
    file: str | None, flags: Sequence[str], option: str, file_option: str, *, allow_null: bool
) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    if file:
        values.update(read_mapping_file(file, file_option, allow_null=allow_null))
    values.update(parse_pairs(flags, option))
    return values


def _name_from_file(file: str, name: str | None) -> str:
    if name:
        return name
    if file == "-":
        raise CliError("reading code from stdin needs --name")
    stem = Path(file).stem
    if not valid_name(stem):
        raise CliError(f"cannot use the file name {stem!r} as a webtask name; pass --name")
    return stem


# -- the group -------------------------------------------------------------------------------

EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  cancelled
  2  invalid input or usage (also: no profile; run `wtpy init`)
  3  `invoke`: the hook answered an error envelope
  5  not found
  6  bad request (HTTP 400, 413, 415, 422)
  7  server error (HTTP 5xx) or server unreachable
  8  not authorised (HTTP 401, 403)
"""


@click.group(
    cls=WtpyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(
    __version__, "--version", "-V", prog_name="wtpy", help="Show the version and exit."
)
def cli() -> None:
    """wtpy: a Webtask-compatible hook runtime.

    Run the server with `wtpy serve`, point the CLI at it with `wtpy init`, then create,
    update, list, inspect, invoke and remove webtasks. Connection settings come from a
    profile (profiles.yaml in $WTPY_CONFIG_DIR, $XDG_CONFIG_HOME/wtpy or ~/.config/wtpy);
    $WTPY_URL, $WTPY_TOKEN and $WTPY_CONTAINER override its fields.
    """


cli.add_lazy_command("logs", "wtpy.cli._logs:logs")  # real-time logs (issue 3)
cli.add_lazy_command("token", "wtpy.cli._tokens:token")  # scoped management tokens (issue 5)
cli.add_lazy_command("tokenserver", "wtpy.tokenserver:command")  # reference OAuth2 server (issue 4)


# -- serve -----------------------------------------------------------------------------------


@cli.command(short_help="Run the wtpy server.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    default=8721,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port to listen on.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Data directory (store, keys, admin token). Default: $WTPY_DATA_DIR, "
    "else $XDG_DATA_HOME/wtpy, else ~/.local/share/wtpy.",
)
@click.option(
    "--database",
    envvar="WTPY_DATABASE_URL",
    help="Where webtasks and tokens live: sqlite:///ABSOLUTE/PATH or memory:// (nothing "
    "kept). Default: DATA_DIR/wtpy.sqlite3. Also $WTPY_DATABASE_URL.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Sandbox worker processes (default: the number of CPUs plus one, at least 2).",
)
@click.option(
    "--unsafe-no-os-sandbox",
    is_flag=True,
    help="Development only: run hooks without the OS sandbox (namespaces, seccomp, uid per "
    "worker) where it cannot be set up; logged loudly. Also $WTPY_UNSAFE_NO_OS_SANDBOX=1.",
)
def serve(
    host: str, port: int, data_dir: Path | None, database: str | None, workers: int | None,
    unsafe_no_os_sandbox: bool,
) -> None:  # fmt: skip
    """Run the wtpy runtime server in the foreground.

    On first start the admin token is printed once; it is kept in DATA_DIR/admin.token.
    """
    from wtpy.server import serve as run_server
    from wtpy.storage import StorageError, parse_database_url

    extra: dict[str, object] = {"os_sandbox": False} if unsafe_no_os_sandbox else {}
    if database:
        try:
            parse_database_url(database)
        except StorageError as exc:
            raise CliError(f"--database: {exc}") from None
        extra["database"] = database
    run_server(
        host=host,
        port=port,
        data_dir=data_dir.expanduser() if data_dir is not None else None,
        workers=workers,
        **extra,
    )


# -- init ------------------------------------------------------------------------------------


def _check_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise CliError(f"--url must be an http:// or https:// URL, got {url!r}")
    return url.rstrip("/")


def _token_from_data_dir(data_dir: Path) -> str:
    path = data_dir.expanduser() / "admin.token"
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise CliError(
            f"no admin token at {path}; start `wtpy serve --data-dir {data_dir}` once to create it"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read {path}: {error}") from None
    if not token:
        raise CliError(f"{path} is empty")
    return token


@cli.command(short_help="Save and check a connection profile.")
@click.option("--url", default=DEFAULT_URL, show_default=True, help="Base URL of the wtpy server.")
@click.option(
    "--token",
    help="Management (admin) token. Default: read DATA_DIR/admin.token when --data-dir is "
    "given, else prompt for it (hidden).",
)
@click.option(
    "--container",
    "-c",
    default=DEFAULT_CONTAINER,
    show_default=True,
    callback=_check_name("container"),
    help="Container the profile works in.",
)
@click.option(
    "--profile",
    "-p",
    envvar="WTPY_PROFILE",
    default=DEFAULT_PROFILE,
    show_default=True,
    help="Name of the profile to write (also $WTPY_PROFILE).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Local server data directory to read the admin token from.",
)
@click.option("--make-default", is_flag=True, help="Make this profile the default one.")
@click.option("--no-verify", is_flag=True, help="Save without checking the URL and token.")
def init(
    url: str,
    token: str | None,
    container: str,
    profile: str,
    data_dir: Path | None,
    make_default: bool,
    no_verify: bool,
) -> None:
    """Save a connection profile (URL, token, container) and check it against the server.

    The profile goes to profiles.yaml (mode 0600) in $WTPY_CONFIG_DIR, else
    $XDG_CONFIG_HOME/wtpy, else ~/.config/wtpy. It becomes the default profile when it is
    the first one or with --make-default.
    """
    url = _check_url(url)
    if not profile.strip():
        raise CliError("--profile must not be empty")
    if token is None:
        if data_dir is not None:
            token = _token_from_data_dir(data_dir)
        else:
            token = click.prompt("Admin token", hide_input=True, err=True)
    token = (token or "").strip()
    if not token:
        raise CliError("the token must not be empty")

    new = Profile(name=profile, url=url, token=token, container=container)
    path = profiles_path()
    try:
        is_default = save_profile(path, new, make_default=make_default)
    except ProfileError as error:
        raise CliError(str(error)) from None
    except OSError as error:
        raise CliError(f"cannot write {path}: {error.strerror or error}") from None
    suffix = " (default)" if is_default else ""
    info(f"profile {profile!r}{suffix} saved to {path}")
    if no_verify:
        return
    try:
        with _client(new) as client:
            webtasks = client.list_webtasks(container)
    except ApiError as error:
        raise CliError(
            f"profile saved, but verification failed: {_api_error_message(error)}",
            exit_code_for(error),
        ) from None
    count = len(webtasks)
    info(
        f"verified: {url} accepted the token "
        f"({count} webtask{'s' if count != 1 else ''} in container {container!r})"
    )


# -- create / update -------------------------------------------------------------------------


def _meta_option(function: F) -> F:
    return click.option(
        "--meta",
        "-m",
        "meta",
        multiple=True,
        metavar="KEY=VALUE",
        help="Set a meta entry (repeatable; split on the first '='; wins over --meta-file).",
    )(function)


def _secret_option(function: F) -> F:
    return click.option(
        "--secret",
        "-s",
        "secret",
        multiple=True,
        metavar="KEY=VALUE",
        help="Set a secret (repeatable; split on the first '='; wins over --secrets-file).",
    )(function)


def _files_options(function: F) -> F:
    function = click.option(
        "--secrets-file",
        metavar="FILE",
        help="Secrets from a YAML/JSON mapping or .env-style KEY=VALUE lines.",
    )(function)
    function = click.option(
        "--meta-file",
        metavar="FILE",
        help="Meta from a YAML/JSON mapping or .env-style KEY=VALUE lines.",
    )(function)
    return function


@cli.command(short_help="Create a webtask from a file; print its URL.")
@click.argument("file", metavar="FILE")
@click.option(
    "--name", "-n", callback=_check_name("webtask"), help="Webtask name (default: FILE's stem)."
)
@_meta_option
@_secret_option
@_files_options
@profile_options
def create(
    file: str,
    name: str | None,
    meta: tuple[str, ...],
    secret: tuple[str, ...],
    meta_file: str | None,
    secrets_file: str | None,
    profile: str | None,
    container: str | None,
) -> None:
    """Create (or replace) a webtask from a Python FILE ("-" reads stdin) and print its URL.

    Only the URL goes to stdout, so `URL=$(wtpy create rule.py ...)` works.
    """
    name = _name_from_file(file, name)
    code = _read_text(file, "FILE")
    meta_values = _merged(meta_file, meta, "--meta", "--meta-file", allow_null=False)
    secret_values = _merged(secrets_file, secret, "--secret", "--secrets-file", allow_null=False)
    target = get_profile(profile, container)
    with _client(target) as client:
        webtask, created = client.put(
            target.container,
            name,
            code,
            {k: v for k, v in meta_values.items() if v is not None},
            {k: v for k, v in secret_values.items() if v is not None},
        )
    click.echo(webtask.get("url", ""))
    verb = "created" if created else "replaced"
    info(f"{verb} webtask {target.container}/{name} (version {webtask.get('version', '?')})")


def _with_unsets(
    values: dict[str, str | None], unset: Sequence[str], option: str, set_option: str
) -> dict[str, str | None]:
    for key in unset:
        if values.get(key) is not None:
            raise CliError(f"{option} {key!r} conflicts with {set_option} {key}=...")
        values[key] = None
    return values


@cli.command(short_help="Change a webtask's code, meta or secrets.")
@click.argument("name", callback=_check_name("webtask"))
@click.argument("file", required=False, metavar="[FILE]")
@_meta_option
@_secret_option
@_files_options
@click.option(
    "--unset-meta", multiple=True, metavar="KEY", help="Delete a meta entry (repeatable)."
)
@click.option("--unset-secret", multiple=True, metavar="KEY", help="Delete a secret (repeatable).")
@profile_options
def update(
    name: str,
    file: str | None,
    meta: tuple[str, ...],
    secret: tuple[str, ...],
    meta_file: str | None,
    secrets_file: str | None,
    unset_meta: tuple[str, ...],
    unset_secret: tuple[str, ...],
    profile: str | None,
    container: str | None,
) -> None:
    """Change a webtask in place: new code from FILE, and/or meta and secrets merged per key.

    Keys not mentioned are kept; --unset-* (or null values in a YAML/JSON file) delete keys.
    """
    code = _read_text(file, "FILE") if file is not None else None
    meta_values = _with_unsets(
        _merged(meta_file, meta, "--meta", "--meta-file", allow_null=True),
        unset_meta,
        "--unset-meta",
        "--meta",
    )
    secret_values = _with_unsets(
        _merged(secrets_file, secret, "--secret", "--secrets-file", allow_null=True),
        unset_secret,
        "--unset-secret",
        "--secret",
    )
    if code is None and not meta_values and not secret_values:
        raise CliError(
            "nothing to update: give FILE, --meta, --secret, --meta-file, --secrets-file, "
            "--unset-meta or --unset-secret"
        )
    target = get_profile(profile, container)
    with _client(target) as client:
        webtask = client.patch(
            target.container, name, code=code, meta=meta_values, secrets=secret_values
        )
    click.echo(webtask.get("url", ""))
    info(f"updated webtask {target.container}/{name} (version {webtask.get('version', '?')})")


# -- ls / inspect / rm -----------------------------------------------------------------------


@cli.command(name="ls", short_help="List webtasks.")
@click.option(
    "--meta",
    "-m",
    "meta",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only webtasks whose meta KEY equals VALUE (repeatable; all must match).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the raw JSON array instead of a table."
)
@profile_options
def ls(meta: tuple[str, ...], as_json: bool, profile: str | None, container: str | None) -> None:
    """List the webtasks of a container: name, compiler, last update, URL."""
    filters = parse_pairs(meta, "--meta")
    target = get_profile(profile, container)
    with _client(target) as client:
        webtasks = client.list_webtasks(target.container, filters)
    if as_json:
        echo_json(webtasks)
    elif webtasks:
        webtask_table(webtasks)
    else:
        info(f"no webtasks in container {target.container!r}")


@cli.command(short_help="Show one webtask.")
@click.argument("name", callback=_check_name("webtask"))
@click.option("--decrypt", is_flag=True, help="Show secret values and unmasked meta.")
@click.option("--fetch-code", is_flag=True, help="Show the webtask's code too.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON object.")
@profile_options
def inspect(
    name: str,
    decrypt: bool,
    fetch_code: bool,
    as_json: bool,
    profile: str | None,
    container: str | None,
) -> None:
    """Show a webtask: URL, meta, secret names (values with --decrypt), version, times."""
    target = get_profile(profile, container)
    with _client(target) as client:
        webtask = client.get(target.container, name, decrypt=decrypt)
    if not fetch_code:
        webtask.pop("code", None)
    if as_json:
        echo_json(webtask)
    else:
        webtask_details(webtask, decrypted=decrypt, show_code=fetch_code)


@cli.command(short_help="Delete a webtask.")
@click.argument("name", callback=_check_name("webtask"))
@click.option(
    "--yes",
    "-y",
    is_flag=True,
    help="Do not ask for confirmation (never asked when stdin is not a terminal).",
)
@profile_options
def rm(name: str, yes: bool, profile: str | None, container: str | None) -> None:
    """Delete a webtask."""
    target = get_profile(profile, container)
    if (
        not yes
        and _stdin_is_tty()
        and not click.confirm(f"Delete webtask {target.container}/{name}?", default=False, err=True)
    ):
        raise CliError("cancelled; nothing was deleted", EXIT_CANCELLED)
    with _client(target) as client:
        client.delete(target.container, name)
    info(f"deleted webtask {target.container}/{name}")


# -- invoke ----------------------------------------------------------------------------------


def _parse_headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for index, item in enumerate(values, 1):
        key, sep, value = item.partition(":")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"--header expects NAME:VALUE; occurrence {index} is not")
        headers[key] = value.strip()
    return headers


def _payload(data: str | None, data_file: str | None) -> bytes | None:
    if data is not None and data_file is not None:
        raise CliError("give --data or --data-file, not both")
    text = data if data is not None else _read_text(data_file, "--data-file") if data_file else None
    if text is None:
        return None
    option = "--data" if data is not None else f"--data-file {data_file}"
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise CliError(f"{option} is not valid JSON: {error}") from None
    return text.encode("utf-8")


@cli.command(short_help="Call a webtask with a JSON payload.")
@click.argument("name", callback=_check_name("webtask"))
@click.option("--data", "-d", metavar="JSON", help="JSON request body.")
@click.option(
    "--data-file", metavar="FILE", help='File holding the JSON request body ("-" for stdin).'
)
@click.option("--method", "-X", default="POST", show_default=True, help="HTTP method.")
@click.option(
    "--path",
    "sub_path",
    default="",
    metavar="SUB",
    help="Sub-path after the webtask's URL, e.g. /x/y.",
)
@click.option(
    "--header", "-H", multiple=True, metavar="NAME:VALUE", help="Extra request header (repeatable)."
)
@click.option(
    "--no-auth",
    is_flag=True,
    help=f"Do not send 'Authorization: Bearer <{AUTH_SECRET}>' (and do not fetch the secret).",
)
@profile_options
def invoke(
    name: str,
    data: str | None,
    data_file: str | None,
    method: str,
    sub_path: str,
    header: tuple[str, ...],
    no_auth: bool,
    profile: str | None,
    container: str | None,
) -> None:
    """Call a webtask the way a token server does and print the envelope.

    Sends the webtask's auth0-extension-secret as the bearer token (read with the profile's
    management token). Exit status 0 when the envelope's status is "success", 3 when it is
    an error envelope, and the usual codes when the HTTP call itself fails.
    """
    body = _payload(data, data_file)
    headers = _parse_headers(header)
    target = get_profile(profile, container)
    with _client(target) as client:
        explicit_auth = any(key.lower() == "authorization" for key in headers)
        if not no_auth and not explicit_auth:
            secrets = client.get(target.container, name, decrypt=True).get("secrets")
            secret = secrets.get(AUTH_SECRET) if isinstance(secrets, Mapping) else None
            if secret:
                headers["Authorization"] = f"Bearer {secret}"
        envelope = client.run(
            target.container, name, body, method=method, path=sub_path, headers=headers
        )
    echo_json(envelope)
    status = envelope.get("status") if isinstance(envelope, Mapping) else None
    if status != "success":
        error = envelope.get("data") if isinstance(envelope, Mapping) else None
        detail = ""
        if isinstance(error, Mapping) and error.get("message"):
            detail = f": {error.get('name') or 'Error'}: {error['message']}"
        click.echo(f"error: the hook answered an error envelope{detail}", err=True)
        raise click.exceptions.Exit(EXIT_HOOK_ERROR)


# -- entry point -----------------------------------------------------------------------------


def main(args: Sequence[str] | None = None) -> Any:
    """The console script (`wtpy = "wtpy.cli:main"`); exits the process like any click command."""
    return cli.main(args=list(args) if args is not None else None, prog_name="wtpy")

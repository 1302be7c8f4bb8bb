"""`wtpy tokenserver --config FILE [--host H] [--port P]`: serve the token server with uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ._errors import ConfigError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "command", "tokenserver"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8722


class _ConfigProblem(click.ClickException):
    exit_code = 2  # the wtpy CLI's "invalid input" exit code

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@click.command(
    "tokenserver",
    help="Run the reference OAuth2 token server (POST /oauth/token, GET /.well-known/jwks.json).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    envvar="WTPY_TOKENSERVER_CONFIG",
    show_envvar=True,
    help="YAML configuration: issuer, signing key, hooks, clients, users.",
)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Interface to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
    help="TCP port to listen on.",
)  # fmt: skip
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Server log level (hook secrets are never logged).",
)
def command(config_path: Path, host: str, port: int, log_level: str) -> None:
    import uvicorn

    from ._app import create_app
    from ._config import load_config

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:%(name)s: %(message)s")
    if log_level != "debug":  # httpx logs every request URL at INFO
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = load_config(config_path)
        app = create_app(config)
    except ConfigError as error:
        raise _ConfigProblem(str(error)) from None
    server = app.state.tokenserver
    click.echo(
        f"wtpy token server on http://{host}:{port} (issuer {config.issuer}, key id {server.key.kid})",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")


tokenserver = command  # the name wtpy/cli/__init__.py's example registers lazily

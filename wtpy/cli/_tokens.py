"""`wtpy token create|ls|revoke`: scoped management tokens (the profile's token must be the admin's)."""

from __future__ import annotations

import re

import click
from rich.table import Table

from ._main import CliError, _check_name, cli, get_profile, make_client, profile_options
from ._output import echo_json, info, stdout_printer

__all__ = ["parse_expiry", "token"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdwy]?)\s*", re.IGNORECASE | re.ASCII)


def parse_expiry(text: str) -> float:
    """Seconds of a duration like 30d, 12h, 90m, 45s, 2w, 1y (a bare number is seconds)."""
    match = _DURATION_RE.fullmatch(text)
    if not match:
        raise CliError(
            f"invalid --expires {text!r}: use a duration such as 3600, 90m, 12h, 30d, 2w or 1y"
        )
    seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if seconds < 1:
        raise CliError("--expires must be at least one second")
    return seconds


@cli.group(short_help="Create, list and revoke scoped management tokens.")
def token() -> None:
    """Scoped management tokens (needs the admin token in the profile).

    A token scoped to a container reaches only that container's webtasks, secrets and logs;
    with --name, only that one webtask. Tokens may expire and can be revoked.
    """


@token.command(short_help="Issue a token; print it (shown once).")
@click.option("--name", "-n", metavar="NAME", callback=_check_name("webtask"),
              help="Scope the token to this one webtask of the container.")  # fmt: skip
@click.option(
    "--expires",
    "-e",
    metavar="DURATION",
    help="Lifetime, e.g. 3600, 90m, 12h, 30d, 1y (default: never).",
)
@click.option("--description", "-d", metavar="TEXT", help="A note for `wtpy token ls`.")
@profile_options
def create(
    name: str | None,
    expires: str | None,
    description: str | None,
    profile: str | None,
    container: str | None,
) -> None:
    """Issue a token for --container (default: the profile's), optionally one webtask.

    Only the token goes to stdout, so `TOKEN=$(wtpy token create -c acme)` works; it is not
    stored anywhere and cannot be shown again.
    """
    expires_in = parse_expiry(expires) if expires is not None else None
    target = get_profile(profile, container)
    with make_client(target.url, target.token) as client:
        created = client.create_token(
            target.container, name, expires_in=expires_in, description=description
        )
    scope = target.container if name is None else f"{target.container}/{name}"
    until = created.get("expires_at") or "never"
    info(f"created token {created.get('id')} for {scope} (expires: {until}); it is shown only once")
    click.echo(created["token"])


@token.command(name="ls", short_help="List tokens (never their secrets).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON array.")
@profile_options
def ls(as_json: bool, profile: str | None, container: str | None) -> None:
    """List every token: id, scope, status, expiry, description (--container filters)."""
    target = get_profile(profile, None)
    with make_client(target.url, target.token) as client:
        tokens = client.list_tokens(container)
    if as_json:
        echo_json(tokens)
        return
    if not tokens:
        info("no tokens")
        return
    table = Table(
        "ID", "CONTAINER", "WEBTASK", "STATUS", "EXPIRES", "CREATED", "DESCRIPTION", box=None
    )
    for row in tokens:
        table.add_row(
            str(row.get("id", "")),
            str(row.get("container", "")),
            str(row.get("name") or "*"),
            str(row.get("status", "")),
            str(row.get("expires_at") or "never"),
            str(row.get("created_at", "")),
            str(row.get("description") or ""),
        )
    stdout_printer().print(table)


@token.command(short_help="Revoke a token by id.")
@click.argument("token_id", metavar="ID")
@profile_options
def revoke(token_id: str, profile: str | None, container: str | None) -> None:
    """Revoke a token for good (effective for the next request)."""
    if not re.fullmatch(r"[0-9a-f]{16}", token_id):
        raise CliError(
            f"invalid token id {token_id!r}: ids are 16 hex digits (see `wtpy token ls`)"
        )
    target = get_profile(profile, container)
    with make_client(target.url, target.token) as client:
        client.revoke_token(token_id)
    info(f"revoked token {token_id}")

"""wtpy.cli: the `wtpy` console script (click + rich).

Other features add subcommands to `cli`, either directly::

    from wtpy.cli import cli, profile_options, get_profile, make_client

    @cli.command()
    @profile_options
    def logs(profile: str | None, container: str | None) -> None: ...

(imported from this package so the command is registered), or lazily, so their
modules load only when the command runs or `wtpy --help` lists it::

    cli.add_lazy_command("tokenserver", "wtpy.tokenserver._cli:tokenserver")

Raise CliError(message, exit_code) for a one-line `error: ...`; ApiError and
ProfileError raised inside any subcommand are turned into the right exit code.
"""

from __future__ import annotations

from ._api import ApiError, ManagementClient, UnreachableError
from ._main import (
    EXIT_BAD_REQUEST,
    EXIT_CANCELLED,
    EXIT_HOOK_ERROR,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_SERVER,
    EXIT_UNAUTHORISED,
    CliError,
    WtpyGroup,
    cli,
    exit_code_for,
    get_profile,
    main,
    make_client,
    profile_options,
)
from ._profiles import Profile, ProfileError, config_dir, profiles_path, resolve_profile

__all__ = [
    "EXIT_BAD_REQUEST",
    "EXIT_CANCELLED",
    "EXIT_HOOK_ERROR",
    "EXIT_INVALID",
    "EXIT_NOT_FOUND",
    "EXIT_SERVER",
    "EXIT_UNAUTHORISED",
    "ApiError",
    "CliError",
    "ManagementClient",
    "Profile",
    "ProfileError",
    "UnreachableError",
    "WtpyGroup",
    "cli",
    "config_dir",
    "exit_code_for",
    "get_profile",
    "main",
    "make_client",
    "profile_options",
    "profiles_path",
    "resolve_profile",
]

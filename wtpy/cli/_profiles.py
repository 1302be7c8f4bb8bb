"""Connection profiles: `profiles.yaml` in the user's config dir, plus environment overrides.

File format (mode 0600)::

    default: local
    profiles:
      local: {url: "http://127.0.0.1:8721", token: "...", container: default}
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wtpy.contract import DEFAULT_URL

__all__ = [
    "DEFAULT_CONTAINER",
    "DEFAULT_PROFILE",
    "DEFAULT_URL",
    "PROFILES_FILE",
    "Profile",
    "ProfileError",
    "config_dir",
    "load_profiles",
    "profiles_path",
    "resolve_profile",
    "save_profile",
]

PROFILES_FILE = "profiles.yaml"
DEFAULT_PROFILE = "default"
DEFAULT_CONTAINER = "default"


class ProfileError(Exception):
    """A profile that cannot be found, read or used; the message says what to do."""


@dataclass(frozen=True)
class Profile:
    name: str
    url: str
    token: str
    container: str = DEFAULT_CONTAINER

    def __repr__(self) -> str:  # never show the token in a traceback or log line
        return f"Profile(name={self.name!r}, url={self.url!r}, container={self.container!r})"


def _env(env: Mapping[str, str], key: str) -> str | None:
    value = env.get(key, "").strip()
    return value or None


def config_dir(env: Mapping[str, str] = os.environ) -> Path:
    """$WTPY_CONFIG_DIR, else $XDG_CONFIG_HOME/wtpy, else ~/.config/wtpy."""
    explicit = _env(env, "WTPY_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = _env(env, "XDG_CONFIG_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".config") / "wtpy"


def profiles_path(env: Mapping[str, str] = os.environ) -> Path:
    return config_dir(env) / PROFILES_FILE


def load_profiles(path: Path) -> dict[str, Any]:
    """The parsed file as {"default": str | None, "profiles": {name: {url, token, container}}}.

    A missing file is an empty set of profiles; a malformed one raises ProfileError.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"default": None, "profiles": {}}
    except (OSError, UnicodeDecodeError) as error:
        raise ProfileError(f"cannot read profiles file {path}: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ProfileError(f"profiles file {path} is not valid YAML: {error}") from None
    if data is None:
        data = {}
    profiles = data.get("profiles", {}) if isinstance(data, dict) else None
    if not isinstance(profiles, dict) or not all(
        isinstance(key, str) and isinstance(value, dict) for key, value in profiles.items()
    ):
        raise ProfileError(
            f"profiles file {path} must be a mapping with 'profiles: {{name: {{url, token, container}}}}'"
        )
    default = data.get("default")
    return {"default": default if isinstance(default, str) else None, "profiles": profiles}


def _is_private(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return True
    return not mode & (stat.S_IRWXG | stat.S_IRWXO)


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically; the file is created 0600 and never exists looser."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)  # in case the umask or filesystem widened it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_profile(path: Path, profile: Profile, *, make_default: bool = False) -> bool:
    """Add or replace `profile` in the file, keeping the others; returns True if it is the default.

    The profile becomes the default when asked, or when the file has no usable default yet.
    """
    data = load_profiles(path)
    profiles: dict[str, Any] = dict(data["profiles"])
    profiles[profile.name] = {
        "url": profile.url,
        "token": profile.token,
        "container": profile.container,
    }
    default: str | None = data["default"]
    if make_default or default is None or default not in profiles:
        default = profile.name
    text = yaml.safe_dump(
        {"default": default, "profiles": profiles}, sort_keys=False, default_flow_style=False
    )
    _write_private(path, text)
    return default == profile.name


def resolve_profile(
    name: str | None = None,
    *,
    container: str | None = None,
    env: Mapping[str, str] = os.environ,
    path: Path | None = None,
    warn: Any = None,
) -> Profile:
    """The profile a command uses.

    Name: `name` (the -p option), else $WTPY_PROFILE, else the file's default. Then
    $WTPY_URL, $WTPY_TOKEN and $WTPY_CONTAINER override its fields, and `container` (the
    --container option) overrides the container. With no profile file at all, $WTPY_URL and
    $WTPY_TOKEN alone are enough. `warn` (a callable taking a str) hears about a profiles
    file readable by others.
    """
    path = path or profiles_path(env)
    explicit = name or _env(env, "WTPY_PROFILE")
    env_url, env_token = _env(env, "WTPY_URL"), _env(env, "WTPY_TOKEN")
    data = load_profiles(path)
    profiles: dict[str, Any] = data["profiles"]
    chosen = (
        explicit or data["default"] or (DEFAULT_PROFILE if DEFAULT_PROFILE in profiles else None)
    )
    if chosen is None and len(profiles) == 1:
        chosen = next(iter(profiles))

    fields: dict[str, Any] = {}
    if chosen is not None and chosen in profiles:
        fields = profiles[chosen]
        if warn is not None and not _is_private(path):
            warn(f"{path} is readable by other users; run: chmod 600 {path}")
    elif explicit is not None:
        known = ", ".join(sorted(profiles)) or "none"
        raise ProfileError(
            f"no profile named {explicit!r} in {path} (known: {known}); "
            f"create it with: wtpy init --profile {explicit}"
        )
    elif not (env_url and env_token):
        raise ProfileError(
            f"no wtpy profile configured in {path}; run `wtpy init` first, "
            "or set WTPY_URL and WTPY_TOKEN"
        )

    url = env_url or _str_field(fields, "url", path, chosen)
    token = env_token or _str_field(fields, "token", path, chosen)
    chosen_container = (
        container
        or _env(env, "WTPY_CONTAINER")
        or str(fields.get("container") or "")
        or DEFAULT_CONTAINER
    )
    return Profile(name=chosen or "(environment)", url=url, token=token, container=chosen_container)


def _str_field(fields: Mapping[str, Any], key: str, path: Path, name: str | None) -> str:
    value = fields.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ProfileError(
            f"profile {name!r} in {path} has no {key}; run `wtpy init --profile {name}` again"
        )
    return value.strip()

"""The token server's YAML configuration (see samples/tokenserver.yaml)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._errors import ConfigError
from ._passwords import is_hashed, looks_hashed

__all__ = [
    "GRANT_TYPES",
    "ClientConfig",
    "HookConfig",
    "TokenServerConfig",
    "UserConfig",
    "config_from_dict",
    "default_signing_key_path",
    "load_config",
]

CLIENT_CREDENTIALS = "client_credentials"
PASSWORD = "password"
GRANT_TYPES = (CLIENT_CREDENTIALS, PASSWORD)
DEFAULT_LIFETIME = 86400
DEFAULT_HOOK_TIMEOUT = 5.0
DEFAULT_TENANT = "default"
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 scope-token (NQCHAR)


@dataclass(frozen=True)
class HookConfig:
    """One extensibility point: its webtask URL and the `auth0-extension-secret` to send."""

    url: str
    secret: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_HOOK_TIMEOUT


@dataclass(frozen=True)
class ClientConfig:
    client_id: str
    client_secret: str | None = field(default=None, repr=False)  # None: public client
    name: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    scopes: tuple[str, ...] | None = None  # allow-list and default; None: anything requested
    grant_types: frozenset[str] = frozenset(GRANT_TYPES)

    def hook_object(self, tenant: str) -> dict[str, Any]:
        """The `client` the hook receives (the original platform's shape)."""
        return {
            "tenant": tenant,
            "id": self.client_id,
            "name": self.name,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class UserConfig:
    user_id: str
    username: str
    password: str = field(repr=False)
    profile: Mapping[str, Any] = field(default_factory=dict)  # every other key, e.g. email

    @property
    def email(self) -> str | None:
        email = self.profile.get("email")
        return email if isinstance(email, str) else None

    def hook_object(self, tenant: str) -> dict[str, Any]:
        """The `user` the password-exchange hook receives: id, username and the profile keys."""
        return {**self.profile, "tenant": tenant, "id": self.user_id, "username": self.username}


@dataclass(frozen=True)
class TokenServerConfig:
    issuer: str
    signing_key: Path
    audience: str | None = None
    token_lifetime: int = DEFAULT_LIFETIME
    tenant: str = DEFAULT_TENANT
    hooks: Mapping[str, HookConfig] = field(default_factory=dict)
    clients: tuple[ClientConfig, ...] = ()
    users: tuple[UserConfig, ...] = ()

    def client(self, client_id: str) -> ClientConfig | None:
        for client in self.clients:
            if client.client_id == client_id:
                return client
        return None

    def user(self, username: str) -> UserConfig | None:
        """By exact username, else by email (case-insensitive)."""
        for user in self.users:
            if user.username == username:
                return user
        folded = username.casefold()
        for user in self.users:
            if user.email is not None and user.email.casefold() == folded:
                return user
        return None


def default_signing_key_path(env: Mapping[str, str] = os.environ) -> Path:
    """`$WTPY_DATA_DIR`, else `$XDG_DATA_HOME/wtpy`, else `~/.local/share/wtpy`; file
    `tokenserver-signing-key.pem` in it."""
    if env.get("WTPY_DATA_DIR"):
        base = Path(env["WTPY_DATA_DIR"]).expanduser()
    elif env.get("XDG_DATA_HOME"):
        base = Path(env["XDG_DATA_HOME"]).expanduser() / "wtpy"
    else:
        base = Path.home() / ".local" / "share" / "wtpy"
    return base / "tokenserver-signing-key.pem"


# ----------------------------------------------------------------------------- parsing


def _unknown(where: str, data: Mapping[str, Any], known: set[str]) -> None:
    extra = sorted(str(key) for key in data if key not in known)
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}")


def _mapping(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    return value


def _string(where: str, value: Any, *, required: bool = True) -> str | None:
    if value is None:
        if required:
            raise ConfigError(f"{where} is required")
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string")
    return value


def _number(where: str, value: Any, default: float, *, integer: bool = False) -> Any:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a number")
    if value <= 0 or (integer and int(value) != value):
        raise ConfigError(f"{where} must be a positive {'integer' if integer else 'number'}")
    return int(value) if integer else float(value)


def _secret(where: str, value: Any, *, what: str) -> str | None:
    secret = _string(where, value, required=False)
    if secret is not None and looks_hashed(secret) and not is_hashed(secret):
        raise ConfigError(f"{where} looks like a {what} hash but is malformed")
    return secret


def _scopes(where: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not all(
        isinstance(item, str) and _SCOPE_TOKEN.fullmatch(item) for item in value
    ):
        raise ConfigError(f"{where} must be a list of scope names (no spaces or quotes)")
    return tuple(dict.fromkeys(value))


def _hook(where: str, value: Any, env: Mapping[str, str]) -> HookConfig | None:
    if value is None:
        return None
    data = _mapping(where, value)
    _unknown(where, data, {"url", "secret", "secret_env", "timeout"})
    url = _string(f"{where}.url", data.get("url"))
    assert url is not None
    if not re.match(r"https?://[^/?#]+", url):
        raise ConfigError(f"{where}.url must be an http:// or https:// URL")
    secret = _string(f"{where}.secret", data.get("secret"), required=False)
    variable = _string(f"{where}.secret_env", data.get("secret_env"), required=False)
    if secret is not None and variable is not None:
        raise ConfigError(f"{where}: give secret or secret_env, not both")
    if variable is not None:
        secret = env.get(variable)
        if not secret:
            raise ConfigError(f"{where}.secret_env: environment variable {variable} is not set")
    if secret is not None and any(ch in secret for ch in "\r\n\0"):
        raise ConfigError(f"{where}.secret must not contain line breaks")
    timeout = _number(f"{where}.timeout", data.get("timeout"), DEFAULT_HOOK_TIMEOUT)
    return HookConfig(url=url, secret=secret, timeout=timeout)


def _client(where: str, value: Any) -> ClientConfig:
    data = _mapping(where, value)
    _unknown(
        where, data, {"client_id", "client_secret", "name", "metadata", "scopes", "grant_types"}
    )
    client_id = _string(f"{where}.client_id", data.get("client_id"))
    assert client_id is not None
    secret = _secret(f"{where}.client_secret", data.get("client_secret"), what="client secret")
    name = data.get("name", client_id)
    if not isinstance(name, str):
        raise ConfigError(f"{where}.name must be a string")
    metadata = data.get("metadata") or {}
    metadata = dict(_mapping(f"{where}.metadata", metadata))
    grants = data.get("grant_types")
    if grants is None:
        grant_types = frozenset(GRANT_TYPES) if secret is not None else frozenset({PASSWORD})
    else:
        if not isinstance(grants, list) or not all(grant in GRANT_TYPES for grant in grants):
            raise ConfigError(f"{where}.grant_types must be a list of {', '.join(GRANT_TYPES)}")
        grant_types = frozenset(grants)
    if CLIENT_CREDENTIALS in grant_types and secret is None:
        raise ConfigError(f"{where}: client_credentials needs a client_secret")
    return ClientConfig(
        client_id=client_id,
        client_secret=secret,
        name=name,
        metadata=metadata,
        scopes=_scopes(f"{where}.scopes", data.get("scopes")),
        grant_types=grant_types,
    )


def _user(where: str, value: Any) -> UserConfig:
    data = _mapping(where, value)
    user_id = _string(f"{where}.user_id", data.get("user_id"))
    username = _string(f"{where}.username", data.get("username"))
    password = _secret(f"{where}.password", data.get("password"), what="password")
    if password is None:
        raise ConfigError(f"{where}.password is required")
    assert user_id is not None and username is not None
    profile = {
        str(key): item
        for key, item in data.items()
        if key not in ("user_id", "username", "password", "id", "tenant")
    }
    if "email" in profile and not isinstance(profile["email"], str):
        raise ConfigError(f"{where}.email must be a string")
    return UserConfig(user_id=user_id, username=username, password=password, profile=profile)


def config_from_dict(
    data: Any, base_dir: Path | None = None, env: Mapping[str, str] = os.environ
) -> TokenServerConfig:
    """Validate a parsed configuration. Relative paths are taken from `base_dir` (default: cwd)."""
    data = _mapping("configuration", data)
    _unknown(
        "configuration",
        data,
        {
            "issuer",
            "audience",
            "token_lifetime",
            "signing_key",
            "tenant",
            "hooks",
            "clients",
            "users",
        },
    )
    issuer = _string("issuer", data.get("issuer"))
    assert issuer is not None
    audience = _string("audience", data.get("audience"), required=False)
    lifetime = _number("token_lifetime", data.get("token_lifetime"), DEFAULT_LIFETIME, integer=True)
    tenant = _string("tenant", data.get("tenant"), required=False) or DEFAULT_TENANT

    key_value = _string("signing_key", data.get("signing_key"), required=False)
    if key_value is None:
        signing_key = default_signing_key_path(env)
    else:
        signing_key = Path(key_value).expanduser()
        if not signing_key.is_absolute():
            signing_key = (base_dir or Path.cwd()) / signing_key

    hooks_data = _mapping("hooks", data.get("hooks") or {})
    _unknown("hooks", hooks_data, set(GRANT_TYPES))
    hooks: dict[str, HookConfig] = {}
    for grant in GRANT_TYPES:
        hook = _hook(f"hooks.{grant}", hooks_data.get(grant), env)
        if hook is not None:
            hooks[grant] = hook

    clients_data = data.get("clients") or []
    if not isinstance(clients_data, list):
        raise ConfigError("clients must be a list")
    clients = tuple(_client(f"clients[{i}]", item) for i, item in enumerate(clients_data))
    _unique("clients", [client.client_id for client in clients], "client_id")

    users_data = data.get("users") or []
    if not isinstance(users_data, list):
        raise ConfigError("users must be a list")
    users = tuple(_user(f"users[{i}]", item) for i, item in enumerate(users_data))
    _unique("users", [user.user_id for user in users], "user_id")
    _unique("users", [user.username for user in users], "username")
    _unique("users", [user.email.casefold() for user in users if user.email], "email")

    return TokenServerConfig(
        issuer=issuer,
        signing_key=signing_key,
        audience=audience,
        token_lifetime=lifetime,
        tenant=tenant,
        hooks=hooks,
        clients=clients,
        users=users,
    )


def _unique(where: str, values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{where}: duplicate {what} {value!r}")
        seen.add(value)


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] = os.environ
) -> TokenServerConfig:
    """Read and validate a YAML configuration file; relative paths in it are relative to it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    try:
        return config_from_dict(data, path.resolve().parent, env)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None

"""wtpy.tokenserver: a reference OAuth2 token server that calls wtpy hooks and signs RS256 JWTs.

    from wtpy.tokenserver import create_app, load_config
    app = create_app(load_config("samples/tokenserver.yaml"))   # a Starlette app

`command` is the click command `wtpy tokenserver --config FILE [--host] [--port]`.
"""

from ._app import MAX_BODY_BYTES, create_app
from ._cli import DEFAULT_HOST, DEFAULT_PORT, command
from ._config import (
    GRANT_TYPES,
    ClientConfig,
    HookConfig,
    TokenServerConfig,
    UserConfig,
    config_from_dict,
    default_signing_key_path,
    load_config,
)
from ._errors import ConfigError, SigningKeyError
from ._keys import SigningKey, load_or_create_key
from ._passwords import hash_password, is_hashed, verify_password

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "GRANT_TYPES",
    "MAX_BODY_BYTES",
    "ClientConfig",
    "ConfigError",
    "HookConfig",
    "SigningKey",
    "SigningKeyError",
    "TokenServerConfig",
    "UserConfig",
    "command",
    "config_from_dict",
    "create_app",
    "default_signing_key_path",
    "hash_password",
    "is_hashed",
    "load_config",
    "load_or_create_key",
    "verify_password",
]

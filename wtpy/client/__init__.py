"""wtpy.client: what a token server uses to invoke an extensibility point (a hook).

    from wtpy.client import HookClient, HookError

    with HookClient("http://127.0.0.1:8721/api/run/default/myrule", secret) as hook:
        result = hook.client_credentials({"id": "c1", "name": "App"}, ["test"], "https://api")
        result.scope    # ["test", "extra"]
        result.claims   # {"https://foo.com/claim": "bar"}

`AsyncHookClient` has the same methods, awaited. Error envelopes raise `HookError`
(subclasses for the runtime's own refusals); no usable answer raises
`HookUnavailableError` (`HookTimeoutError`) or `HookProtocolError`.
"""

from ._client import DEFAULT_TIMEOUT, AsyncHookClient, HookClient
from ._errors import (
    UNAUTHORIZED_MESSAGE,
    HookBadRequestError,
    HookClientError,
    HookCompileError,
    HookConfigurationError,
    HookError,
    HookProtocolError,
    HookTimeoutError,
    HookUnauthorizedError,
    HookUnavailableError,
)
from ._wire import (
    MAX_RESPONSE_BYTES,
    HookResult,
    client_credentials_body,
    parse_envelope,
    password_body,
    redact_url,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_RESPONSE_BYTES",
    "UNAUTHORIZED_MESSAGE",
    "AsyncHookClient",
    "HookBadRequestError",
    "HookClient",
    "HookClientError",
    "HookCompileError",
    "HookConfigurationError",
    "HookError",
    "HookProtocolError",
    "HookResult",
    "HookTimeoutError",
    "HookUnauthorizedError",
    "HookUnavailableError",
    "client_credentials_body",
    "parse_envelope",
    "password_body",
    "redact_url",
]

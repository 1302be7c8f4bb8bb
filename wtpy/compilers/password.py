"""`auth0-ext-compilers/password-exchange`: hook(user, client, scope, audience, context).

The sandbox binds arguments by parameter name when it can, so the documented 5-parameter
form `hook(client, scope, audience, context, cb)` works too.
"""

from __future__ import annotations

from typing import ClassVar

from ._base import Check, ExchangeCompiler, is_empty_or_array, is_object, is_string

__all__ = ["NAME", "PasswordExchange"]

NAME = "auth0-ext-compilers/password-exchange"


class PasswordExchange(ExchangeCompiler):
    name: ClassVar[str] = NAME
    order: ClassVar[tuple[str, ...]] = ("user", "client", "scope", "audience", "context")
    # After "Body received by extensibility point is not an object"; first failure wins.
    # "Body.x" without the space, as in the original.
    checks: ClassVar[tuple[Check, ...]] = (
        Check(
            "audience", is_string, "Body.audience received by extensibility point is not a string"
        ),
        Check(
            "scope",
            is_empty_or_array,
            "Body.scope received by extensibility point is neither empty nor an array",
        ),
        Check("user", is_object, "Body.user received by extensibility point is not an object"),
        Check("client", is_object, "Body.client received by extensibility point is not an object"),
    )

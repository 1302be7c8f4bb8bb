"""`auth0-ext-compilers/client-credentials-exchange`: hook(client, scope, audience, context)."""

from __future__ import annotations

from typing import ClassVar

from ._base import Check, ExchangeCompiler, is_empty_or_array, is_object, is_string

__all__ = ["NAME", "ClientCredentialsExchange"]

NAME = "auth0-ext-compilers/client-credentials-exchange"


class ClientCredentialsExchange(ExchangeCompiler):
    name: ClassVar[str] = NAME
    order: ClassVar[tuple[str, ...]] = ("client", "scope", "audience", "context")
    # After "Body received by extensibility point is not an object"; first failure wins.
    checks: ClassVar[tuple[Check, ...]] = (
        Check("client", is_object, "Body .client received by extensibility point is not an object"),
        Check(
            "scope",
            is_empty_or_array,
            "Body .scope received by extensibility point is neither empty nor an array",
        ),
        Check(
            "audience", is_string, "Body .audience received by extensibility point is not a string"
        ),
    )

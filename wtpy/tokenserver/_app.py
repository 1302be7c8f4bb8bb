"""The token server: `POST /oauth/token`, `GET /.well-known/jwks.json`, `GET /healthz`."""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import anyio.to_thread
import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wtpy.client import (
    AsyncHookClient,
    HookConfigurationError,
    HookError,
    HookProtocolError,
    HookResult,
    HookUnavailableError,
)

from ._config import (
    CLIENT_CREDENTIALS,
    GRANT_TYPES,
    PASSWORD,
    ClientConfig,
    HookConfig,
    TokenServerConfig,
    UserConfig,
)
from ._keys import SigningKey, load_or_create_key
from ._passwords import dummy_like, is_hashed, verify_password

__all__ = ["MAX_BODY_BYTES", "create_app"]

log = logging.getLogger("wtpy.tokenserver")

MAX_BODY_BYTES = 64 * 1024
_NAMESPACED = re.compile(r"https?://")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 scope-token (NQCHAR)
# The parameters read from a JSON body (others are ignored, as in a form body).
_PARAMETERS = (
    "grant_type",
    "client_id",
    "client_secret",
    "audience",
    "scope",
    "username",
    "password",
)
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error response."""

    def __init__(
        self, status: int, error: str, description: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.status, self.error, self.description = status, error, description
        self.headers = dict(headers or {})

    def response(self) -> Response:
        body = {"error": self.error, "error_description": self.description}
        return _json(body, self.status, {**_NO_STORE, **self.headers})


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status, headers=dict(headers or {}), media_type="application/json"
    )


def _invalid_request(description: str) -> OAuthError:
    return OAuthError(400, "invalid_request", description)


def _clip(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


# ----------------------------------------------------------------------------- request parsing


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise OAuthError(413, "invalid_request", "Request body too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise OAuthError(413, "invalid_request", "Request body too large")
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _read_params(request: Request) -> dict[str, str | list[str]]:
    """The request parameters; values that are empty or null count as absent (RFC 6749 3.1)."""
    media = _media_type(request)
    body = await _read_body(request)
    params: dict[str, str | list[str]] = {}
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _invalid_request("The request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise _invalid_request("The request body must be a JSON object")
        for key in _PARAMETERS:
            value = data.get(key)
            if value is None or value == "":
                continue
            if not (isinstance(value, str) or (key == "scope" and _strings(value))):
                raise _invalid_request(f"Parameter {key} must be a string")
            params[key] = value
        return params
    if media == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(
                body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=100
            )
        except (UnicodeDecodeError, ValueError):
            raise _invalid_request("The request body is not valid form data") from None
        for key, value in pairs:
            if key in params:
                raise _invalid_request(f"Parameter {_clip(key)} is repeated")
            if value != "":
                params[key] = value
        return params
    raise _invalid_request(
        "The token endpoint accepts application/json or application/x-www-form-urlencoded bodies"
    )


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _param(params: Mapping[str, str | list[str]], name: str) -> str | None:
    value = params.get(name)
    if isinstance(value, list):
        raise _invalid_request(f"Parameter {name} must be a string")
    return value


def _required(params: Mapping[str, str | list[str]], name: str) -> str:
    value = _param(params, name)
    if value is None:
        raise _invalid_request(f"Missing required parameter: {name}")
    return value


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    """Client credentials from `Authorization: Basic` (RFC 6749 2.3.1), or None without one."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _invalid_client("Unsupported client authentication method", basic=False)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _invalid_client("Malformed Basic credentials", basic=True) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise _invalid_client("Malformed Basic credentials", basic=True)
    return unquote_plus(client_id), unquote_plus(secret)


def _invalid_client(
    description: str = "Client authentication failed", *, basic: bool
) -> OAuthError:
    headers = {"WWW-Authenticate": 'Basic realm="wtpy", charset="UTF-8"'} if basic else None
    return OAuthError(401, "invalid_client", description, headers)


def _requested_scopes(params: Mapping[str, str | list[str]]) -> list[str] | None:
    value = params.get("scope")
    if value is None:
        return None
    items = value.split() if isinstance(value, str) else value
    for item in items:
        if not _SCOPE_TOKEN.fullmatch(item):
            raise OAuthError(400, "invalid_scope", "The requested scope is malformed")
    return list(dict.fromkeys(items))


# ----------------------------------------------------------------------------- the server


class _Hooks:
    """One AsyncHookClient per configured hook, opened by the app's lifespan."""

    def __init__(
        self, hooks: Mapping[str, HookConfig], transport: httpx.AsyncBaseTransport | None
    ) -> None:
        self._config = dict(hooks)
        self._transport = transport
        self._clients: dict[str, AsyncHookClient] | None = None

    def _new(self, hook: HookConfig) -> AsyncHookClient:
        return AsyncHookClient(
            hook.url, hook.secret, timeout=hook.timeout, transport=self._transport
        )

    async def open(self) -> None:
        self._clients = {grant: self._new(hook) for grant, hook in self._config.items()}

    async def close(self) -> None:
        clients, self._clients = self._clients or {}, None
        for client in clients.values():
            await client.aclose()

    @asynccontextmanager
    async def get(self, grant: str) -> AsyncIterator[AsyncHookClient | None]:
        hook = self._config.get(grant)
        if hook is None:
            yield None
        elif self._clients is not None:
            yield self._clients[grant]
        else:  # served without a lifespan (some test clients): a client for this request only
            async with self._new(hook) as client:
                yield client


class TokenServer:
    def __init__(
        self,
        config: TokenServerConfig,
        key: SigningKey,
        hook_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.key = key
        self.hooks = _Hooks(config.hooks, hook_transport)
        self._dummy_secret = dummy_like(
            [c.client_secret for c in config.clients if c.client_secret]
        )
        self._dummy_password = dummy_like([u.password for u in config.users])

    # -- endpoints

    async def token(self, request: Request) -> Response:
        try:
            params = await _read_params(request)
            body = await self._grant(request, params)
        except OAuthError as error:
            return error.response()
        return _json(body, 200, _NO_STORE)

    async def jwks(self, request: Request) -> Response:
        return _json(
            {"keys": [self.key.public_jwk()]}, 200, {"Cache-Control": "public, max-age=300"}
        )

    async def healthz(self, request: Request) -> Response:
        return _json({"status": "ok"})

    # -- the grant

    async def _grant(
        self, request: Request, params: Mapping[str, str | list[str]]
    ) -> dict[str, Any]:
        grant = _required(params, "grant_type")
        if grant not in GRANT_TYPES:
            raise OAuthError(
                400, "unsupported_grant_type", f"Unsupported grant type: {_clip(grant)}"
            )
        client = await self._authenticate_client(request, params, grant)
        scopes = self._scopes(client, _requested_scopes(params))
        audience = _param(params, "audience") or self.config.audience
        if audience is None:
            raise _invalid_request("Missing required parameter: audience")

        user: UserConfig | None = None
        if grant == PASSWORD:
            username = _required(params, "username")
            password = _required(params, "password")
            user = await self._authenticate_user(username, password)

        result = await self._run_hook(request, grant, client, user, scopes, audience)
        return self._issue(grant, client, user, audience, scopes, result)

    async def _authenticate_client(
        self, request: Request, params: Mapping[str, str | list[str]], grant: str
    ) -> ClientConfig:
        basic = _basic_credentials(request)
        client_id = _param(params, "client_id")
        secret = _param(params, "client_secret")
        if basic is not None:
            if secret is not None:
                raise _invalid_request("Use one client authentication method, not two")
            if client_id is not None and client_id != basic[0]:
                raise _invalid_request("client_id does not match the Basic credentials")
            client_id, secret = basic
        if not client_id:
            raise _invalid_client("Missing client_id", basic=basic is not None)
        client = self.config.client(client_id)
        if client is None:
            if secret is not None:
                await _verify(secret, self._dummy_secret)
            raise _invalid_client(basic=basic is not None)
        if client.client_secret is not None and (
            secret is None or not await _verify(secret, client.client_secret)
        ):
            raise _invalid_client(basic=basic is not None)
        if grant not in client.grant_types:
            raise OAuthError(
                400, "unauthorized_client", f"The client may not use the {grant} grant"
            )
        return client

    async def _authenticate_user(self, username: str, password: str) -> UserConfig:
        user = self.config.user(username)
        if user is None:
            await _verify(password, self._dummy_password)
        elif await _verify(password, user.password):
            return user
        raise OAuthError(400, "invalid_grant", "Wrong username or password.")

    def _scopes(self, client: ClientConfig, requested: list[str] | None) -> list[str]:
        if client.scopes is None:
            return requested or []
        if requested is None:
            return list(client.scopes)
        refused = [scope for scope in requested if scope not in client.scopes]
        if refused:
            raise OAuthError(
                400,
                "invalid_scope",
                f"Scope not allowed for this client: {_clip(' '.join(refused))}",
            )
        return requested

    async def _run_hook(
        self,
        request: Request,
        grant: str,
        client: ClientConfig,
        user: UserConfig | None,
        scopes: list[str],
        audience: str,
    ) -> HookResult | None:
        ip = request.client.host if request.client else None
        user_agent = request.headers.get("user-agent")
        tenant = self.config.tenant
        async with self.hooks.get(grant) as hook:
            if hook is None:
                return None
            try:
                if grant == CLIENT_CREDENTIALS:
                    return await hook.client_credentials(
                        client.hook_object(tenant), scopes, audience, ip=ip, user_agent=user_agent
                    )
                assert user is not None
                return await hook.password(
                    user.hook_object(tenant),
                    client.hook_object(tenant),
                    scopes,
                    audience,
                    ip=ip,
                    user_agent=user_agent,
                )
            except HookConfigurationError as error:
                log.error(
                    "%s hook is misconfigured (%s): %s: %s",
                    grant, hook, error.name, _clip(error.message, 300),
                )  # fmt: skip
                raise OAuthError(
                    500, "server_error", "The extensibility point is not set up correctly"
                ) from None
            except HookError as error:
                log.info(
                    "%s hook denied client %s: %s: %s",
                    grant, client.client_id, error.name, _clip(error.message, 300),
                )  # fmt: skip
                raise OAuthError(403, "access_denied", error.message) from None
            except (HookUnavailableError, HookProtocolError) as error:
                log.warning("%s hook failed: %s", grant, error)
                raise OAuthError(
                    503,
                    "temporarily_unavailable",
                    "The extensibility point is unavailable; try again later",
                    {"Retry-After": "5"},
                ) from None

    def _issue(
        self,
        grant: str,
        client: ClientConfig,
        user: UserConfig | None,
        audience: str,
        requested: list[str],
        result: HookResult | None,
    ) -> dict[str, Any]:
        scopes, custom = _from_hook(grant, result, requested)
        now = int(time.time())
        subject = user.user_id if user is not None else f"{client.client_id}@clients"
        claims: dict[str, Any] = {
            "iss": self.config.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "exp": now + self.config.token_lifetime,
            "azp": client.client_id,
        }
        if scopes:
            claims["scope"] = " ".join(scopes)
        claims.update(custom)
        token = self.key.sign(claims)
        log.info(
            "issued %s token to client %s for %s (sub %s, scope %r)",
            grant, client.client_id, audience, subject, claims.get("scope", ""),
        )  # fmt: skip
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.config.token_lifetime,
            "scope": " ".join(scopes),
        }


def _from_hook(
    grant: str, result: HookResult | None, requested: list[str]
) -> tuple[list[str], dict[str, Any]]:
    """(scopes, namespaced claims) from the hook's result; requested scopes when it gives none."""
    if result is None or result.data is None:
        return requested, {}
    data = result.data
    if not isinstance(data, dict):
        log.error("%s hook returned a %s, not an object", grant, type(data).__name__)
        raise OAuthError(500, "server_error", "The extensibility point returned an invalid result")
    scope = data.get("scope")
    if scope is None:
        scopes = requested
    elif isinstance(scope, list) and all(
        isinstance(item, str) and _SCOPE_TOKEN.fullmatch(item) for item in scope
    ):
        scopes = list(dict.fromkeys(scope))
    else:
        log.error("%s hook returned a scope that is not a list of scope names", grant)
        raise OAuthError(500, "server_error", "The extensibility point returned an invalid scope")
    custom = {key: value for key, value in result.claims.items() if _NAMESPACED.match(key)}
    dropped = sorted(key for key in result.claims if key not in custom)
    if dropped:
        log.debug("%s hook: dropped claims that are not namespaced URLs: %s", grant, dropped)
    return scopes, custom


async def _verify(given: str, stored: str) -> bool:
    if is_hashed(stored):  # slow on purpose: off the event loop
        return await anyio.to_thread.run_sync(verify_password, given, stored)
    return verify_password(given, stored)


def create_app(
    config: TokenServerConfig,
    *,
    hook_transport: httpx.AsyncBaseTransport | None = None,
    signing_key: SigningKey | None = None,
) -> Starlette:
    """The token server as a Starlette app.

    Loads (or creates) the signing key now, so a bad key fails here rather than on the first
    request. `hook_transport` replaces the network for the hook calls (tests).
    """
    key = signing_key or load_or_create_key(config.signing_key)
    server = TokenServer(config, key, hook_transport)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.hooks.open()
        try:
            yield
        finally:
            await server.hooks.close()

    app = Starlette(
        routes=[
            Route("/oauth/token", server.token, methods=["POST"]),
            Route("/.well-known/jwks.json", server.jwks, methods=["GET"]),
            Route("/healthz", server.healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.tokenserver = server
    return app

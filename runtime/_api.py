"""Management API: create, patch, list, inspect and delete webtasks (`/api/webtask/...`)."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wtpy.compilers import compiler_names, get_compiler
from wtpy.storage import Webtask

from ._auth import bearer_token
from ._http import ApiError, error_response, json_response, read_json_object
from ._names import MAX_CODE_BYTES, valid_name
from ._runtime import Runtime, merge_patch
from ._tokens import (
    MAX_DESCRIPTION_CHARS,
    MAX_EXPIRES_IN,
    Principal,
    TokenRegistry,
    parse_time,
    token_view,
)

__all__ = ["routes", "webtask_url", "TIMEOUT_META", "authenticate", "authorize", "Principal"]

COMPILER_META = "wt-compiler"
TIMEOUT_META = "wtpy-timeout"
# A tiny timeout would make every call kill and respawn a worker (~100 ms of start-up each).
MIN_TIMEOUT = 0.1
MASK = "********"
# Management bodies carry code (<= 100 KiB) plus meta and secrets.
MAX_MANAGEMENT_BODY = 1024 * 1024
MAX_ENTRIES = 100
MAX_KEY_CHARS = 256
MAX_VALUE_CHARS = 16 * 1024


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


_NO_TOKENS = TokenRegistry()
_UNSET: Any = object()


def authenticate(request: Request, token: str | None = None) -> Principal:
    """Who is calling: the admin or a scoped token (see _tokens.py). 401 without a usable
    token or with an expired/revoked one, 403 for a token that is not recognised.

    `token` replaces the Authorization header (the logs endpoint's `?key=`)."""
    if token is None:
        token = bearer_token(request.headers.get("authorization"))
    if not token:
        raise ApiError(401, "unauthorized", "Send a management token as 'Authorization: Bearer <token>'")
    runtime = _runtime(request)
    registry = getattr(runtime, "tokens", None) or _NO_TOKENS
    return registry.authenticate(token, runtime.admin_token)


def authorize(
    request: Request,
    container: str | None = _UNSET,
    name: str | None = None,
    *,
    narrow: bool = False,
    token: str | None = None,
) -> Principal:
    """Authenticate, then check that the token's scope covers `container` (None: an
    admin-only call) or `container/name`; 403 when it does not. Returns the principal.

    `container` defaults to the route's `{container}` path parameter. name=None means the
    whole container: a webtask-scoped token passes only with narrow=True, and then the
    caller must restrict what it returns to `principal.name` (list, logs)."""
    principal = authenticate(request, token)
    if container is _UNSET:
        container = request.path_params.get("container")
    principal.require(container, name, narrow=narrow)
    return principal


def _require_admin(request: Request) -> Principal:
    principal = authenticate(request)
    if not principal.is_admin:
        raise ApiError(403, "forbidden", f"Only the admin token may manage tokens; this is {principal.describe()}")
    return principal


def _names(request: Request, *, with_name: bool = True) -> tuple[str, str]:
    container = request.path_params["container"]
    name = request.path_params.get("name", "") if with_name else ""
    if not valid_name(container):
        raise ApiError(400, "invalid_name", f"Invalid container name {container!r}")
    if with_name and not valid_name(name):
        raise ApiError(400, "invalid_name", f"Invalid webtask name {name!r}")
    return container, name


def webtask_url(request: Request, container: str, name: str) -> str:
    base = _runtime(request).settings.public_url or str(request.base_url)
    return f"{base.rstrip('/')}/api/run/{container}/{name}"


def describe(request: Request, webtask: Webtask, *, decrypt: bool, with_code: bool) -> dict[str, Any]:
    """The public view of a webtask: secret values appear only when decrypt was asked for."""
    secret_values = {value for value in webtask.secrets.values() if value}
    meta = (
        dict(webtask.meta)
        if decrypt
        else {key: MASK if value in secret_values else value for key, value in webtask.meta.items()}
    )
    view: dict[str, Any] = {
        "container": webtask.container,
        "name": webtask.name,
        "url": webtask_url(request, webtask.container, webtask.name),
        "meta": meta,
        "secrets": dict(webtask.secrets) if decrypt else sorted(webtask.secrets),
        "version": webtask.version,
        "code_hash": webtask.code_hash,
        "created_at": webtask.created_at,
        "updated_at": webtask.updated_at,
    }
    if with_code:
        view["code"] = webtask.code
    return view


def _string_map(value: Any, field: str, *, allow_null_values: bool = False) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_webtask", f"'{field}' must be an object of string values")
    if len(value) > MAX_ENTRIES:
        raise ApiError(422, "invalid_webtask", f"'{field}' has more than {MAX_ENTRIES} entries")
    for key, item in value.items():
        if not key or len(key) > MAX_KEY_CHARS:
            raise ApiError(422, "invalid_webtask", f"'{field}' keys must be 1 to {MAX_KEY_CHARS} characters")
        if item is None and allow_null_values:
            continue
        if not isinstance(item, str):
            raise ApiError(422, "invalid_webtask", f"'{field}.{key}' must be a string")
        if len(item) > MAX_VALUE_CHARS:
            raise ApiError(422, "invalid_webtask", f"'{field}.{key}' is longer than {MAX_VALUE_CHARS} characters")
    return value


def _check_code(code: Any) -> str:
    if not isinstance(code, str):
        raise ApiError(422, "invalid_webtask", "'code' must be a string holding the hook's Python source")
    if len(code.encode("utf-8")) > MAX_CODE_BYTES:
        raise ApiError(413, "payload_too_large", f"Code exceeds the limit of {MAX_CODE_BYTES} bytes")
    return code


def _check_meta(meta: dict[str, str], max_timeout: float) -> None:
    compiler = meta.get(COMPILER_META)
    if not compiler:
        raise ApiError(
            422,
            "invalid_webtask",
            f"meta '{COMPILER_META}' is required; known compilers: {', '.join(compiler_names())}",
        )
    if get_compiler(compiler) is None:
        raise ApiError(
            422,
            "invalid_webtask",
            f"Unknown compiler {compiler!r}; known compilers: {', '.join(compiler_names())}",
        )
    if TIMEOUT_META in meta:
        try:
            seconds = float(meta[TIMEOUT_META])
        except ValueError:
            seconds = -1.0
        if not MIN_TIMEOUT <= seconds <= max_timeout:
            raise ApiError(
                422, "invalid_webtask", f"meta '{TIMEOUT_META}' must be seconds from {MIN_TIMEOUT:g} to {max_timeout:g}"
            )


async def _guarded(request: Request, handler: Any, *, narrow: bool = False) -> Response:
    try:
        # Scope check on the raw path parameters: an invalid name matches no scope, and the
        # handler answers 400 for it (to the admin) after this.
        request.state.principal = authorize(
            request,
            request.path_params.get("container"),
            request.path_params.get("name"),
            narrow=narrow,
        )
        return await handler(request)
    except ApiError as error:
        return error_response(error)


async def put_webtask(request: Request) -> Response:
    async def handle(request: Request) -> Response:
        container, name = _names(request)
        runtime = _runtime(request)
        body = await read_json_object(request, MAX_MANAGEMENT_BODY)
        code = _check_code(body.get("code"))
        meta = _string_map(body.get("meta"), "meta")
        secrets = _string_map(body.get("secrets"), "secrets")
        _check_meta(meta, runtime.settings.max_timeout)
        webtask, created = await runtime.put(container, name, code, meta, secrets)
        return json_response(describe(request, webtask, decrypt=False, with_code=False), 201 if created else 200)

    return await _guarded(request, handle)


async def patch_webtask(request: Request) -> Response:
    async def handle(request: Request) -> Response:
        container, name = _names(request)
        runtime = _runtime(request)
        body = await read_json_object(request, MAX_MANAGEMENT_BODY)
        code = _check_code(body["code"]) if body.get("code") is not None else None
        meta_patch = _string_map(body.get("meta"), "meta", allow_null_values=True)
        secrets_patch = _string_map(body.get("secrets"), "secrets", allow_null_values=True)
        current = await runtime.get(container, name)
        if current is None:
            raise ApiError(404, "not_found", f"Webtask {container}/{name} not found")
        # Validate the merged meta before writing so a bad patch changes nothing.
        _check_meta(merge_patch(current.meta, meta_patch), runtime.settings.max_timeout)
        webtask = await runtime.patch(container, name, code, meta_patch, secrets_patch)
        if webtask is None:
            raise ApiError(404, "not_found", f"Webtask {container}/{name} not found")
        return json_response(describe(request, webtask, decrypt=False, with_code=False))

    return await _guarded(request, handle)


async def get_webtask(request: Request) -> Response:
    async def handle(request: Request) -> Response:
        container, name = _names(request)
        webtask = await _runtime(request).get(container, name)
        if webtask is None:
            raise ApiError(404, "not_found", f"Webtask {container}/{name} not found")
        decrypt = request.query_params.get("decrypt", "") in ("1", "true", "yes")
        return json_response(describe(request, webtask, decrypt=decrypt, with_code=True))

    return await _guarded(request, handle)


async def list_webtasks(request: Request) -> Response:
    async def handle(request: Request) -> Response:
        container, _ = _names(request, with_name=False)
        meta_filter: dict[str, str] = {}
        for item in request.query_params.getlist("meta"):
            key, sep, value = item.partition(":")
            if not sep or not key:
                raise ApiError(400, "bad_request", f"meta filter {item!r} must look like key:value")
            meta_filter[key] = value
        webtasks = await _runtime(request).list(container, meta_filter)
        principal: Principal = request.state.principal
        if principal.kind == "webtask":  # a webtask token sees only its own webtask
            webtasks = [w for w in webtasks if w.name == principal.name]
        decrypt = request.query_params.get("decrypt", "") in ("1", "true", "yes")
        return json_response([describe(request, w, decrypt=decrypt, with_code=False) for w in webtasks])

    return await _guarded(request, handle, narrow=True)


async def delete_webtask(request: Request) -> Response:
    async def handle(request: Request) -> Response:
        container, name = _names(request)
        if not await _runtime(request).delete(container, name):
            raise ApiError(404, "not_found", f"Webtask {container}/{name} not found")
        return Response(status_code=204)

    return await _guarded(request, handle)


# --- scoped management tokens (admin only) ------------------------------------------------

_TOKEN_FIELDS = frozenset({"container", "name", "description", "expires_in", "expires_at"})


def _expiry(body: dict[str, Any], now: float) -> float | None:
    expires_in, expires_at = body.get("expires_in"), body.get("expires_at")
    if expires_in is not None and expires_at is not None:
        raise ApiError(422, "invalid_token", "Give 'expires_in' or 'expires_at', not both")
    if expires_in is not None:
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise ApiError(422, "invalid_token", "'expires_in' must be a number of seconds")
        if not 1 <= expires_in <= MAX_EXPIRES_IN:
            raise ApiError(422, "invalid_token", f"'expires_in' must be from 1 to {MAX_EXPIRES_IN} seconds")
        return now + float(expires_in)
    if expires_at is not None:
        try:
            when = parse_time(expires_at)
        except (ValueError, TypeError, OverflowError):
            raise ApiError(
                422, "invalid_token", "'expires_at' must be an ISO 8601 time such as 2030-01-31T12:00:00Z"
            ) from None
        if not now < when <= now + MAX_EXPIRES_IN:
            raise ApiError(422, "invalid_token", "'expires_at' must be in the future, at most ten years ahead")
        return when
    return None


async def create_token(request: Request) -> Response:
    try:
        _require_admin(request)
        body = await read_json_object(request, 64 * 1024)
        unknown = sorted(set(body) - _TOKEN_FIELDS)
        if unknown:
            raise ApiError(422, "invalid_token", f"Unknown field(s): {', '.join(map(repr, unknown))}")
        container, name = body.get("container"), body.get("name")
        if not isinstance(container, str) or not valid_name(container):
            raise ApiError(422, "invalid_name", "'container' must be a valid container name")
        if name is not None and (not isinstance(name, str) or not valid_name(name)):
            raise ApiError(422, "invalid_name", "'name' must be a valid webtask name or null")
        description = body.get("description")
        if description is None:
            description = ""
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
            raise ApiError(
                422, "invalid_token", f"'description' must be a string of at most {MAX_DESCRIPTION_CHARS} characters"
            )
        try:
            description.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(422, "invalid_token", "'description' is not valid Unicode text") from None
        expires_ts = _expiry(body, time.time())
        token, row = await _runtime(request).create_token(container, name, description, expires_ts)
        return json_response({"token": token, **token_view(row)}, 201)
    except ApiError as error:
        return error_response(error)


async def list_tokens(request: Request) -> Response:
    try:
        _require_admin(request)
        container = request.query_params.get("container")
        rows = _runtime(request).tokens.rows()
        if container:
            rows = [row for row in rows if row.container == container]
        rows.sort(key=lambda row: (row.created_at, row.id))
        return json_response([token_view(row) for row in rows])
    except ApiError as error:
        return error_response(error)


async def revoke_token(request: Request) -> Response:
    try:
        _require_admin(request)
        token_id = request.path_params["id"]
        row = _runtime(request).tokens.get(token_id)
        if row is None or await _runtime(request).revoke_token(token_id) is None:
            raise ApiError(404, "not_found", f"Token {token_id!r} not found")
        return Response(status_code=204)
    except ApiError as error:
        return error_response(error)


routes = [
    Route("/api/tokens", create_token, methods=["POST"]),
    Route("/api/tokens", list_tokens, methods=["GET"]),
    Route("/api/tokens/{id}", revoke_token, methods=["DELETE"]),
    Route("/api/webtask/{container}", list_webtasks, methods=["GET"]),
    Route("/api/webtask/{container}/{name}", get_webtask, methods=["GET"]),
    Route("/api/webtask/{container}/{name}", put_webtask, methods=["PUT"]),
    Route("/api/webtask/{container}/{name}", patch_webtask, methods=["PATCH"]),
    Route("/api/webtask/{container}/{name}", delete_webtask, methods=["DELETE"]),
]

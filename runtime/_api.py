"""Management API: create, patch, list, inspect and delete webtasks (`/api/webtask/...`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wtpy.compilers import compiler_names, get_compiler

from ._auth import bearer_token, tokens_equal
from ._http import ApiError, error_response, json_response, read_json_object
from ._names import MAX_CODE_BYTES, valid_name
from ._runtime import Runtime
from ._store import Webtask

__all__ = ["routes", "webtask_url", "TIMEOUT_META"]

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


def authorize(request: Request) -> None:
    """Every management call needs the admin token (constant-time comparison)."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise ApiError(401, "unauthorized", "Send a management token as 'Authorization: Bearer <token>'")
    if not tokens_equal(token, _runtime(request).admin_token):
        raise ApiError(403, "forbidden", "This token may not manage webtasks")


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


async def _guarded(request: Request, handler: Any) -> Response:
    try:
        authorize(request)
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
        merged = {**current.meta, **meta_patch}
        _check_meta({k: v for k, v in merged.items() if v is not None}, runtime.settings.max_timeout)
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
        decrypt = request.query_params.get("decrypt", "") in ("1", "true", "yes")
        return json_response([describe(request, w, decrypt=decrypt, with_code=False) for w in webtasks])

    return await _guarded(request, handle)


async def delete_webtask(request: Request) -> Response:
    async def handle(request: Request) -> Response:
        container, name = _names(request)
        if not await _runtime(request).delete(container, name):
            raise ApiError(404, "not_found", f"Webtask {container}/{name} not found")
        return Response(status_code=204)

    return await _guarded(request, handle)


routes = [
    Route("/api/webtask/{container}", list_webtasks, methods=["GET"]),
    Route("/api/webtask/{container}/{name}", get_webtask, methods=["GET"]),
    Route("/api/webtask/{container}/{name}", put_webtask, methods=["PUT"]),
    Route("/api/webtask/{container}/{name}", patch_webtask, methods=["PATCH"]),
    Route("/api/webtask/{container}/{name}", delete_webtask, methods=["DELETE"]),
]

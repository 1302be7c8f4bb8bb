"""Management API: create, patch, list, inspect and delete webtasks (`/api/webtask/...`),
and the admin's scoped tokens (`/api/tokens`).

Each endpoint authorises the caller first (see wtpy.runtime._access), then checks the
names it was addressed with. Refusals are raised, domain errors and ApiError alike, and
answered by the app's exception handlers (_errors.py).
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from wtpy.runtime import (
    NotFound,
    Principal,
    check_names,
    not_found,
    patch_request,
    put_request,
    token_request,
    token_view,
    webtask_view,
)
from wtpy.storage import Webtask

from ._http import ApiError, caller, json_response, read_json_object, runtime_of

__all__ = ["routes", "webtask_url"]

# Management bodies carry code (<= 100 KiB) plus meta and secrets.
MAX_MANAGEMENT_BODY = 1024 * 1024
MAX_TOKEN_BODY = 64 * 1024


def _authorized(request: Request, *, narrow: bool = False) -> Principal:
    """The caller, if its scope covers the route's container (and webtask): on the raw path
    parameters, so an invalid name matches no scope; the endpoint answers 400 for it (to
    the admin) after this."""
    principal = caller(request)
    params = request.path_params
    principal.require(params.get("container"), params.get("name"), narrow=narrow)
    return principal


def _names(request: Request) -> tuple[str, str]:
    container, name = request.path_params["container"], request.path_params["name"]
    check_names(container, name)
    return container, name


def _decrypt(request: Request) -> bool:
    return request.query_params.get("decrypt", "") in ("1", "true", "yes")


def webtask_url(request: Request, container: str, name: str) -> str:
    base = runtime_of(request).settings.public_url or str(request.base_url)
    return f"{base.rstrip('/')}/api/run/{container}/{name}"


def _view(
    request: Request, webtask: Webtask, *, decrypt: bool = False, with_code: bool = False
) -> dict[str, object]:
    url = webtask_url(request, webtask.container, webtask.name)
    return webtask_view(webtask, url, decrypt=decrypt, with_code=with_code)


async def put_webtask(request: Request) -> Response:
    _authorized(request)
    container, name = _names(request)
    code, meta, secrets = put_request(await read_json_object(request, MAX_MANAGEMENT_BODY))
    webtask, created = await runtime_of(request).put(container, name, code, meta, secrets)
    return json_response(_view(request, webtask), 201 if created else 200)


async def patch_webtask(request: Request) -> Response:
    _authorized(request)
    container, name = _names(request)
    code, meta_patch, secrets_patch = patch_request(
        await read_json_object(request, MAX_MANAGEMENT_BODY)
    )
    webtask = await runtime_of(request).patch(container, name, code, meta_patch, secrets_patch)
    if webtask is None:
        raise not_found(container, name)
    return json_response(_view(request, webtask))


async def get_webtask(request: Request) -> Response:
    _authorized(request)
    container, name = _names(request)
    webtask = await runtime_of(request).get(container, name)
    if webtask is None:
        raise not_found(container, name)
    return json_response(_view(request, webtask, decrypt=_decrypt(request), with_code=True))


async def list_webtasks(request: Request) -> Response:
    principal = _authorized(request, narrow=True)
    container = request.path_params["container"]
    check_names(container)
    meta_filter: dict[str, str] = {}
    for item in request.query_params.getlist("meta"):
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise ApiError(400, "bad_request", f"meta filter {item!r} must look like key:value")
        meta_filter[key] = value
    webtasks = await runtime_of(request).list(container, meta_filter)
    if principal.kind == "webtask":  # a webtask token sees only its own webtask
        webtasks = [w for w in webtasks if w.name == principal.name]
    decrypt = _decrypt(request)
    return json_response([_view(request, w, decrypt=decrypt) for w in webtasks])


async def delete_webtask(request: Request) -> Response:
    _authorized(request)
    container, name = _names(request)
    if not await runtime_of(request).delete(container, name):
        raise not_found(container, name)
    return Response(status_code=204)


# --- scoped management tokens (admin only) ------------------------------------------------


async def create_token(request: Request) -> Response:
    caller(request).require_admin("manage tokens")
    asked = token_request(await read_json_object(request, MAX_TOKEN_BODY), time.time())
    token, row = await runtime_of(request).create_token(
        asked.container, asked.name, asked.description, asked.expires_ts
    )
    return json_response({"token": token, **token_view(row)}, 201)


async def list_tokens(request: Request) -> Response:
    caller(request).require_admin("manage tokens")
    container = request.query_params.get("container")
    rows = runtime_of(request).tokens.rows()
    if container:
        rows = [row for row in rows if row.container == container]
    rows.sort(key=lambda row: (row.created_at, row.id))
    return json_response([token_view(row) for row in rows])


async def revoke_token(request: Request) -> Response:
    caller(request).require_admin("manage tokens")
    token_id = request.path_params["id"]
    runtime = runtime_of(request)
    if runtime.tokens.get(token_id) is None or await runtime.revoke_token(token_id) is None:
        raise NotFound(f"Token {token_id!r} not found")
    return Response(status_code=204)


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

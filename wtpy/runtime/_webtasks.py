"""The webtask rules: what a webtask may hold, how a patch merges, and its public view.

Every write goes through these checks once (see Runtime.put and Runtime.patch), whoever
asks for it; the HTTP layer only turns a request body into the values checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wtpy.compilers import compiler_names, get_compiler
from wtpy.contract import COMPILER_META, MAX_CODE_BYTES, MIN_TIMEOUT, TIMEOUT_META, valid_name
from wtpy.storage import Webtask

from ._errors import Invalid, InvalidName, NotFound, TooLarge
from ._masking import MASK

__all__ = [
    "COMPILER_META",
    "MASK",
    "MAX_ENTRIES",
    "MAX_KEY_CHARS",
    "MAX_VALUE_CHARS",
    "MIN_TIMEOUT",
    "TIMEOUT_META",
    "PatchRequest",
    "PutRequest",
    "check_code",
    "check_meta",
    "check_names",
    "hook_timeout",
    "merge_patch",
    "not_found",
    "patch_request",
    "put_request",
    "string_map",
    "webtask_view",
]

MAX_ENTRIES = 100
MAX_KEY_CHARS = 256
MAX_VALUE_CHARS = 16 * 1024

PutRequest = tuple[str, dict[str, str], dict[str, str]]  # code, meta, secrets
PatchRequest = tuple[
    str | None, dict[str, str | None], dict[str, str | None]
]  # None: unchanged / delete


def merge_patch(current: Mapping[str, str], patch: Mapping[str, Any]) -> dict[str, str]:
    """RFC 7386 merge of a flat str->str mapping: null deletes a key, anything else replaces it."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def not_found(container: str, name: str) -> NotFound:
    return NotFound(f"Webtask {container}/{name} not found")


def check_names(container: str, name: str | None = None) -> None:
    """InvalidName for a container (and webtask) name that no webtask can have."""
    if not valid_name(container):
        raise InvalidName(f"Invalid container name {container!r}")
    if name is not None and not valid_name(name):
        raise InvalidName(f"Invalid webtask name {name!r}")


def put_request(body: Mapping[str, Any]) -> PutRequest:
    """(code, meta, secrets) of a whole webtask, their shapes checked (meta: check_meta)."""
    return (
        check_code(body.get("code")),
        string_map(body.get("meta"), "meta"),
        string_map(body.get("secrets"), "secrets"),
    )


def patch_request(body: Mapping[str, Any]) -> PatchRequest:
    """(code or None, meta patch, secrets patch): a null value deletes its key."""
    code = check_code(body["code"]) if body.get("code") is not None else None
    meta = string_map(body.get("meta"), "meta", allow_null_values=True)
    secrets = string_map(body.get("secrets"), "secrets", allow_null_values=True)
    return code, meta, secrets


def string_map(value: Any, field: str, *, allow_null_values: bool = False) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"'{field}' must be an object of string values", code="invalid_webtask")
    if len(value) > MAX_ENTRIES:
        raise Invalid(f"'{field}' has more than {MAX_ENTRIES} entries", code="invalid_webtask")
    for key, item in value.items():
        if not key or len(key) > MAX_KEY_CHARS:
            raise Invalid(
                f"'{field}' keys must be 1 to {MAX_KEY_CHARS} characters", code="invalid_webtask"
            )
        if item is None and allow_null_values:
            continue
        if not isinstance(item, str):
            raise Invalid(f"'{field}.{key}' must be a string", code="invalid_webtask")
        if len(item) > MAX_VALUE_CHARS:
            raise Invalid(
                f"'{field}.{key}' is longer than {MAX_VALUE_CHARS} characters",
                code="invalid_webtask",
            )
    return value


def check_code(code: Any) -> str:
    if not isinstance(code, str):
        raise Invalid(
            "'code' must be a string holding the hook's Python source", code="invalid_webtask"
        )
    if len(code.encode("utf-8")) > MAX_CODE_BYTES:
        raise TooLarge(f"Code exceeds the limit of {MAX_CODE_BYTES} bytes")
    return code


def check_meta(meta: Mapping[str, str], max_timeout: float) -> None:
    """The rules on a webtask's whole meta: a known compiler, a timeout within bounds."""
    compiler = meta.get(COMPILER_META)
    if not compiler:
        raise Invalid(
            f"meta '{COMPILER_META}' is required; known compilers: {', '.join(compiler_names())}",
            code="invalid_webtask",
        )
    if get_compiler(compiler) is None:
        raise Invalid(
            f"Unknown compiler {compiler!r}; known compilers: {', '.join(compiler_names())}",
            code="invalid_webtask",
        )
    if TIMEOUT_META in meta:
        try:
            seconds = float(meta[TIMEOUT_META])
        except ValueError:
            seconds = -1.0
        if not MIN_TIMEOUT <= seconds <= max_timeout:
            raise Invalid(
                f"meta '{TIMEOUT_META}' must be seconds from {MIN_TIMEOUT:g} to {max_timeout:g}",
                code="invalid_webtask",
            )


def hook_timeout(meta: Mapping[str, str], default: float, max_timeout: float) -> float:
    """The webtask's `wtpy-timeout` meta (seconds) within the server's bounds, else the default."""
    raw = meta.get(TIMEOUT_META)
    if raw is not None:
        try:
            return min(max(float(raw), MIN_TIMEOUT), max_timeout)
        except ValueError:
            pass
    return default


def webtask_view(webtask: Webtask, url: str, *, decrypt: bool, with_code: bool) -> dict[str, Any]:
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
        "url": url,
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

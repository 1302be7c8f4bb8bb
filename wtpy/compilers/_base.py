"""Public data types, the Compiler protocol, and the shared exchange-compiler pipeline."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from ._authz import UNAUTHORIZED, is_authorized
from ._body import INVALID_JSON, INVALID_JSON_BODY, node_headers, read_body
from ._envelope import DEFAULT_ERROR_NAME, error_envelope, failure_envelope, success_envelope

__all__ = [
    "BODY_NOT_OBJECT",
    "Check",
    "Compiler",
    "ExchangeCompiler",
    "HookCall",
    "HookRequest",
    "WebtaskContext",
    "is_array",
    "is_empty_or_array",
    "is_object",
    "is_string",
    "js_truthy",
]

BODY_NOT_OBJECT = "Body received by extensibility point is not an object"


@dataclass(frozen=True)
class HookRequest:
    method: str  # "POST"
    headers: Mapping[str, str]  # case-insensitive (starlette Headers) or any mapping
    query: Mapping[str, str]
    path: str  # sub-path after /api/run/{container}/{name}: "" or "/x/y"
    body: bytes


@dataclass(frozen=True)
class WebtaskContext:
    container: str
    name: str
    meta: Mapping[str, str]
    secrets: Mapping[str, str]


@dataclass(frozen=True)
class HookCall:
    args: dict[str, Any]  # keys exactly `order`, in that order; JSON-able
    order: tuple[str, ...]


@runtime_checkable
class Compiler(Protocol):
    @property
    def name(self) -> str:
        """The wt-compiler meta value (a ClassVar in the built-in compilers)."""
        ...

    def prepare(self, request: HookRequest, webtask: WebtaskContext) -> HookCall | bytes:
        """A HookCall, or bytes: a finished error envelope (parse error, unauthorized, validation)."""
        ...

    def success(self, result: Any, has_result: bool) -> bytes:
        """The success envelope. From the sandbox, `result` is an `orjson.Fragment`: the
        result's JSON text, to be written into the envelope as it is."""
        ...

    def failure(self, error: Mapping[str, Any]) -> bytes: ...


# --- JavaScript-flavoured predicates over parsed JSON values -------------------------------


def js_truthy(value: Any) -> bool:
    """JavaScript truthiness of a JSON value: null, false, 0, NaN and "" are falsy; [] and {} are not."""
    if value is None or value is False:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0 and not math.isnan(value)
    if isinstance(value, str):
        return value != ""
    return True


def is_object(value: Any) -> bool:
    return isinstance(value, dict)


def is_array(value: Any) -> bool:
    return isinstance(value, list)


def is_string(value: Any) -> bool:
    return isinstance(value, str)


def is_empty_or_array(value: Any) -> bool:
    """`!(value && !Array.isArray(value))`."""
    return not js_truthy(value) or is_array(value)


@dataclass(frozen=True)
class Check:
    field: str
    passes: Callable[[Any], bool]
    message: str


# --- the pipeline shared by both exchanges ----------------------------------------------------


class ExchangeCompiler:
    """parse body -> authorize -> validate -> HookCall; subclasses give name, order and checks.

    `order` lists the hook's arguments; its last entry is always `context`, the others are
    copied from the body's fields of the same name (None when absent).
    """

    name: ClassVar[str]
    order: ClassVar[tuple[str, ...]]
    checks: ClassVar[tuple[Check, ...]]

    def prepare(self, request: HookRequest, webtask: WebtaskContext) -> HookCall | bytes:
        headers = node_headers(request.headers)
        body = read_body(request.method, headers.get("content-type"), request.body)
        if body is INVALID_JSON_BODY:
            return error_envelope(DEFAULT_ERROR_NAME, INVALID_JSON, statusCode=400)
        if not is_authorized(webtask.secrets, headers.get("authorization")):
            return error_envelope(DEFAULT_ERROR_NAME, UNAUTHORIZED, statusCode=500)
        if not is_object(body):
            return error_envelope(DEFAULT_ERROR_NAME, BODY_NOT_OBJECT)
        for check in self.checks:
            if not check.passes(body.get(check.field)):
                return error_envelope(DEFAULT_ERROR_NAME, check.message)

        given = body.get("context")
        context: dict[str, Any] = dict(given) if is_object(given) else {}
        context["webtask"] = {
            "container": webtask.container,
            "name": webtask.name,
            "meta": dict(webtask.meta),
            "secrets": dict(webtask.secrets),
            "headers": headers,
            "query": dict(request.query),
            "method": request.method,
            "path": request.path,
        }
        args: dict[str, Any] = {field: body.get(field) for field in self.order[:-1]}
        args[self.order[-1]] = context
        return HookCall(args=args, order=self.order)

    def success(self, result: Any, has_result: bool) -> bytes:
        return success_envelope(result, has_result)

    def failure(self, error: Mapping[str, Any]) -> bytes:
        return failure_envelope(error)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

"""wtpy.compilers: body parsing, authorization, validation, hook arguments and envelopes."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from starlette.datastructures import Headers, QueryParams

import wtpy.compilers as compilers
from wtpy.compilers import (
    Compiler,
    HookCall,
    HookRequest,
    WebtaskContext,
    compiler_names,
    error_envelope,
    get_compiler,
    register,
)

CC = "auth0-ext-compilers/client-credentials-exchange"
PW = "auth0-ext-compilers/password-exchange"
BOTH = [CC, PW]
SECRET = "s3cr3t"
META = {"wt-compiler": CC, "auth0-extension": "runtime", "auth0-extension-secret": SECRET}

BODY_NOT_OBJECT = "Body received by extensibility point is not an object"
UNAUTHORIZED = "Unauthorized extensibility point"
INVALID_JSON = "Invalid request payload JSON format"
SERIALIZE_FAILED = "Error when JSON serializing the result of the extension point"

MSG = {
    CC: {
        "client": "Body .client received by extensibility point is not an object",
        "scope": "Body .scope received by extensibility point is neither empty nor an array",
        "audience": "Body .audience received by extensibility point is not a string",
    },
    PW: {
        "audience": "Body.audience received by extensibility point is not a string",
        "scope": "Body.scope received by extensibility point is neither empty nor an array",
        "user": "Body.user received by extensibility point is not an object",
        "client": "Body.client received by extensibility point is not an object",
    },
}
ORDER = {
    CC: ("client", "scope", "audience", "context"),
    PW: ("user", "client", "scope", "audience", "context"),
}


def valid_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = {"client": {"id": "c1"}, "scope": ["read"], "audience": "https://api"}
    if name == PW:
        body["user"] = {"id": "u1"}
    return body


def webtask(
    secrets: Mapping[str, str] | None = None, meta: Mapping[str, str] | None = None
) -> WebtaskContext:
    return WebtaskContext(
        container="default",
        name="myrule",
        meta=dict(META if meta is None else meta),
        secrets=dict({"auth0-extension-secret": SECRET} if secrets is None else secrets),
    )


def request(
    body: Any = None,
    *,
    raw: bytes | None = None,
    method: str = "POST",
    content_type: str | None = "application/json",
    authorization: str | None = f"Bearer {SECRET}",
    extra_headers: list[tuple[str, str]] | None = None,
    query: str = "",
    path: str = "",
) -> HookRequest:
    pairs: list[tuple[bytes, bytes]] = []
    if content_type is not None:
        pairs.append((b"content-type", content_type.encode("latin-1")))
    if authorization is not None:
        pairs.append((b"authorization", authorization.encode("latin-1")))
    for key, value in extra_headers or []:
        pairs.append((key.lower().encode("latin-1"), value.encode("latin-1")))
    if raw is None:
        raw = b"" if body is None else orjson.dumps(body)
    return HookRequest(
        method=method, headers=Headers(raw=pairs), query=QueryParams(query), path=path, body=raw
    )


def err(message: str, name: str = "Error", **extra: Any) -> dict[str, Any]:
    return {
        "status": "error",
        "data": {"message": message, "name": name, "stack": f"{name}: {message}", **extra},
    }


def prepare(name: str, req: HookRequest, wt: WebtaskContext | None = None) -> HookCall | bytes:
    compiler = get_compiler(name)
    assert compiler is not None
    return compiler.prepare(req, webtask() if wt is None else wt)


def prepared_error(name: str, req: HookRequest, wt: WebtaskContext | None = None) -> dict[str, Any]:
    out = prepare(name, req, wt)
    assert isinstance(out, bytes), out
    return orjson.loads(out)


def prepared_call(name: str, req: HookRequest, wt: WebtaskContext | None = None) -> HookCall:
    out = prepare(name, req, wt)
    assert isinstance(out, HookCall), out
    return out


# --- registry --------------------------------------------------------------------------------


def test_public_api() -> None:
    assert sorted(compilers.__all__) == sorted(
        [
            "HookRequest",
            "WebtaskContext",
            "HookCall",
            "Compiler",
            "get_compiler",
            "compiler_names",
            "register",
            "error_envelope",
            "ENTRY_POINT_GROUP",
            "load_entry_points",
            "ExchangeCompiler",
            "Check",
            "is_array",
            "is_empty_or_array",
            "is_object",
            "is_string",
            "js_truthy",
        ]
    )


def test_registry_names() -> None:
    assert compiler_names() == [CC, PW]
    for name in BOTH:
        compiler = get_compiler(name)
        assert compiler is not None
        assert compiler.name == name
        assert isinstance(compiler, Compiler)


@pytest.mark.parametrize(
    "name",
    [
        f" {CC}",
        f"{CC} ",
        CC.upper(),
        f"{CC}@6",
        "auth0-ext-compilers/generic",
        "",
        "client-credentials-exchange",
    ],
)
def test_registry_exact_names_only(name: str) -> None:
    assert get_compiler(name) is None


def test_registry_non_string_name() -> None:
    assert get_compiler(None) is None  # type: ignore[arg-type]


class _Custom:
    name = "example/custom"

    def prepare(self, request: HookRequest, webtask: WebtaskContext) -> HookCall | bytes:
        return HookCall(args={"context": {}}, order=("context",))

    def success(self, result: Any, has_result: bool) -> bytes:
        return b"{}"

    def failure(self, error: Mapping[str, Any]) -> bytes:
        return b"{}"


def test_register_extension_and_duplicates() -> None:
    from wtpy.compilers import _registry

    custom = _Custom()
    try:
        register(custom)
        assert get_compiler("example/custom") is custom
        assert compiler_names() == sorted([CC, PW, "example/custom"])
        with pytest.raises(ValueError, match="already registered"):
            register(_Custom())
        replacement = _Custom()
        register(replacement, replace=True)
        assert get_compiler("example/custom") is replacement
    finally:
        _registry._compilers.pop("example/custom", None)
    assert compiler_names() == [CC, PW]
    with pytest.raises(ValueError, match="already registered"):
        register(get_compiler(CC))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad_name", ["", " padded ", None])
def test_register_rejects_bad_names(bad_name: Any) -> None:
    custom = _Custom()
    custom.name = bad_name
    with pytest.raises(ValueError, match="invalid compiler name"):
        register(custom)


def test_register_rejects_non_compilers() -> None:
    with pytest.raises(TypeError):
        register(object())  # type: ignore[arg-type]


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize(
    "raw",
    [b"null", b"[]", b'[{"client": {}}]', b'"text"', b"42", b"true", b"false"],
)
def test_body_not_an_object(name: str, raw: bytes) -> None:
    assert prepared_error(name, request(raw=raw)) == err(BODY_NOT_OBJECT)


def _validation_cases() -> list[tuple[str, str, Any, str | None]]:
    """(compiler, field, value, failing field or None) - value `...` removes the field."""
    cases: list[tuple[str, str, Any, str | None]] = []
    value: Any
    for name in BOTH:
        object_fields = ["client", "user"] if name == PW else ["client"]
        for field in object_fields:
            for value in [..., None, [], [{}], "x", "", 0, 1, True, False]:
                cases.append((name, field, value, field))
            for value in [{}, {"a": [1]}]:
                cases.append((name, field, value, None))
        for value in [..., None, 1, 0, "", ["a"], {}, True]:
            cases.append(
                (
                    name,
                    "audience",
                    value,
                    None if value == "" and isinstance(value, str) else "audience",
                )
            )
        cases.append((name, "audience", "https://api", None))
        # scope: JS `body.scope && !Array.isArray(body.scope)` - falsy values and arrays pass.
        for value in [..., None, "", 0, 0.0, False, [], ["a", "b"], [1, None]]:
            cases.append((name, "scope", value, None))
        for value in ["read", " ", 1, -1, 0.5, True, {}, {"0": "a"}]:
            cases.append((name, "scope", value, "scope"))
    return cases


@pytest.mark.parametrize(("name", "field", "value", "failing"), _validation_cases())
def test_field_validation(name: str, field: str, value: Any, failing: str | None) -> None:
    body = valid_body(name)
    if value is ...:
        body.pop(field, None)
    else:
        body[field] = value
    out = prepare(name, request(body))
    if failing is None:
        assert isinstance(out, HookCall)
        assert out.args[field] == (None if value is ... else value)
    else:
        assert isinstance(out, bytes)
        assert orjson.loads(out) == err(MSG[name][failing])


@pytest.mark.parametrize(
    ("name", "body", "failing"),
    [
        # client-credentials: client, scope, audience
        (CC, {}, "client"),
        (CC, {"scope": "x", "audience": 1}, "client"),
        (CC, {"client": {}, "scope": "x", "audience": 1}, "scope"),
        (CC, {"client": {}, "scope": ["x"], "audience": 1}, "audience"),
        (CC, {"client": {}, "scope": "x", "user": None}, "scope"),
        # password: audience, scope, user, client
        (PW, {}, "audience"),
        (PW, {"scope": "x", "user": 1, "client": 1}, "audience"),
        (PW, {"audience": "a", "scope": "x", "user": 1, "client": 1}, "scope"),
        (PW, {"audience": "a", "user": 1, "client": 1}, "user"),
        (PW, {"audience": "a", "scope": ["x"], "client": 1}, "user"),
        (PW, {"audience": "a", "user": {}}, "client"),
    ],
)
def test_first_failure_wins(name: str, body: dict[str, Any], failing: str) -> None:
    assert prepared_error(name, request(body)) == err(MSG[name][failing])


def test_error_envelope_bytes_exact() -> None:
    out = prepare(CC, request({"client": {}, "audience": 7}))
    assert out == (
        b'{"status":"error","data":{"message":"Body .audience received by extensibility point is not a string",'
        b'"name":"Error","stack":"Error: Body .audience received by extensibility point is not a string"}}'
    )


# --- order: parse, then authorization, then validation ------------------------------------------


@pytest.mark.parametrize("name", BOTH)
def test_invalid_json_beats_wrong_auth(name: str) -> None:
    out = prepare(name, request(raw=b"{nope", authorization="Bearer wrong"))
    assert out == (
        b'{"status":"error","data":{"message":"Invalid request payload JSON format","name":"Error",'
        b'"stack":"Error: Invalid request payload JSON format","statusCode":400}}'
    )


@pytest.mark.parametrize("name", BOTH)
def test_wrong_auth_beats_validation(name: str) -> None:
    out = prepare(name, request(raw=b"[1, 2]", authorization="Bearer wrong"))
    assert out == (
        b'{"status":"error","data":{"message":"Unauthorized extensibility point","name":"Error",'
        b'"stack":"Error: Unauthorized extensibility point","statusCode":500}}'
    )


@pytest.mark.parametrize("name", BOTH)
def test_wrong_auth_without_body(name: str) -> None:
    assert prepared_error(name, request(method="GET", authorization=None)) == err(
        UNAUTHORIZED, statusCode=500
    )


@pytest.mark.parametrize("name", BOTH)
def test_good_auth_then_validation(name: str) -> None:
    assert prepared_error(name, request(raw=b"[1, 2]")) == err(BODY_NOT_OBJECT)


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"{'a': 1}",
        b"{}x",
        b"   ",
        b"NaN",
        b"\xef\xbb\xbf{}",
        b'{"a": "\xff"}',
        b"[1e400]",
        b"[" * 2000 + b"]" * 2000,
    ],
)
def test_invalid_json_variants(name: str, raw: bytes) -> None:
    assert prepared_error(name, request(raw=raw)) == err(INVALID_JSON, statusCode=400)


# --- authorization header ------------------------------------------------------------------------


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize(
    ("secret", "header", "ok"),
    [
        (SECRET, None, False),
        (SECRET, "", False),
        (SECRET, f"Bearer {SECRET}", True),
        (SECRET, f"bearer {SECRET}", True),
        (SECRET, f"BEARER {SECRET}", True),
        (SECRET, f"BeArEr {SECRET}", True),
        (SECRET, f"  Bearer {SECRET}  ", True),
        (SECRET, f"\tBearer {SECRET}\t", True),
        (SECRET, f"\xa0Bearer {SECRET}\xa0", True),  # JS trim() removes NBSP
        (SECRET, f"Bearer  {SECRET}", False),  # two spaces: the group is " s3cr3t"
        (" " + SECRET, f"Bearer  {SECRET}", True),
        (SECRET, f"Bearer\t{SECRET}", False),
        (SECRET, f"Bearer{SECRET}", False),
        (SECRET, "Bearer ", False),
        (SECRET, "Bearer", False),
        (SECRET, f"Basic {SECRET}", False),
        (SECRET, f"Token {SECRET}", False),
        (SECRET, "Bearer wrong", False),
        (SECRET, f"Bearer {SECRET}x", False),
        (SECRET, f"Bearer {SECRET[:-1]}", False),
        (SECRET, f"Bearer {SECRET.upper()}", False),
        (SECRET, f"xBearer {SECRET}", False),
        (SECRET, f"Bearer {SECRET} extra", False),
        (SECRET, f"Bearer {SECRET}\x85", False),  # Python strips U+0085, JS does not
        (SECRET + " ", f"Bearer {SECRET} ", False),  # the header is trimmed, the secret is not
        ("a b", "Bearer a b", True),
        ("\xe9t\xe9", "Bearer \xe9t\xe9", True),
    ],
)
def test_authorization_header(name: str, secret: str, header: str | None, ok: bool) -> None:
    out = prepare(
        name,
        request(valid_body(name), authorization=header),
        webtask({"auth0-extension-secret": secret}),
    )
    if ok:
        assert isinstance(out, HookCall)
    else:
        assert isinstance(out, bytes)
        assert orjson.loads(out) == err(UNAUTHORIZED, statusCode=500)


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize("secrets", [{}, {"auth0-extension-secret": ""}, {"other": SECRET}])
@pytest.mark.parametrize("header", [None, "Bearer whatever", "Basic x"])
def test_no_secret_no_authorization(name: str, secrets: dict[str, str], header: str | None) -> None:
    out = prepare(name, request(valid_body(name), authorization=header), webtask(secrets))
    assert isinstance(out, HookCall)


@pytest.mark.parametrize("name", BOTH)
def test_meta_secret_alone_does_not_enable_auth(name: str) -> None:
    # Only the *secret* counts; the meta value of the same name is informational.
    out = prepare(
        name, request(valid_body(name), authorization=None), webtask(secrets={}, meta=META)
    )
    assert isinstance(out, HookCall)


@pytest.mark.parametrize("name", BOTH)
def test_first_authorization_header_wins(name: str) -> None:
    req = request(
        valid_body(name),
        authorization=f"Bearer {SECRET}",
        extra_headers=[("Authorization", "Bearer no")],
    )
    assert isinstance(prepare(name, req), HookCall)
    req = request(
        valid_body(name),
        authorization="Bearer no",
        extra_headers=[("Authorization", f"Bearer {SECRET}")],
    )
    assert prepared_error(name, req) == err(UNAUTHORIZED, statusCode=500)


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize("terminator", ["\n", "\r", "\u2028", "\u2029"])
def test_token_with_js_line_terminator_never_matches(name: str, terminator: str) -> None:
    # `.` in /^bearer (.+)$/i stops at JS line terminators, even when the secret holds one.
    secret = f"a{terminator}b"
    req = HookRequest(
        method="POST",
        headers={"content-type": "application/json", "authorization": f"Bearer {secret}"},
        query={},
        path="",
        body=orjson.dumps(valid_body(name)),
    )
    assert prepared_error(name, req, webtask({"auth0-extension-secret": secret})) == err(
        UNAUTHORIZED, statusCode=500
    )
    # At the ends the terminator is trimmed away, like JS trim().
    req = HookRequest(
        method="POST",
        headers={
            "content-type": "application/json",
            "authorization": f"{terminator}Bearer {SECRET}{terminator}",
        },
        query={},
        path="",
        body=orjson.dumps(valid_body(name)),
    )
    assert isinstance(prepare(name, req), HookCall)


def test_plain_mapping_headers_any_case() -> None:
    req = HookRequest(
        method="POST",
        headers={"Content-Type": "application/json", "AUTHORIZATION": f"Bearer {SECRET}"},
        query={},
        path="",
        body=orjson.dumps(valid_body(CC)),
    )
    call = prepared_call(CC, req)
    assert call.args["context"]["webtask"]["headers"] == {
        "content-type": "application/json",
        "authorization": f"Bearer {SECRET}",
    }


# --- content types and methods ----------------------------------------------------------------------


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
        " application/json ; foo=bar",
        "application/vnd.api+json",
        "application/problem+json; charset=utf-8",
        "text/x-custom+json",
    ],
)
def test_json_content_types_parse(name: str, content_type: str) -> None:
    call = prepared_call(name, request(valid_body(name), content_type=content_type))
    assert call.args["audience"] == "https://api"


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "text/json",
        "application/x-www-form-urlencoded",
        "application/jsonx",
        "application/+json",
        "+json",
        "json",
        "application/octet-stream",
    ],
)
def test_non_json_content_types_are_not_objects(name: str, content_type: str | None) -> None:
    assert prepared_error(name, request(valid_body(name), content_type=content_type)) == err(
        BODY_NOT_OBJECT
    )


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize("content_type", [None, "text/plain"])
def test_non_json_garbage_is_not_parsed(name: str, content_type: str | None) -> None:
    assert prepared_error(name, request(raw=b"{nope", content_type=content_type)) == err(
        BODY_NOT_OBJECT
    )


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "get"])
def test_bodyless_methods_ignore_the_body(name: str, method: str) -> None:
    # Even invalid JSON is never read for these methods.
    for req in (request(valid_body(name), method=method), request(raw=b"{nope", method=method)):
        assert prepared_error(name, req) == err(BODY_NOT_OBJECT)


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_methods_with_body(name: str, method: str) -> None:
    call = prepared_call(name, request(valid_body(name), method=method))
    assert call.args["context"]["webtask"]["method"] == method


@pytest.mark.parametrize("name", BOTH)
def test_empty_body_is_no_body(name: str) -> None:
    assert prepared_error(name, request(raw=b"")) == err(BODY_NOT_OBJECT)


# --- hook arguments and context ---------------------------------------------------------------------


@pytest.mark.parametrize("name", BOTH)
def test_hook_call_args_and_order(name: str) -> None:
    body = valid_body(name)
    body["context"] = {"request": {"ip": "1.2.3.4"}, "n": 1}
    body["extra"] = "dropped"
    body["connection"] = {"id": "x"}
    req = request(
        body,
        query="a=1&b=two",
        path="/sub/path",
        extra_headers=[
            ("X-Forwarded-For", "1.2.3.4"),
            ("x-multi", "1"),
            ("X-Multi", "2"),
            ("cookie", "a=1"),
            ("Cookie", "b=2"),
        ],
    )
    call = prepared_call(name, req)
    assert call.order == ORDER[name]
    assert tuple(call.args) == ORDER[name]
    expected_webtask = {
        "container": "default",
        "name": "myrule",
        "meta": META,
        "secrets": {"auth0-extension-secret": SECRET},
        "headers": {
            "content-type": "application/json",
            "authorization": f"Bearer {SECRET}",
            "x-forwarded-for": "1.2.3.4",
            "x-multi": "1, 2",
            "cookie": "a=1; b=2",
        },
        "query": {"a": "1", "b": "two"},
        "method": "POST",
        "path": "/sub/path",
    }
    expected: dict[str, Any] = {
        "client": {"id": "c1"},
        "scope": ["read"],
        "audience": "https://api",
        "context": {"request": {"ip": "1.2.3.4"}, "n": 1, "webtask": expected_webtask},
    }
    if name == PW:
        expected = {"user": {"id": "u1"}, **expected}
    assert call.args == expected
    assert list(call.args["context"]["webtask"]) == [
        "container",
        "name",
        "meta",
        "secrets",
        "headers",
        "query",
        "method",
        "path",
    ]
    # Only JSON-able data crosses into the sandbox.
    assert orjson.loads(orjson.dumps(call.args)) == expected


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize("context", [..., None, [], [1, 2], "ctx", 0, 1, True, False])
def test_non_object_context_becomes_empty(name: str, context: Any) -> None:
    body = valid_body(name)
    if context is not ...:
        body["context"] = context
    call = prepared_call(name, request(body))
    assert list(call.args["context"]) == ["webtask"]
    assert call.args["context"]["webtask"]["secrets"] == {"auth0-extension-secret": SECRET}
    assert call.args["context"]["webtask"]["meta"] == META


@pytest.mark.parametrize("name", BOTH)
def test_body_context_webtask_is_overwritten(name: str) -> None:
    body = valid_body(name)
    body["context"] = {"webtask": {"secrets": {"forged": "x"}}, "keep": True}
    call = prepared_call(name, request(body))
    assert call.args["context"]["keep"] is True
    assert call.args["context"]["webtask"]["secrets"] == {"auth0-extension-secret": SECRET}


@pytest.mark.parametrize("name", BOTH)
def test_missing_scope_is_passed_as_none(name: str) -> None:
    body = valid_body(name)
    del body["scope"]
    call = prepared_call(name, request(body))
    assert "scope" in call.args
    assert call.args["scope"] is None


@pytest.mark.parametrize("name", BOTH)
def test_inputs_not_mutated_and_calls_independent(name: str) -> None:
    meta = dict(META)
    secrets = {"auth0-extension-secret": SECRET}
    wt = WebtaskContext(container="default", name="myrule", meta=meta, secrets=secrets)
    body = valid_body(name)
    body["context"] = {"a": {"b": 1}}
    raw = orjson.dumps(body)
    req = request(raw=raw)
    snapshot = copy.deepcopy((meta, secrets))
    first = prepared_call(name, req, wt)
    first.args["context"]["webtask"]["meta"]["changed"] = "yes"
    first.args["context"]["webtask"]["secrets"].clear()
    first.args["context"]["webtask"]["headers"].clear()
    second = prepared_call(name, req, wt)
    assert (meta, secrets) == snapshot
    assert req.body == raw
    assert second.args["context"]["webtask"]["meta"] == META
    assert second.args["context"]["webtask"]["secrets"] == {"auth0-extension-secret": SECRET}
    assert second.args["context"]["webtask"]["headers"]["authorization"] == f"Bearer {SECRET}"
    assert second.args["context"] == {"a": {"b": 1}, "webtask": second.args["context"]["webtask"]}


@pytest.mark.parametrize("name", BOTH)
def test_unicode_and_nested_values_survive(name: str) -> None:
    body = valid_body(name)
    body["client"] = {"name": "caf\u00e9 \U0001f600", "metadata": {"k": [1, 2.5, None, True]}}
    body["scope"] = ["a:b", "\u00fc"]
    call = prepared_call(name, request(body))
    assert call.args["client"] == body["client"]
    assert call.args["scope"] == ["a:b", "\u00fc"]


# --- outcome envelopes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"accessToken": {"scope": ["extra"], "https://foo.com/claim": "bar"}},
         b'{"statusCode":200,"headers":{},"status":"success","data":{"accessToken":{"scope":["extra"],"https://foo.com/claim":"bar"}}}'),
        (None, b'{"statusCode":200,"headers":{},"status":"success","data":null}'),
        ([1, "a"], b'{"statusCode":200,"headers":{},"status":"success","data":[1,"a"]}'),
        ("text", b'{"statusCode":200,"headers":{},"status":"success","data":"text"}'),
        (0, b'{"statusCode":200,"headers":{},"status":"success","data":0}'),
        (False, b'{"statusCode":200,"headers":{},"status":"success","data":false}'),
    ],
)  # fmt: skip
def test_success_with_data(name: str, result: Any, expected: bytes) -> None:
    compiler = get_compiler(name)
    assert compiler is not None
    assert compiler.success(result, True) == expected


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize("result", [None, {"ignored": True}])
def test_success_without_data(name: str, result: Any) -> None:
    compiler = get_compiler(name)
    assert compiler is not None
    assert compiler.success(result, False) == b'{"statusCode":200,"headers":{},"status":"success"}'


def _nest(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize(
    "make_result",
    [
        object,
        lambda: {1: "int key"},
        lambda: 2**64,
        lambda: "\ud800",
        lambda: {"a": {b"bytes"}},
        lambda: _nest(300),
    ],
    ids=["object", "int-key", "big-int", "surrogate", "set", "too-deep"],
)
def test_success_serialization_failure(name: str, make_result: Any) -> None:
    compiler = get_compiler(name)
    assert compiler is not None
    assert compiler.success(make_result(), True) == (
        b'{"status":"error","data":{"message":"Error when JSON serializing the result of the extension point",'
        b'"name":"Error","stack":"Error: Error when JSON serializing the result of the extension point"}}'
    )


@pytest.mark.parametrize("name", BOTH)
def test_failure_envelope_from_sandbox_error(name: str) -> None:
    compiler = get_compiler(name)
    assert compiler is not None
    error = {
        "name": "InvalidScopeError",
        "message": "nope",
        "stack": 'Traceback ...\n  File "<webtask default/myrule>", line 2',
    }
    assert compiler.failure(error) == (
        b'{"status":"error","data":{"message":"nope","name":"InvalidScopeError",'
        b'"stack":"Traceback ...\\n  File \\"<webtask default/myrule>\\", line 2"}}'
    )


@pytest.mark.parametrize("name", BOTH)
def test_failure_envelope_extra_keys_follow_core_keys(name: str) -> None:
    compiler = get_compiler(name)
    assert compiler is not None
    error = {
        "error_description": "Line 3: SyntaxError: invalid syntax",
        "stack": "s",
        "message": "Unable to compile the extensibility code as python",
        "name": "CompileError",
    }
    out = compiler.failure(error)
    assert out == (
        b'{"status":"error","data":{"message":"Unable to compile the extensibility code as python",'
        b'"name":"CompileError","stack":"s","error_description":"Line 3: SyntaxError: invalid syntax"}}'
    )


@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ({}, err("Unknown error")),
        ({"message": "m"}, err("m")),
        (
            {"name": "ValueError", "message": ""},
            {
                "status": "error",
                "data": {"message": "", "name": "ValueError", "stack": "ValueError"},
            },
        ),
        ({"name": "", "message": "m", "stack": None}, err("m")),
        ({"name": 5, "message": 7}, err("Unknown error")),
        ({"message": "m", "extra": {1, 2}}, err("m")),  # an unserialisable extra is dropped
    ],
)
def test_failure_envelope_defaults(
    name: str, error: dict[str, Any], expected: dict[str, Any]
) -> None:
    compiler = get_compiler(name)
    assert compiler is not None
    assert orjson.loads(compiler.failure(error)) == expected


def test_error_envelope_helper() -> None:
    assert error_envelope("TimeoutError", "Script execution timed out after 20 seconds") == (
        b'{"status":"error","data":{"message":"Script execution timed out after 20 seconds",'
        b'"name":"TimeoutError","stack":"TimeoutError: Script execution timed out after 20 seconds"}}'
    )
    assert error_envelope("Error", "boom", statusCode=500, error_description="why") == (
        b'{"status":"error","data":{"message":"boom","name":"Error","stack":"Error: boom",'
        b'"statusCode":500,"error_description":"why"}}'
    )
    assert error_envelope("Error", "m", stack="custom") == (
        b'{"status":"error","data":{"message":"m","name":"Error","stack":"custom"}}'
    )
    # `name` / `message` cannot be overridden through extra keys.
    assert orjson.loads(error_envelope("A", "b", **{"name": "X", "message": "Y"})) == err(
        "b", name="A"
    )
    # Lone surrogates cannot reach the wire; the envelope still serialises.
    assert orjson.loads(error_envelope("Error", "bad \ud800")) == {
        "status": "error",
        "data": {"message": "bad ?", "name": "Error", "stack": "Error: bad ?"},
    }

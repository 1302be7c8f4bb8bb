"""wtpy.tokenserver: grants, wtpy/client/user authentication, hook outcomes, JWT and JWKS, config.

The hook is played by an httpx.MockTransport that speaks the runtime's wire format and
runs the documented rule (adds https://foo.com/claim and scope "extra"); "unreachable"
uses a real loopback port with nothing listening.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from click.testing import CliRunner
from conftest import REPO, ThreadServer, free_port
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wtpy.tokenserver import (
    ConfigError,
    SigningKey,
    SigningKeyError,
    command,
    config_from_dict,
    create_app,
    hash_password,
    is_hashed,
    load_config,
    load_or_create_key,
    verify_password,
)

HOOK_SECRET = "shared-hook-secret"
AUDIENCE = "https://api.example.com"
ISSUER = "https://tokens.test/"
CC_URL = "http://runtime.test/api/run/default/myrule"
PW_URL = "http://runtime.test/api/run/default/password-rule"
BOB_HASH = hash_password("builder", n=2**10)
HASHED_CLIENT_SECRET = "hashed-client-secret"


def pbkdf2(password: str, salt: str = "seasalt", iterations: int = 1000) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"


def base_config() -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "token_lifetime": 600,
        "tenant": "acme",
        "hooks": {
            "client_credentials": {"url": CC_URL, "secret": HOOK_SECRET},
            "password": {"url": PW_URL, "secret": HOOK_SECRET},
        },
        "clients": [
            {"client_id": "client-1", "client_secret": "client-1-secret", "name": "Test", "metadata": {"k": "v"}},
            {"client_id": "spa", "name": "Public app"},
            {"client_id": "hashed", "client_secret": pbkdf2(HASHED_CLIENT_SECRET), "scopes": ["test", "read"]},
        ],
        "users": [
            {"user_id": "user-1", "username": "alice", "password": "wonderland", "email": "Alice@Example.com",
             "app_metadata": {"plan": "free"}},
            {"user_id": "user-2", "username": "bob", "password": BOB_HASH},
        ],
    }  # fmt: skip


# ----------------------------------------------------------------------------- the fake runtime


def envelope_success(data: Any = None, has_data: bool = True) -> bytes:
    body: dict[str, Any] = {"statusCode": 200, "headers": {}, "status": "success"}
    if has_data:
        body["data"] = data
    return orjson.dumps(body)


def envelope_error(name: str, message: str, **extra: Any) -> bytes:
    return orjson.dumps(
        {"status": "error", "data": {"message": message, "name": name, "stack": name, **extra}}
    )


class FakeRuntime:
    """The runtime's invocation endpoint: checks the secret, runs `rule` on the body."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.rule: Callable[[dict[str, Any]], Any] = self.documented_rule
        self.raw: bytes | None = None
        self.error: Exception | None = None

    @staticmethod
    def documented_rule(body: dict[str, Any]) -> Any:
        access_token: dict[str, Any] = {
            "https://foo.com/claim": "bar",
            "scope": list(body.get("scope") or []),
        }
        access_token["scope"].append("extra")
        return access_token

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        self.calls.append((str(request.url), dict(request.headers), body))
        if self.error is not None:
            raise self.error
        if self.raw is not None:
            return httpx.Response(200, content=self.raw)
        if request.headers.get("authorization") != f"Bearer {HOOK_SECRET}":
            return httpx.Response(
                200,
                content=envelope_error("Error", "Unauthorized extensibility point", statusCode=500),
            )
        result = self.rule(body)
        if isinstance(result, bytes):
            return httpx.Response(200, content=result)
        return httpx.Response(200, content=envelope_success(result))


class Served(ThreadServer):
    """The token server under uvicorn in a background thread, with an httpx client."""

    def __init__(self, app: Any) -> None:
        super().__init__(app, lifespan="on")
        self.start()
        self.http = httpx.Client(
            base_url=self.url, headers={"User-Agent": "pytest-agent"}, timeout=10
        )

    def close(self) -> None:
        self.http.close()
        self.stop()


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return load_or_create_key(tmp_path_factory.mktemp("keys") / "key.pem")


@pytest.fixture(scope="module")
def shared_runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def runtime(shared_runtime: FakeRuntime) -> FakeRuntime:
    shared_runtime.reset()  # a clean slate for every test
    return shared_runtime


def serve(config: dict[str, Any], key: SigningKey, runtime: FakeRuntime | None) -> Served:
    app = create_app(
        config_from_dict(config),
        signing_key=key,
        hook_transport=httpx.MockTransport(runtime) if runtime is not None else None,
    )
    return Served(app)


@pytest.fixture(scope="module")
def default_server(signing_key: SigningKey, shared_runtime: FakeRuntime) -> Iterator[Served]:
    served = serve(base_config(), signing_key, shared_runtime)
    yield served
    served.close()


@pytest.fixture
def client(default_server: Served, runtime: FakeRuntime) -> httpx.Client:
    return default_server.http


@pytest.fixture
def make_client(
    signing_key: SigningKey, runtime: FakeRuntime
) -> Iterator[Callable[..., httpx.Client]]:
    """A token server of the test's own configuration (transport=False: real network for hooks)."""
    served: list[Served] = []

    def make(config: dict[str, Any], transport: bool = True) -> httpx.Client:
        served.append(serve(config, signing_key, runtime if transport else None))
        return served[-1].http

    yield make
    for item in served:
        item.close()


def cc_params(**extra: str | None) -> dict[str, str]:
    """The request's parameters; a None in `extra` leaves that one out."""
    params: dict[str, str | None] = {
        "grant_type": "client_credentials",
        "client_id": "client-1",
        "client_secret": "client-1-secret",
        "audience": AUDIENCE,
        "scope": "test",
    }
    params.update(extra)
    return {key: value for key, value in params.items() if value is not None}


def pw_params(**extra: str | None) -> dict[str, str]:
    """The request's parameters; a None in `extra` leaves that one out."""
    params: dict[str, str | None] = {
        "grant_type": "password",
        "username": "alice",
        "password": "wonderland",
        "client_id": "client-1",
        "client_secret": "client-1-secret",
        "audience": AUDIENCE,
        "scope": "test",
    }
    params.update(extra)
    return {key: value for key, value in params.items() if value is not None}


def post(
    client: httpx.Client, params: dict[str, Any], form: bool = False, **kwargs: Any
) -> httpx.Response:
    if form:
        return client.post("/oauth/token", data=params, **kwargs)
    return client.post("/oauth/token", json=params, **kwargs)


def verify(client: httpx.Client, token: str, audience: str = AUDIENCE) -> dict[str, Any]:
    """Verify the JWT the way a resource server does: key from the JWKS by kid."""
    jwks = client.get("/.well-known/jwks.json").json()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    [jwk] = [key for key in jwks["keys"] if key["kid"] == header["kid"]]
    key = jwt.PyJWK(jwk)
    return jwt.decode(token, key=key, algorithms=["RS256"], audience=audience, issuer=ISSUER)


def oauth_error(response: httpx.Response, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert set(body) == {"error", "error_description"}
    assert response.headers["cache-control"] == "no-store"
    return body["error_description"]


# ----------------------------------------------------------------------------- both grants


@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
def test_client_credentials_documented_scenario(
    client: httpx.Client, runtime: FakeRuntime, form: bool
) -> None:
    response = post(client, cc_params(), form=form)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert body["scope"] == "test extra"
    claims = verify(client, body["access_token"])
    assert claims["scope"] == "test extra"
    assert claims["https://foo.com/claim"] == "bar"
    assert claims["sub"] == "client-1@clients"
    assert claims["azp"] == "client-1"
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE
    assert claims["exp"] - claims["iat"] == 600
    assert set(claims) == {
        "iss",
        "sub",
        "aud",
        "iat",
        "exp",
        "azp",
        "scope",
        "https://foo.com/claim",
    }

    [(url, headers, hook_body)] = runtime.calls
    assert url == CC_URL
    assert headers["authorization"] == f"Bearer {HOOK_SECRET}"
    assert hook_body == {
        "client": {"tenant": "acme", "id": "client-1", "name": "Test", "metadata": {"k": "v"}},
        "scope": ["test"],
        "audience": AUDIENCE,
        "context": {"ip": "127.0.0.1", "userAgent": "pytest-agent"},
    }


@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
def test_password_documented_scenario(
    client: httpx.Client, runtime: FakeRuntime, form: bool
) -> None:
    response = post(client, pw_params(), form=form)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "test extra"
    claims = verify(client, body["access_token"])
    assert claims["sub"] == "user-1"
    assert claims["azp"] == "client-1"
    assert claims["scope"] == "test extra"
    assert claims["https://foo.com/claim"] == "bar"

    [(url, _, hook_body)] = runtime.calls
    assert url == PW_URL
    assert hook_body["user"] == {
        "tenant": "acme", "id": "user-1", "username": "alice", "email": "Alice@Example.com",
        "app_metadata": {"plan": "free"},
    }  # fmt: skip
    assert "password" not in orjson.dumps(hook_body).decode().replace('"password-rule"', "")
    assert hook_body["client"]["id"] == "client-1"
    assert hook_body["scope"] == ["test"] and hook_body["audience"] == AUDIENCE


def test_password_with_hashed_password_and_email_login(client: httpx.Client) -> None:
    bob = post(client, pw_params(username="bob", password="builder"))
    assert verify(client, bob.json()["access_token"])["sub"] == "user-2"
    alice = post(client, pw_params(username="alice@example.COM"))
    assert verify(client, alice.json()["access_token"])["sub"] == "user-1"


def test_public_client_password_grant_without_secret(client: httpx.Client) -> None:
    response = post(client, pw_params(client_id="spa", client_secret=None))
    assert response.status_code == 200, response.text
    assert verify(client, response.json()["access_token"])["azp"] == "spa"


def test_public_client_may_not_use_client_credentials(
    client: httpx.Client, runtime: FakeRuntime
) -> None:
    response = post(client, cc_params(client_id="spa", client_secret=None))
    oauth_error(response, 400, "unauthorized_client")
    assert runtime.calls == []


def test_basic_client_authentication(client: httpx.Client) -> None:
    params = cc_params(client_id=None, client_secret=None)
    ok = post(client, params, form=True, auth=("client-1", "client-1-secret"))
    assert verify(client, ok.json()["access_token"])["sub"] == "client-1@clients"
    bad = post(client, params, form=True, auth=("client-1", "nope"))
    oauth_error(bad, 401, "invalid_client")
    assert bad.headers["www-authenticate"].startswith("Basic")
    both = post(client, cc_params(), form=True, auth=("client-1", "client-1-secret"))
    oauth_error(both, 400, "invalid_request")


def test_hashed_client_secret_and_default_scopes(client: httpx.Client) -> None:
    params = cc_params(client_id="hashed", client_secret=HASHED_CLIENT_SECRET, scope=None)
    response = post(client, params)
    assert response.json()["scope"] == "test read extra"
    refused = post(
        client, cc_params(client_id="hashed", client_secret=HASHED_CLIENT_SECRET, scope="admin")
    )
    assert "admin" in oauth_error(refused, 400, "invalid_scope")


def test_scope_as_json_array_and_deduplicated(client: httpx.Client, runtime: FakeRuntime) -> None:
    response = post(client, {**cc_params(), "scope": ["a", "b", "a"]})
    assert response.json()["scope"] == "a b extra"
    assert runtime.calls[0][2]["scope"] == ["a", "b"]


def test_default_audience_and_explicit_audience(client: httpx.Client) -> None:
    default = post(client, cc_params(audience=None))
    assert verify(client, default.json()["access_token"])["aud"] == AUDIENCE
    other = post(client, cc_params(audience="urn:other"))
    assert verify(client, other.json()["access_token"], audience="urn:other")["aud"] == "urn:other"


# ----------------------------------------------------------------------------- what the hook returns


def test_claims_filtering(client: httpx.Client, runtime: FakeRuntime) -> None:
    runtime.rule = lambda body: {
        "https://foo.com/claim": "bar",
        "http://example.org/n": {"nested": [1, 2]},
        "plain": "dropped",
        "sub": "evil",
        "iss": "evil",
        "exp": 1,
        "urn:not:a:url": 1,
        "ftp://x/y": 1,
        "scope": ["test"],
    }
    claims = verify(client, post(client, cc_params()).json()["access_token"])
    assert claims["https://foo.com/claim"] == "bar"
    assert claims["http://example.org/n"] == {"nested": [1, 2]}
    for dropped in ("plain", "urn:not:a:url", "ftp://x/y"):
        assert dropped not in claims
    assert claims["sub"] == "client-1@clients" and claims["iss"] == ISSUER
    assert claims["exp"] - claims["iat"] == 600


@pytest.mark.parametrize(
    ("result", "scope"),
    [
        ({"https://foo.com/claim": "bar"}, "test"),  # no scope: the requested scopes
        ({"scope": None}, "test"),
        ({"scope": ["other"]}, "other"),  # the hook's scope replaces the request's
        (envelope_success(has_data=False), "test"),  # no data at all
        (None, "test"),
    ],
)
def test_scope_from_hook(
    client: httpx.Client, runtime: FakeRuntime, result: Any, scope: str
) -> None:
    runtime.rule = lambda body: result
    response = post(client, cc_params())
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == scope
    assert verify(client, response.json()["access_token"])["scope"] == scope


def test_hook_grants_no_scope(client: httpx.Client, runtime: FakeRuntime) -> None:
    runtime.rule = lambda body: {"scope": []}
    response = post(client, cc_params())
    assert response.json()["scope"] == ""
    assert "scope" not in verify(client, response.json()["access_token"])


@pytest.mark.parametrize(
    "result", [["not", "an", "object"], "text", {"scope": "test extra"}, {"scope": ["a b"]}]
)
def test_invalid_hook_result_is_server_error(
    client: httpx.Client, runtime: FakeRuntime, result: Any
) -> None:
    runtime.rule = lambda body: result
    oauth_error(post(client, cc_params()), 500, "server_error")


def test_no_hook_configured(make_client: Callable[..., httpx.Client], runtime: FakeRuntime) -> None:
    config = base_config()
    del config["hooks"]
    client = make_client(config)
    response = post(client, cc_params(scope="a b"))
    assert response.json()["scope"] == "a b"
    claims = verify(client, response.json()["access_token"])
    assert "https://foo.com/claim" not in claims
    assert runtime.calls == []


# ----------------------------------------------------------------------------- hook failures


@pytest.mark.parametrize("grant", ["client_credentials", "password"])
def test_hook_error_is_access_denied(
    client: httpx.Client, runtime: FakeRuntime, grant: str
) -> None:
    runtime.rule = lambda body: envelope_error("InvalidScopeError", "You may not have that scope")
    params = cc_params() if grant == "client_credentials" else pw_params()
    response = post(client, params)
    assert oauth_error(response, 403, "access_denied") == "You may not have that scope"


def test_hook_unauthorized_is_server_error(
    make_client: Callable[..., httpx.Client], caplog: pytest.LogCaptureFixture
) -> None:
    config = base_config()
    config["hooks"]["client_credentials"]["secret"] = "not-the-secret"
    with caplog.at_level(logging.ERROR, logger="wtpy.tokenserver"):
        response = post(make_client(config), cc_params())
    oauth_error(response, 500, "server_error")
    assert "Unauthorized extensibility point" in caplog.text
    assert "not-the-secret" not in caplog.text


def test_hook_unreachable_is_503_and_logged(
    make_client: Callable[..., httpx.Client], caplog: pytest.LogCaptureFixture
) -> None:
    config = base_config()
    config["hooks"]["client_credentials"]["url"] = (
        f"http://127.0.0.1:{free_port()}/api/run/default/myrule"
    )
    with caplog.at_level(logging.WARNING, logger="wtpy.tokenserver"):
        response = post(make_client(config, transport=False), cc_params())
    oauth_error(response, 503, "temporarily_unavailable")
    assert response.headers["retry-after"]
    assert "cannot connect" in caplog.text and "/api/run/default/myrule" in caplog.text
    assert HOOK_SECRET not in caplog.text


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("slow"),
        httpx.ConnectTimeout("slow"),
        b"<html>bad gateway</html>",
        b'{"status": "?"}',
    ],
    ids=["read-timeout", "connect-timeout", "not-json", "malformed"],
)
def test_hook_timeout_or_protocol_error_is_503(
    client: httpx.Client, runtime: FakeRuntime, failure: Any, caplog: pytest.LogCaptureFixture
) -> None:
    if isinstance(failure, bytes):
        runtime.raw = failure
    else:
        runtime.error = failure
    with caplog.at_level(logging.WARNING, logger="wtpy.tokenserver"):
        response = post(client, pw_params())
    oauth_error(response, 503, "temporarily_unavailable")
    assert "password hook" in caplog.text and HOOK_SECRET not in caplog.text


# ----------------------------------------------------------------------------- refused requests


@pytest.mark.parametrize(
    "params",
    [
        cc_params(client_secret="wrong"),
        cc_params(client_secret=None),
        cc_params(client_id="unknown"),
        cc_params(client_id=None),
        pw_params(client_secret="wrong"),
        pw_params(client_id="unknown", client_secret=None),
    ],
)
def test_invalid_client(client: httpx.Client, runtime: FakeRuntime, params: dict[str, str]) -> None:
    oauth_error(post(client, params), 401, "invalid_client")
    assert runtime.calls == []


@pytest.mark.parametrize(
    "params",
    [
        pw_params(password="wrong"),
        pw_params(username="nobody"),
        pw_params(username="bob", password="wonderland"),
    ],
)
def test_wrong_password(client: httpx.Client, runtime: FakeRuntime, params: dict[str, str]) -> None:
    assert oauth_error(post(client, params), 400, "invalid_grant") == "Wrong username or password."
    assert runtime.calls == []


@pytest.mark.parametrize(
    "grant", ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"]
)
def test_unsupported_grant(client: httpx.Client, grant: str) -> None:
    oauth_error(post(client, cc_params(grant_type=grant)), 400, "unsupported_grant_type")


@pytest.mark.parametrize(
    ("params", "missing"),
    [
        (cc_params(grant_type=None), "grant_type"),
        (pw_params(username=None), "username"),
        (pw_params(password=None), "password"),
        (pw_params(username=""), "username"),
    ],
)
@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
def test_missing_parameters(
    client: httpx.Client, params: dict[str, str], missing: str, form: bool
) -> None:
    assert missing in oauth_error(post(client, params, form=form), 400, "invalid_request")


def test_missing_audience_without_default(make_client: Callable[..., httpx.Client]) -> None:
    config = base_config()
    del config["audience"]
    response = post(make_client(config), cc_params(audience=None))
    assert "audience" in oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"grant_type": 5}', "application/json"),
        (b"grant_type=client_credentials&grant_type=password", "application/x-www-form-urlencoded"),
        (b"grant_type=%ff", "application/x-www-form-urlencoded"),
        (b"grant_type=client_credentials", "text/plain"),
        (b"", ""),
    ],
)
def test_malformed_requests(client: httpx.Client, content: bytes, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    oauth_error(
        client.post("/oauth/token", content=content, headers=headers), 400, "invalid_request"
    )


def test_malformed_scope(client: httpx.Client) -> None:
    oauth_error(post(client, cc_params(scope='a "b"')), 400, "invalid_scope")


def test_oversized_body(client: httpx.Client) -> None:
    response = post(client, cc_params(scope="a" * 70_000))
    assert response.status_code == 413 and response.json()["error"] == "invalid_request"


def test_token_endpoint_is_post_only(client: httpx.Client) -> None:
    assert client.get("/oauth/token").status_code == 405


# ----------------------------------------------------------------------------- keys and JWKS


def test_jwks_publishes_public_key_only(client: httpx.Client, signing_key: SigningKey) -> None:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    [key] = response.json()["keys"]
    assert key["kty"] == "RSA" and key["use"] == "sig" and key["alg"] == "RS256"
    assert key["kid"] == signing_key.kid
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
    assert jwt.PyJWK(key).key_id == signing_key.kid


def test_token_not_verifiable_with_another_key(client: httpx.Client) -> None:
    token = post(client, cc_params()).json()["access_token"]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other, algorithms=["RS256"], audience=AUDIENCE)


def test_key_generated_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "key.pem"
    first = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert first.private_key.key_size == 2048
    second = load_or_create_key(path)
    assert second.kid == first.kid
    assert [p.name for p in path.parent.iterdir()] == ["key.pem"]


def test_bad_keys_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(SigningKeyError):
        load_or_create_key(garbage)
    small = tmp_path / "small.pem"
    small.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SigningKeyError, match="2048"):
        load_or_create_key(small)
    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SigningKeyError, match="RSA"):
        load_or_create_key(ec_key)


# ----------------------------------------------------------------------------- passwords


def test_password_hashes() -> None:
    scrypt_hash = hash_password("s3cret", n=2**10)
    assert is_hashed(scrypt_hash) and scrypt_hash.startswith("scrypt$1024$8$1$")
    assert verify_password("s3cret", scrypt_hash) and not verify_password("s3cret ", scrypt_hash)
    django_style = pbkdf2("lètmein")
    assert is_hashed(django_style)
    assert verify_password("lètmein", django_style) and not verify_password("letmein", django_style)
    assert not is_hashed("pa$$word") and verify_password("pa$$word", "pa$$word")
    assert not verify_password("pa$$word", "pa$$wor")


# ----------------------------------------------------------------------------- configuration


def test_sample_config_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WTPY_HOOK_SECRET", "from-env")
    monkeypatch.setenv("WTPY_DATA_DIR", str(tmp_path))
    config = load_config(REPO / "samples" / "tokenserver.yaml")
    assert config.hooks["client_credentials"].secret == "from-env"
    assert config.hooks["password"].url.endswith("/api/run/default/password-rule")
    assert config.signing_key == tmp_path / "tokenserver-signing-key.pem"
    client = config.client("client-1")
    assert client is not None and client.scopes == ("test",)
    bob = config.user("bob")
    assert bob is not None and verify_password("correct horse battery staple", bob.password)


def test_relative_signing_key_is_relative_to_config_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "ts.yaml"
    path.parent.mkdir()
    path.write_text(f"issuer: {ISSUER}\nsigning_key: keys/k.pem\n")
    assert load_config(path).signing_key == path.parent / "keys" / "k.pem"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("issuer"), "issuer is required"),
        (lambda c: c.update(isuer="x"), "unknown key"),
        (lambda c: c.update(token_lifetime=-1), "token_lifetime"),
        (
            lambda c: c["clients"].append({"client_id": "client-1", "client_secret": "x"}),
            "duplicate client_id",
        ),
        (
            lambda c: c["users"].append({"user_id": "u9", "username": "alice", "password": "x"}),
            "duplicate username",
        ),
        (
            lambda c: c["clients"].append(
                {"client_id": "p", "grant_types": ["client_credentials"]}
            ),
            "client_secret",
        ),
        (
            lambda c: c["users"].append(
                {"user_id": "u9", "username": "z", "password": "scrypt$1$2$3$s$h"}
            ),
            "malformed",
        ),
        (
            lambda c: c["hooks"].update(
                password={"url": PW_URL, "secret_env": "WTPY_TEST_UNSET_VAR"}
            ),
            "not set",
        ),
        (lambda c: c["hooks"].update(password={"url": "ftp://x"}), "http"),
        (lambda c: c["hooks"].update(implicit={"url": PW_URL}), "unknown key"),
        (lambda c: c["users"].append({"user_id": "u9", "username": "z"}), "password is required"),
    ],
)
def test_config_errors(change: Callable[[dict[str, Any]], Any], message: str) -> None:
    config = base_config()
    change(config)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(config, env={})


def test_command(tmp_path: Path) -> None:
    runner = CliRunner()
    help_text = runner.invoke(command, ["--help"])
    assert help_text.exit_code == 0
    for option in ("--config", "--host", "--port"):
        assert option in help_text.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("clients: []\n")
    result = runner.invoke(command, ["--config", str(bad)])
    assert result.exit_code == 2
    assert "issuer is required" in result.output
    assert not os.path.exists(tmp_path / "tokenserver-signing-key.pem")


def test_served_without_lifespan(signing_key: SigningKey, runtime: FakeRuntime) -> None:
    """An ASGI host that skips the lifespan still works: a hook client per request."""
    app = create_app(config_from_dict(base_config()), signing_key=signing_key,
                     hook_transport=httpx.MockTransport(runtime))  # fmt: skip

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ts.test") as http:
            return await http.post("/oauth/token", json=cc_params())

    response = asyncio.run(main())
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "test extra"

"""The documented "test your setup" for real: wtpy create -> token server -> signed JWT."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import yaml
from conftest import SAMPLES, WtpyServer, free_port

SECRET = "documented-scenario-secret-0123456789"
AUDIENCE = "https://api.example.com"


def wtpy(server: WtpyServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "WTPY_URL": server.url,
        "WTPY_TOKEN": server.token,
        "WTPY_CONTAINER": "docs",
    }
    env["WTPY_CONFIG_DIR"] = str(server.data_dir.parent / "cli-config")
    return subprocess.run(
        [sys.executable, "-m", "wtpy.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def create_documented(
    server: WtpyServer, sample: str, name: str, compiler: str, ext_name: str
) -> str:
    result = wtpy(
        server, "create", str(SAMPLES / sample), "--name", name,
        "--meta", f"wt-compiler=auth0-ext-compilers/{compiler}",
        "--meta", "auth0-extension=runtime",
        "--meta", f"auth0-extension-name={ext_name}",
        "--meta", f"auth0-extension-secret={SECRET}",
        "--secret", f"auth0-extension-secret={SECRET}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url == f"{server.url}/api/run/docs/{name}"
    assert SECRET not in result.stdout + result.stderr
    return url


@pytest.fixture(scope="module")
def token_server(server: WtpyServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cc_url = create_documented(
        server, "myrule.py", "myrule", "client-credentials-exchange", "credentials-exchange"
    )
    pe_url = create_documented(
        server, "password_rule.py", "password-rule", "password-exchange", "password-exchange"
    )
    folder = tmp_path_factory.mktemp("tokenserver")
    port = free_port()
    config = {
        "issuer": f"http://127.0.0.1:{port}/",
        "audience": AUDIENCE,
        "signing_key": str(folder / "key.pem"),
        "hooks": {
            "client_credentials": {"url": cc_url, "secret": SECRET},
            "password": {"url": pe_url, "secret": SECRET},
        },
        "clients": [
            {
                "client_id": "client-1",
                "client_secret": "client-1-secret",
                "name": "Test",
                "scopes": ["test"],
            }
        ],
        "users": [{"user_id": "user-1", "username": "alice", "password": "wonderland"}],
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    log_file = (folder / "log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "wtpy.cli", "tokenserver", "--config", str(folder / "config.yaml"), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=log_file,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/.well-known/jwks.json").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, (folder / "log").read_text()
        time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(10)
    log_file.close()


def verify(token_server: str, access_token: str) -> dict:
    keys = jwt.PyJWKSet.from_dict(httpx.get(f"{token_server}/.well-known/jwks.json").json())
    kid = jwt.get_unverified_header(access_token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    return jwt.decode(access_token, key.key, algorithms=["RS256"], audience=AUDIENCE)


@pytest.mark.parametrize("form", [False, True])
def test_client_credentials_documented_scenario(token_server: str, form: bool) -> None:
    params = {"client_id": "client-1", "client_secret": "client-1-secret", "audience": AUDIENCE,
              "grant_type": "client_credentials"}  # fmt: skip
    response = httpx.post(
        f"{token_server}/oauth/token", data=params if form else None, json=None if form else params
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "test extra"
    claims = verify(token_server, response.json()["access_token"])
    assert claims["scope"] == "test extra"
    assert claims["https://foo.com/claim"] == "bar"
    assert claims["sub"] == "client-1@clients"
    assert claims["iss"] == token_server + "/"


@pytest.mark.parametrize("form", [False, True])
def test_password_documented_scenario(token_server: str, form: bool) -> None:
    params = {"grant_type": "password", "username": "alice", "password": "wonderland", "client_id": "client-1",
              "client_secret": "client-1-secret", "audience": AUDIENCE, "scope": "test"}  # fmt: skip
    response = httpx.post(
        f"{token_server}/oauth/token", data=params if form else None, json=None if form else params
    )
    assert response.status_code == 200, response.text
    claims = verify(token_server, response.json()["access_token"])
    assert claims["scope"] == "test extra"
    assert claims["https://foo.com/claim"] == "bar"
    assert claims["sub"] == "user-1"


def test_hook_error_gives_access_denied(
    server: WtpyServer, token_server: str, tmp_path: Path
) -> None:
    failing = tmp_path / "deny.py"
    failing.write_text(
        "def hook(client, scope, audience, context):\n    raise InvalidRequestError('client blocked')\n"
    )
    result = wtpy(server, "update", "myrule", str(failing))
    assert result.returncode == 0, result.stderr
    try:
        response = httpx.post(f"{token_server}/oauth/token", json={
            "client_id": "client-1", "client_secret": "client-1-secret", "grant_type": "client_credentials"})  # fmt: skip
        assert response.status_code == 403
        assert response.json() == {"error": "access_denied", "error_description": "client blocked"}
    finally:
        assert wtpy(server, "update", "myrule", str(SAMPLES / "myrule.py")).returncode == 0

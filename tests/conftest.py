"""Shared fixtures: a real wtpy server process on a loopback port, driven over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Self

import httpx
import pytest
import uvicorn

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
CC = "auth0-ext-compilers/client-credentials-exchange"
PE = "auth0-ext-compilers/password-exchange"


@pytest.fixture(autouse=True)
def _cpu_limit_restored() -> Iterator[None]:
    """Tests that run `Worker.handle` in this process set RLIMIT_CPU as a worker does (CPU
    used so far + the job's budget). The test process is not a worker: left in place, that
    limit kills pytest with SIGXCPU once the rest of the run has used the budget up."""
    import resource

    from wtpy.sandbox import _limits

    before = resource.getrlimit(resource.RLIMIT_CPU)
    yield
    if resource.getrlimit(resource.RLIMIT_CPU) != before:
        resource.setrlimit(resource.RLIMIT_CPU, before)
    _limits._cpu_limit = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadServer:
    """An ASGI app under uvicorn on a loopback port, in a background thread of this process."""

    def __init__(self, app: Any, *, lifespan: Literal["auto", "on", "off"] = "off") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan=lifespan, timeout_graceful_shutdown=2)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 20) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WtpyServer:
    """`wtpy serve` in a child process; restartable and killable for durability tests."""

    def __init__(self, data_dir: Path, workers: int = 2, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.extra_env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.output = data_dir.parent / f"server-{self.port}.log"

    @property
    def token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def start(self, timeout: float = 30.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WTPY_")}
        env.update(self.extra_env)
        command = [
            sys.executable, "-m", "wtpy.cli", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--workers", str(self.workers),
        ]  # fmt: skip
        with open(self.output, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"wtpy serve exited: {self.output.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"wtpy serve did not start: {self.output.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def put(
        self,
        name: str,
        code: str,
        meta: dict,
        secrets: dict | None = None,
        container: str = "default",
    ) -> httpx.Response:
        with self.client() as client:
            return client.put(
                f"/api/webtask/{container}/{name}",
                json={"code": code, "meta": meta, "secrets": secrets or {}},
            )

    def run(
        self,
        name: str,
        body: object = None,
        secret: str | None = None,
        container: str = "default",
        **kwargs: Any,
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        return httpx.post(
            f"{self.url}/api/run/{container}/{name}",
            json=body,
            headers=headers,
            timeout=60,
            **kwargs,
        )


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WtpyServer]:
    """One server for the whole session: tests use distinct webtask names."""
    srv = WtpyServer(tmp_path_factory.mktemp("wtpy") / "data")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[WtpyServer]:
    """A server of the test's own, for tests that restart or kill it."""
    srv = WtpyServer(tmp_path / "data")
    srv.start()
    yield srv
    srv.kill()


def cc_meta(secret: str | None = None, **extra: str) -> dict[str, str]:
    meta = {
        "wt-compiler": CC,
        "auth0-extension": "runtime",
        "auth0-extension-name": "credentials-exchange",
    }
    if secret is not None:
        meta["auth0-extension-secret"] = secret
    meta.update(extra)
    return meta


def pe_meta(secret: str | None = None, **extra: str) -> dict[str, str]:
    meta = {
        "wt-compiler": PE,
        "auth0-extension": "runtime",
        "auth0-extension-name": "password-exchange",
    }
    if secret is not None:
        meta["auth0-extension-secret"] = secret
    meta.update(extra)
    return meta


CC_BODY = {
    "audience": "https://api.example.com",
    "client": {"id": "client-1", "name": "Test", "tenant": "t", "metadata": {}},
    "scope": ["test"],
    "context": {"ip": "127.0.0.1", "userAgent": "pytest"},
}
PE_BODY = {**CC_BODY, "user": {"id": "user-1", "email": "u@example.com"}}


def raw_request(
    server: WtpyServer,
    data: bytes,
    timeout: float = 10,
    until: Callable[[bytes], bool] | None = None,
) -> bytes:
    """Send raw bytes; what comes back until the server closes, a read times out or is
    reset, or `until(received)` holds."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if until is not None and until(received):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    return received

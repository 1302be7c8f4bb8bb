"""`HookClient` (sync) and `AsyncHookClient`: invoke one extensibility point over HTTP."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import httpx
import orjson

from ._errors import HookProtocolError, HookTimeoutError, HookUnavailableError
from ._wire import (
    MAX_RESPONSE_BYTES,
    HookResult,
    check_secret,
    check_url,
    client_credentials_body,
    parse_envelope,
    password_body,
    redact_url,
    request_headers,
)

__all__ = ["DEFAULT_TIMEOUT", "AsyncHookClient", "HookClient"]

DEFAULT_TIMEOUT = 5.0


def _encode(body: Any) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError as error:  # orjson.JSONEncodeError is a TypeError
        raise TypeError(f"hook body is not JSON-serialisable: {error}") from None


def _transport_error(url: str, error: httpx.HTTPError, timeout: float) -> HookUnavailableError:
    # Messages name the URL without credentials and never include the secret or the body.
    where = redact_url(url)
    if isinstance(error, httpx.TimeoutException):
        return HookTimeoutError(f"extensibility point {where} did not answer within {timeout:g} s")
    reason = type(error).__name__
    if isinstance(error, httpx.ConnectError):
        return HookUnavailableError(f"cannot connect to extensibility point {where} ({reason})")
    return HookUnavailableError(f"extensibility point {where} failed: {reason}")


class _Base:
    def __init__(self, url: str, secret: str | None, timeout: float) -> None:
        check_url(url)
        check_secret(secret)
        if not timeout or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.url = url
        self.timeout = float(timeout)
        self._headers = request_headers(secret)

    def __repr__(self) -> str:  # never shows the secret
        return f"{type(self).__name__}(url={redact_url(self.url)!r}, timeout={self.timeout:g})"

    def _too_large(self, status_code: int) -> HookProtocolError:
        return HookProtocolError(
            f"extensibility point answer exceeds {MAX_RESPONSE_BYTES} bytes",
            status_code=status_code,
        )


class HookClient(_Base):
    """Synchronous client for one extensibility point URL.

    `timeout` bounds connecting and every read/write, and the whole exchange is abandoned
    once it has run for `timeout` seconds. Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, secret, timeout)
        self._http = httpx.Client(
            timeout=httpx.Timeout(self.timeout), transport=transport, follow_redirects=False
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HookClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def invoke(self, body: Any) -> Any:
        """POST `body` as JSON; the envelope's data (None when absent), or raise."""
        return self._call(body)[1]

    def client_credentials(
        self,
        client: Mapping[str, Any],
        scope: Sequence[str] | None,
        audience: str,
        ip: str | None = None,
        user_agent: str | None = None,
        extra_context: Mapping[str, Any] | None = None,
    ) -> HookResult:
        body = client_credentials_body(client, scope, audience, ip, user_agent, extra_context)
        return HookResult(self._call(body)[1])

    def password(
        self,
        user: Mapping[str, Any],
        client: Mapping[str, Any],
        scope: Sequence[str] | None,
        audience: str,
        ip: str | None = None,
        user_agent: str | None = None,
        extra_context: Mapping[str, Any] | None = None,
    ) -> HookResult:
        body = password_body(user, client, scope, audience, ip, user_agent, extra_context)
        return HookResult(self._call(body)[1])

    def _call(self, body: Any) -> tuple[bool, Any]:
        content = _encode(body)
        deadline = time.monotonic() + self.timeout
        try:
            with self._http.stream(
                "POST", self.url, content=content, headers=self._headers
            ) as response:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise self._too_large(response.status_code)
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("deadline exceeded")
                status_code = response.status_code
        except httpx.HTTPError as error:
            raise _transport_error(self.url, error, self.timeout) from None
        return parse_envelope(status_code, b"".join(chunks))


class AsyncHookClient(_Base):
    """Asynchronous client for one extensibility point URL (same API as HookClient, awaited).

    The whole exchange is bounded by `timeout` seconds. Use `async with`, or `await aclose()`.
    """

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, secret, timeout)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout), transport=transport, follow_redirects=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncHookClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def invoke(self, body: Any) -> Any:
        return (await self._call(body))[1]

    async def client_credentials(
        self,
        client: Mapping[str, Any],
        scope: Sequence[str] | None,
        audience: str,
        ip: str | None = None,
        user_agent: str | None = None,
        extra_context: Mapping[str, Any] | None = None,
    ) -> HookResult:
        body = client_credentials_body(client, scope, audience, ip, user_agent, extra_context)
        return HookResult((await self._call(body))[1])

    async def password(
        self,
        user: Mapping[str, Any],
        client: Mapping[str, Any],
        scope: Sequence[str] | None,
        audience: str,
        ip: str | None = None,
        user_agent: str | None = None,
        extra_context: Mapping[str, Any] | None = None,
    ) -> HookResult:
        body = password_body(user, client, scope, audience, ip, user_agent, extra_context)
        return HookResult((await self._call(body))[1])

    async def _call(self, body: Any) -> tuple[bool, Any]:
        content = _encode(body)
        try:
            with anyio.fail_after(self.timeout):
                async with self._http.stream(
                    "POST", self.url, content=content, headers=self._headers
                ) as response:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_RESPONSE_BYTES:
                            raise self._too_large(response.status_code)
                        chunks.append(chunk)
                    status_code = response.status_code
        except TimeoutError:
            raise _transport_error(self.url, httpx.ReadTimeout("deadline"), self.timeout) from None
        except httpx.HTTPError as error:
            raise _transport_error(self.url, error, self.timeout) from None
        return parse_envelope(status_code, b"".join(chunks))

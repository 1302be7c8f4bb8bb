"""A small typed client for wtpy's management API and invocation endpoint (design.md section 4)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson

__all__ = ["ApiError", "ManagementClient", "UnreachableError", "Webtask"]

# A webtask object as the management API returns it (see design.md section 4).
Webtask = dict[str, Any]

# Characters of the webtask name rule that may stand unescaped in a URL path segment.
_PATH_SAFE = "-._~!$+=:@"
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class ApiError(Exception):
    """A failed call: the HTTP status, the server's stable error code and its message.

    `status` is 0 when the server could not be reached at all (see UnreachableError).
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status!r}, {self.code!r}, {self.message!r})"


class UnreachableError(ApiError):
    """No HTTP answer: connection refused, DNS failure, timeout, TLS failure..."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(0, "unreachable", f"cannot reach wtpy at {url}: {reason}")
        self.url = url
        self.reason = reason


def _segment(value: str) -> str:
    return quote(value, safe=_PATH_SAFE)


def _reason(error: httpx.TransportError) -> str:
    text = str(error).strip()
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    if isinstance(error, httpx.ConnectError) and "refused" in text.lower():
        return "connection refused"
    return text or type(error).__name__


class ManagementClient:
    """Calls one wtpy server with one management token.

    `transport` lets tests (and embedders) swap the network for an httpx transport such as
    `httpx.MockTransport`. Every method raises ApiError for an HTTP error answer and
    UnreachableError when there is no answer.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._client = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ManagementClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _webtask_path(self, container: str, name: str | None = None) -> str:
        path = f"{self.url}/api/webtask/{_segment(container)}"
        return path if name is None else f"{path}/{_segment(name)}"

    def _send(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        params: Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        admin: bool = True,
    ) -> httpx.Response:
        all_headers: dict[str, str] = {}
        if admin:
            all_headers["Authorization"] = f"Bearer {self._token}"
        if body is not None:
            all_headers.update(_JSON_HEADERS)
            content = orjson.dumps(body)
        all_headers.update(headers or {})
        try:
            # A tuple of pairs: httpx types a list of them invariantly (str values not accepted).
            query = tuple(params) if params else None
            response = self._client.request(
                method, url, content=content, params=query, headers=all_headers
            )
        except httpx.TransportError as error:
            raise UnreachableError(self.url, _reason(error)) from None
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    # -- management API ---------------------------------------------------------------------

    def put(
        self,
        container: str,
        name: str,
        code: str,
        meta: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> tuple[Webtask, bool]:
        """Create or replace a webtask; returns (webtask, created)."""
        body = {"code": code, "meta": dict(meta or {}), "secrets": dict(secrets or {})}
        response = self._send("PUT", self._webtask_path(container, name), body=body)
        return _json_object(response), response.status_code == 201

    def patch(
        self,
        container: str,
        name: str,
        *,
        code: str | None = None,
        meta: Mapping[str, str | None] | None = None,
        secrets: Mapping[str, str | None] | None = None,
    ) -> Webtask:
        """RFC 7386 merge: `code` replaces; meta/secrets merge per key, None deletes a key."""
        body: dict[str, Any] = {}
        if code is not None:
            body["code"] = code
        if meta:
            body["meta"] = dict(meta)
        if secrets:
            body["secrets"] = dict(secrets)
        return _json_object(self._send("PATCH", self._webtask_path(container, name), body=body))

    def get(self, container: str, name: str, *, decrypt: bool = False) -> Webtask:
        """One webtask, with `code`; secret values (and unmasked meta) only when decrypt."""
        params = [("decrypt", "1")] if decrypt else None
        return _json_object(self._send("GET", self._webtask_path(container, name), params=params))

    def list_webtasks(
        self, container: str, meta: Mapping[str, str] | Iterable[tuple[str, str]] = ()
    ) -> list[Webtask]:
        """The container's webtasks (no code), optionally only those whose meta match all filters."""
        pairs = meta.items() if isinstance(meta, Mapping) else meta
        params = [("meta", f"{key}:{value}") for key, value in pairs]
        response = self._send("GET", self._webtask_path(container), params=params or None)
        value = _json(response)
        if not isinstance(value, list):
            raise ApiError(
                502,
                "bad_response",
                "wtpy answered the list call with something other than an array",
            )
        return value

    def delete(self, container: str, name: str) -> None:
        self._send("DELETE", self._webtask_path(container, name))

    # -- scoped management tokens (admin token only) -----------------------------------------

    def create_token(
        self,
        container: str,
        name: str | None = None,
        *,
        expires_in: float | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Issue a token scoped to a container (or one webtask); `token` is in the answer only."""
        body: dict[str, Any] = {"container": container}
        if name is not None:
            body["name"] = name
        if expires_in is not None:
            body["expires_in"] = expires_in
        if description:
            body["description"] = description
        return _json_object(self._send("POST", f"{self.url}/api/tokens", body=body))

    def list_tokens(self, container: str | None = None) -> list[dict[str, Any]]:
        """Every token (without secrets), optionally of one container only."""
        params = [("container", container)] if container else None
        value = _json(self._send("GET", f"{self.url}/api/tokens", params=params))
        if not isinstance(value, list):
            raise ApiError(
                502,
                "bad_response",
                "wtpy answered the token list with something other than an array",
            )
        return value

    def revoke_token(self, token_id: str) -> None:
        self._send("DELETE", f"{self.url}/api/tokens/{_segment(token_id)}")

    # -- invocation ---------------------------------------------------------------------------

    def run(
        self,
        container: str,
        name: str,
        body: bytes | None = None,
        *,
        method: str = "POST",
        path: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Invoke a webtask the way a token server does; returns the parsed envelope.

        The management token is NOT sent: only `headers` (e.g. the hook's own Authorization).
        `body` is sent as is, labelled application/json unless `headers` say otherwise.
        """
        if path and not path.startswith("/"):
            path = "/" + path
        url = f"{self.url}/api/run/{_segment(container)}/{_segment(name)}{path}"
        all_headers = {"Accept": "application/json"}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        for key, value in (headers or {}).items():
            for existing in [k for k in all_headers if k.lower() == key.lower()]:
                del all_headers[existing]
            all_headers[key] = value
        response = self._send(method.upper(), url, content=body, headers=all_headers, admin=False)
        return _json(response)


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise ApiError(
            502,
            "bad_response",
            f"wtpy answered HTTP {response.status_code} with a body that is not JSON",
        ) from None


def _json_object(response: httpx.Response) -> Webtask:
    value = _json(response)
    if not isinstance(value, dict):
        raise ApiError(502, "bad_response", "wtpy answered with something other than a JSON object")
    return value


def _error_from(response: httpx.Response) -> ApiError:
    code, message = "", ""
    try:
        value = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        code = str(value.get("error") or "")
        message = str(value.get("message") or "")
    reason = response.reason_phrase or "error"
    return ApiError(
        response.status_code,
        code or reason.lower().replace(" ", "_"),
        message or f"HTTP {response.status_code} {reason}",
    )

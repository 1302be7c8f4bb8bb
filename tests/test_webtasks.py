"""The webtask rules and the Runtime's writes (no HTTP, no sandbox), and how the server
answers each domain error."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from wtpy.runtime import DomainError, Invalid, Runtime, Settings, TooLarge
from wtpy.runtime._webtasks import MIN_TIMEOUT, check_meta, merge_patch, patch_request, put_request
from wtpy.server._errors import error_answer

CC = "auth0-ext-compilers/client-credentials-exchange"
CODE = "def hook(client, scope, audience, context):\n    return {}\n"


class _NoWorkers:
    """The pool's start/close: these tests never invoke."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def _run(tmp_path: Path, scenario: Any) -> Any:
    async def main() -> Any:
        runtime = Runtime(
            Settings(data_dir=tmp_path, announce_token=False, workers=1, max_timeout=60)
        )
        runtime.pool = _NoWorkers()  # type: ignore[assignment]
        await runtime.start()
        try:
            return await scenario(runtime)
        finally:
            await runtime.close()

    return asyncio.run(main())


def test_merge_patch_deletes_on_null_and_replaces_otherwise() -> None:
    assert merge_patch({"a": "1", "b": "2"}, {"a": None, "b": "3", "c": "4"}) == {
        "b": "3",
        "c": "4",
    }
    assert merge_patch({"a": "1"}, {"missing": None}) == {"a": "1"}


def test_check_meta_and_shapes() -> None:
    check_meta({"wt-compiler": CC, "wtpy-timeout": str(MIN_TIMEOUT)}, 60)
    for meta in ({}, {"wt-compiler": "nope"}, {"wt-compiler": CC, "wtpy-timeout": "61"},
                 {"wt-compiler": CC, "wtpy-timeout": "x"}):  # fmt: skip
        with pytest.raises(Invalid) as info:
            check_meta(meta, 60)
        assert info.value.code == "invalid_webtask"
    assert put_request({"code": CODE}) == (CODE, {}, {})
    assert patch_request({"meta": {"a": None}}) == (None, {"a": None}, {})
    with pytest.raises(TooLarge):
        put_request({"code": "x" * 200_000})
    with pytest.raises(Invalid):
        put_request({"code": CODE, "secrets": {"a": None}})  # null deletes only in a patch


def test_put_and_patch_check_the_meta_they_write(tmp_path: Path) -> None:
    async def scenario(runtime: Runtime) -> None:
        with pytest.raises(Invalid):
            await runtime.put("default", "r", CODE, {"wt-compiler": "nope"}, {})
        assert await runtime.get("default", "r") is None
        await runtime.put("default", "r", CODE, {"wt-compiler": CC}, {"s": "v"})
        for patch in ({"wt-compiler": None}, {"wtpy-timeout": "999"}):
            with pytest.raises(Invalid):
                await runtime.patch("default", "r", "changed", patch, {"s": None})
        unchanged = await runtime.get("default", "r")
        assert unchanged is not None and unchanged.version == 1 and unchanged.code == CODE
        assert dict(unchanged.meta) == {"wt-compiler": CC} and dict(unchanged.secrets) == {"s": "v"}
        assert await runtime.patch("default", "missing", None, {"a": "1"}, {}) is None
        # Concurrent patches: each merges into the version the previous one wrote.
        await asyncio.gather(
            *(runtime.patch("default", "r", None, {f"k{i}": "v"}, {}) for i in range(5))
        )
        merged = await runtime.get("default", "r")
        assert merged is not None and merged.version == 6
        assert set(merged.meta) == {"wt-compiler", "k0", "k1", "k2", "k3", "k4"}

    _run(tmp_path, scenario)


def test_every_domain_error_has_its_own_status() -> None:
    def subclasses(cls: type[DomainError]) -> list[type[DomainError]]:
        return [sub for direct in cls.__subclasses__() for sub in (direct, *subclasses(direct))]

    statuses = {}
    for cls in subclasses(DomainError):
        status, body = error_answer(cls("why"))
        assert orjson.loads(body) == {"error": cls.code, "message": "why"}
        statuses[cls.__name__] = status
    assert statuses == {
        "Unauthorized": 401, "Forbidden": 403, "NotFound": 404, "InvalidName": 400,
        "Invalid": 422, "TooLarge": 413,
    }  # fmt: skip
    assert error_answer(Invalid("bad", code="invalid_token")) == (
        422,
        b'{"error":"invalid_token","message":"bad"}',
    )

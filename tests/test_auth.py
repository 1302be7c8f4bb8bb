"""Admin token file, Bearer parsing and token comparison."""

from __future__ import annotations

import multiprocessing
import re
import stat
from pathlib import Path

import pytest

from wtpy.runtime._access import bearer_token
from wtpy.runtime._auth import (
    ADMIN_TOKEN_FILE,
    AdminTokenError,
    load_or_create_admin_token,
    new_token,
    tokens_equal,
)


def test_admin_token_created_once_0600_and_stable(tmp_path: Path) -> None:
    token, created = load_or_create_admin_token(tmp_path)
    assert created is True
    assert re.fullmatch(r"wtpy_[A-Za-z0-9_-]{43}", token)
    path = tmp_path / ADMIN_TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == token + "\n"
    for _ in range(3):
        assert load_or_create_admin_token(tmp_path) == (token, False)
    assert [p.name for p in tmp_path.iterdir()] == [ADMIN_TOKEN_FILE]


def test_admin_token_creates_data_dir_0700(tmp_path: Path) -> None:
    data_dir = tmp_path / "x" / "y"
    token, created = load_or_create_admin_token(data_dir)
    assert created and stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert load_or_create_admin_token(data_dir) == (token, False)


def test_admin_token_operator_supplied(tmp_path: Path) -> None:
    (tmp_path / ADMIN_TOKEN_FILE).write_text("  my-own.Token_123~  \n")
    assert load_or_create_admin_token(tmp_path) == ("my-own.Token_123~", False)


@pytest.mark.parametrize(
    "content", [b"", b"\n", b"two words\n", b"\xff\xfe", b"a\nb\n", b"x" * 5000]
)
def test_admin_token_unusable_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / ADMIN_TOKEN_FILE).write_bytes(content)
    with pytest.raises(AdminTokenError) as info:
        load_or_create_admin_token(tmp_path)
    if b"words" in content:
        assert "two words" not in str(info.value)


def _race(data_dir: str, queue: multiprocessing.Queue) -> None:
    queue.put(load_or_create_admin_token(Path(data_dir)))


def test_admin_token_concurrent_first_start(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), queue)) for _ in range(6)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert len({token for token, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert load_or_create_admin_token(tmp_path) == (results[0][0], False)


def test_new_token_unique() -> None:
    assert len({new_token() for _ in range(100)}) == 100
    assert new_token("x_").startswith("x_")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("BeArEr wtpy_A-b_c.d~e+f/g==", "wtpy_A-b_c.d~e+f/g=="),
        ("  Bearer abc  ", "abc"),
        ("Bearer   abc", "abc"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearerabc", None),
        ("Basic abc", None),
        ("Bearer abc def", None),
        ("Bearer a=b", None),
        ("Bearer \u00e9t\u00e9", None),
        ("Bearer abc\n", "abc"),
        ("Bearer abc\nX-Injected: 1", None),
        ("Token abc", None),
        ("abc", None),
    ],
)
def test_bearer_token(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


def test_tokens_equal() -> None:
    assert tokens_equal("wtpy_abc", "wtpy_abc")
    assert not tokens_equal("wtpy_abc", "wtpy_abd")
    assert not tokens_equal("wtpy_abc", "wtpy_ab")
    assert not tokens_equal("", "")
    assert not tokens_equal("abc", "")
    # non-ASCII would make hmac.compare_digest raise TypeError on str; here it is just unequal
    assert not tokens_equal("\u00e9", "e")
    assert tokens_equal("\u00e9", "\u00e9")
    assert not tokens_equal("\ud800", "x")
    assert not tokens_equal(None, "x")  # type: ignore[arg-type]

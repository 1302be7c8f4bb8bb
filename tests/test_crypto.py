"""SecretBox: AES-256-GCM sealing bound to the webtask, and its key management."""

from __future__ import annotations

import base64
import multiprocessing
import os
import pickle
import stat
from pathlib import Path

import pytest

from wtpy.storage import (
    ENV_KEY,
    KEY_FILE,
    SecretBox,
    SecretKeyError,
    SecretsError,
    encode_key,
    generate_key,
)

PLAIN = "hunter2-very-secret-value"


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(generate_key())


def test_round_trip(box: SecretBox) -> None:
    secrets = {"a": PLAIN, "empty": "", "unicode": "h\u00e9llo \u2603", "nul": "x\x00y"}
    blob = box.seal("default", "myrule", secrets)
    assert isinstance(blob, bytes)
    assert PLAIN.encode() not in blob
    assert box.open("default", "myrule", blob) == secrets
    assert box.open("default", "myrule", box.seal("default", "myrule", {})) == {}


def test_layout_version_byte_and_random_nonce(box: SecretBox) -> None:
    one = box.seal("c", "n", {"k": PLAIN})
    two = box.seal("c", "n", {"k": PLAIN})
    assert one[0] == 1 and two[0] == 1
    assert one[1:13] != two[1:13]  # fresh 96-bit nonce per seal
    assert one != two


@pytest.mark.parametrize(
    ("container", "name", "purpose"),
    [("other", "myrule", "secrets"), ("default", "other", "secrets"), ("default", "myrule", "meta"),
     ("defaultm", "yrule", "secrets"), ("default", "myrule\x00", "secrets")],
)  # fmt: skip
def test_aad_binds_container_name_and_purpose(
    box: SecretBox, container: str, name: str, purpose: str
) -> None:
    blob = box.seal("default", "myrule", {"k": PLAIN})
    with pytest.raises(SecretsError) as info:
        box.open(container, name, blob, purpose=purpose)
    assert PLAIN not in str(info.value)


def test_tampering_detected(box: SecretBox) -> None:
    blob = box.seal("c", "n", {"k": PLAIN})
    for index in (0, 1, 12, 13, len(blob) // 2, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[index] ^= 0x01
        with pytest.raises(SecretsError):
            box.open("c", "n", bytes(tampered))
    for bad in (b"", blob[:20], blob[:-1], blob + b"\x00"):
        with pytest.raises(SecretsError):
            box.open("c", "n", bad)


def test_wrong_key_message_has_no_key_or_plaintext(box: SecretBox) -> None:
    key = generate_key()
    other = SecretBox(key)
    blob = box.seal("c", "n", {"k": PLAIN})
    with pytest.raises(SecretsError) as info:
        other.open("c", "n", blob)
    message = str(info.value)
    assert PLAIN not in message and encode_key(key) not in message and "c/n" in message
    assert "AES" in repr(other) and encode_key(key) not in repr(other)
    with pytest.raises(TypeError):
        pickle.dumps(other)


def test_seal_refuses_what_json_cannot_carry(box: SecretBox) -> None:
    # Types are the sealing layer's to check (tests/test_store.py); the box only encodes.
    with pytest.raises(ValueError):
        box.seal("c", "n", {1: "v"})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        box.seal("c", "n", {"k": "\ud800"})
    with pytest.raises(SecretKeyError):
        SecretBox(b"short")


def test_key_file_created_0600_and_stable(tmp_path: Path) -> None:
    first = SecretBox.from_data_dir(tmp_path, env={})
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    blob = first.seal("c", "n", {"k": PLAIN})
    second = SecretBox.from_data_dir(tmp_path, env={})
    assert second.open("c", "n", blob) == {"k": PLAIN}
    assert len(base64.urlsafe_b64decode(path.read_text().strip())) == 32
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temp files left behind


def test_key_file_created_in_missing_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b"
    SecretBox.from_data_dir(data_dir, env={})
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert (data_dir / KEY_FILE).exists()


def test_env_key_wins_over_file(tmp_path: Path) -> None:
    file_box = SecretBox.from_data_dir(tmp_path, env={})
    key = generate_key()
    env_box = SecretBox.from_data_dir(tmp_path, env={ENV_KEY: encode_key(key)})
    blob = env_box.seal("c", "n", {"k": PLAIN})
    assert SecretBox(key).open("c", "n", blob) == {"k": PLAIN}
    with pytest.raises(SecretsError):
        file_box.open("c", "n", blob)
    # unpadded form and surrounding whitespace are accepted
    unpadded = encode_key(key).rstrip("=")
    assert SecretBox.from_data_dir(tmp_path, env={ENV_KEY: f" {unpadded}\n"}).open("c", "n", blob)


def test_env_key_standard_alphabet_accepted(tmp_path: Path) -> None:
    key = b"\xfb\xff" * 16  # encodes with '+' and '/' in the standard alphabet
    env_box = SecretBox.from_data_dir(tmp_path, env={ENV_KEY: base64.b64encode(key).decode()})
    assert SecretBox(key).open("c", "n", env_box.seal("c", "n", {"k": PLAIN})) == {"k": PLAIN}


def test_env_key_does_not_touch_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "missing"
    SecretBox.from_data_dir(data_dir, env={ENV_KEY: encode_key(generate_key())})
    assert not data_dir.exists()


def test_empty_env_key_means_unset(tmp_path: Path) -> None:
    SecretBox.from_data_dir(tmp_path, env={ENV_KEY: "  "})
    assert (tmp_path / KEY_FILE).exists()


@pytest.mark.parametrize(
    "value",
    [
        "not base64 at all!",
        base64.urlsafe_b64encode(b"x" * 16).decode(),  # 16 bytes: AES-128 is not accepted
        base64.urlsafe_b64encode(b"x" * 33).decode(),
        encode_key(b"k" * 32)[:-5] + "!!!!=",
        "\u00e9" * 43,
    ],
)
def test_malformed_env_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(SecretKeyError) as info:
        SecretBox.from_data_dir(tmp_path, env={ENV_KEY: value})
    message = str(info.value)
    assert ENV_KEY in message
    assert value not in message
    assert not (tmp_path / KEY_FILE).exists()


def test_malformed_key_file(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("garbage\n")
    with pytest.raises(SecretKeyError) as info:
        SecretBox.from_data_dir(tmp_path, env={})
    assert "garbage" not in str(info.value) and KEY_FILE in str(info.value)
    (tmp_path / KEY_FILE).write_bytes(b"\xff" * 10)
    with pytest.raises(SecretKeyError):
        SecretBox.from_data_dir(tmp_path, env={})


def _race_create(data_dir: str, queue: multiprocessing.Queue) -> None:
    box = SecretBox.from_data_dir(Path(data_dir), env={})
    queue.put(box.seal("c", "n", {"k": str(os.getpid())}))


def test_concurrent_first_use_agrees_on_one_key(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_race_create, args=(str(tmp_path), queue)) for _ in range(6)]
    for proc in procs:
        proc.start()
    blobs = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    final = SecretBox.from_data_dir(tmp_path, env={})
    for blob in blobs:
        final.open("c", "n", blob)  # every process used the one key on disk
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]

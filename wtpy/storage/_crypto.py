"""Secrets at rest: AES-256-GCM, each ciphertext bound to its webtask.

Blob layout (format version 1)::

    0x01 || nonce (12 random bytes) || AES-GCM ciphertext of the orjson object || tag (16)

The associated data is the version byte, the purpose ("secrets", "meta") and the
container and name, each length-prefixed, so a blob copied to another webtask or to
another column fails to open. The version byte lets a later format add a key id and
rotate keys without guessing.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets as _secrets
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wtpy.files import ensure_data_dir, read_or_create_file

__all__ = [
    "ENV_KEY",
    "KEY_FILE",
    "KEY_BYTES",
    "SecretBox",
    "SecretKeyError",
    "SecretsError",
    "encode_key",
    "generate_key",
]

ENV_KEY = "WTPY_SECRET_KEY"
KEY_FILE = "secret.key"
KEY_BYTES = 32
_VERSION = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
_AAD_PREFIX = b"wtpy.secretbox"
_LEN = struct.Struct(">I")


class SecretsError(Exception):
    """Sealed data could not be opened (wrong key, tampered or foreign data).

    The message names the webtask at most; never the key or any plaintext.
    """


class SecretKeyError(SecretsError):
    """The configured key (environment or key file) is malformed."""


def generate_key() -> bytes:
    return _secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    """The text form used by WTPY_SECRET_KEY and secret.key (urlsafe base64, padded)."""
    return base64.urlsafe_b64encode(key).decode("ascii")


def _decode_key(text: str, source: str) -> bytes:
    """Strict urlsafe base64 (padding optional) of exactly 32 bytes. Errors never echo the text."""
    text = text.strip()
    try:
        raw = text.encode("ascii")
        raw += b"=" * (-len(raw) % 4)
        key = base64.b64decode(raw, altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise SecretKeyError(
            f"{source} is not valid urlsafe base64; expected the encoding of {KEY_BYTES} random "
            f'bytes, e.g. python -c "import secrets,base64;print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"'
        ) from None
    if len(key) != KEY_BYTES:
        raise SecretKeyError(
            f"{source} must decode to {KEY_BYTES} bytes (AES-256), it decodes to {len(key)}"
        )
    return key


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    )


class SecretBox:
    """AES-256-GCM; each ciphertext bound to its container/name as associated data."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise SecretKeyError(f"the secret key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(bytes(key))

    def __repr__(self) -> str:
        return "SecretBox(AES-256-GCM)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretBox cannot be pickled (it holds the secret key)")

    @classmethod
    def from_data_dir(cls, data_dir: Path, env: Mapping[str, str] = os.environ) -> SecretBox:
        """WTPY_SECRET_KEY wins when set and non-empty; else data_dir/secret.key.

        The key file is created on first use (mode 0600, atomically, exclusively: two
        processes starting together end up with the same key). Both hold the padded
        urlsafe base64 of 32 bytes, so a file key can be moved into the environment as is.
        """
        text = env.get(ENV_KEY, "")
        if text.strip():
            return cls(_decode_key(text, f"environment variable {ENV_KEY}"))
        data_dir = ensure_data_dir(Path(data_dir))
        path = data_dir / KEY_FILE
        try:
            data, _ = read_or_create_file(
                path, lambda: (encode_key(generate_key()) + "\n").encode("ascii")
            )
        except ValueError as exc:
            raise SecretKeyError(str(exc)) from None
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            text = "\x00"  # fails decoding below with the usual message
        return cls(_decode_key(text, f"key file {path}"))

    @staticmethod
    def _aad(container: str, name: str, purpose: str) -> bytes:
        parts = [
            _AAD_PREFIX,
            bytes([_VERSION]),
            purpose.encode(),
            container.encode(),
            name.encode(),
        ]
        return b"".join(_LEN.pack(len(part)) + part for part in parts)

    def seal(
        self, container: str, name: str, secrets: dict[str, str], *, purpose: str = "secrets"
    ) -> bytes:
        """Encrypt a str->str mapping for container/name: version || nonce || ciphertext.

        The caller (the sealing layer, after the domain's validation) hands a str->str
        dict; orjson refuses anything it cannot encode."""
        try:
            plaintext = orjson.dumps(secrets)
        except orjson.JSONEncodeError:
            raise ValueError(f"{purpose} cannot be encoded (not valid Unicode)") from None
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, self._aad(container, name, purpose))
        return bytes([_VERSION]) + nonce + sealed

    def open(
        self, container: str, name: str, blob: bytes, *, purpose: str = "secrets"
    ) -> dict[str, str]:
        """Decrypt what seal() produced for the same container, name and purpose."""
        where = f"{purpose} of webtask {container}/{name}"
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise SecretsError(f"{where}: sealed data is not bytes")
        blob = bytes(blob)
        if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES:
            raise SecretsError(f"{where}: sealed data is truncated")
        if blob[0] != _VERSION:
            raise SecretsError(f"{where}: unknown sealed data format version {blob[0]}")
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            plaintext = self._aead.decrypt(nonce, sealed, self._aad(container, name, purpose))
        except InvalidTag:
            raise SecretsError(
                f"{where} could not be decrypted: wrong secret key, or the data was "
                "tampered with or belongs to another webtask"
            ) from None
        try:
            value = orjson.loads(plaintext)
        except orjson.JSONDecodeError:
            value = None
        if not _is_str_map(value):
            # Authenticated but not ours: only a bug or a key reused by another program.
            raise SecretsError(f"{where}: decrypted data is not a string map")
        return dict(value)

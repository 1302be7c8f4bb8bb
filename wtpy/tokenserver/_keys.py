"""The RS256 signing key: loaded from a PEM file, or generated into it (0600) on first start."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from wtpy.files import create_file_exclusive

from ._errors import SigningKeyError

__all__ = ["SigningKey", "load_or_create_key"]

log = logging.getLogger("wtpy.tokenserver")

MIN_BITS = 2048


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    private_key: rsa.RSAPrivateKey
    kid: str

    @classmethod
    def from_private_key(cls, private_key: rsa.RSAPrivateKey) -> SigningKey:
        numbers = private_key.public_key().public_numbers()
        # RFC 7638 JWK thumbprint: SHA-256 of the required members, sorted, no whitespace.
        members = {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}
        thumbprint = hashlib.sha256(orjson.dumps(members, option=orjson.OPT_SORT_KEYS)).digest()
        return cls(private_key, base64.urlsafe_b64encode(thumbprint).rstrip(b"=").decode("ascii"))

    def public_jwk(self) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
        }

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims, self.private_key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"}
        )


def _write_new_key(path: Path) -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=MIN_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Exclusive and atomic: if another process created the key meanwhile, use theirs.
    if not create_file_exclusive(path, pem, 0o600):
        return _read_key(path)
    log.info("generated a new RS256 signing key in %s", path)
    return key


def _read_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SigningKeyError(f"cannot read signing key {path}: {error.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise SigningKeyError(
            f"signing key {path} is not an unencrypted PEM private key: {error}"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SigningKeyError(f"signing key {path} is not an RSA key (RS256 needs one)")
    if key.key_size < MIN_BITS:
        raise SigningKeyError(
            f"signing key {path} has {key.key_size} bits; RS256 needs at least {MIN_BITS}"
        )
    with contextlib.suppress(OSError):
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            log.warning("signing key %s is readable by other users; chmod 600 it", path)
    return key


def load_or_create_key(path: Path) -> SigningKey:
    """The key in `path`, generating a 2048-bit RSA key there (mode 0600) when it does not exist."""
    try:
        key = _write_new_key(path) if not path.exists() else _read_key(path)
    except OSError as error:
        raise SigningKeyError(
            f"cannot create signing key {path}: {error.strerror or error}"
        ) from None
    return SigningKey.from_private_key(key)

"""Passwords and client secrets: plain or salted hashes (hashlib only), compared in constant time.

Accepted forms of a configured `password` / `client_secret`:

* `pbkdf2_sha256$<iterations>$<salt>$<base64 hash>` - PBKDF2-HMAC-SHA256, Django's layout
  (Django's own hashes verify unchanged);
* `scrypt$<n>$<r>$<p>$<salt>$<base64 hash>` - hashlib.scrypt;
* anything else is taken as the plain value.

A value is treated as a hash only when it matches one of these layouts exactly, so a plain
password can contain `$` freely. `hash_password()` produces scrypt hashes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

__all__ = ["dummy_like", "hash_password", "is_hashed", "looks_hashed", "verify_password"]

_PBKDF2 = re.compile(r"pbkdf2_sha256\$(\d{1,9})\$([^$]+)\$([A-Za-z0-9+/]+={0,2})")
_SCRYPT = re.compile(r"scrypt\$(\d{1,9})\$(\d{1,3})\$(\d{1,3})\$([^$]+)\$([A-Za-z0-9+/]+={0,2})")

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_MAX_PBKDF2_ITERATIONS = 10_000_000
_MAX_SCRYPT_MEMORY = 256 * 1024 * 1024


class _Scheme:
    def __init__(self, kind: str, params: tuple[int, ...], salt: bytes, digest: bytes) -> None:
        self.kind, self.params, self.salt, self.digest = kind, params, salt, digest

    def derive(self, password: bytes) -> bytes:
        if self.kind == "pbkdf2_sha256":
            return hashlib.pbkdf2_hmac(
                "sha256", password, self.salt, self.params[0], len(self.digest)
            )
        n, r, p = self.params
        return hashlib.scrypt(
            password,
            salt=self.salt,
            n=n,
            r=r,
            p=p,
            maxmem=_MAX_SCRYPT_MEMORY + 1024 * 1024,
            dklen=len(self.digest),
        )


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _parse(stored: str) -> _Scheme | None:
    match = _PBKDF2.fullmatch(stored)
    if match:
        iterations, salt, encoded = int(match[1]), match[2], match[3]
        digest = _b64(encoded)
        if digest and 1 <= iterations <= _MAX_PBKDF2_ITERATIONS and 16 <= len(digest) <= 64:
            return _Scheme("pbkdf2_sha256", (iterations,), salt.encode(), digest)
        return None
    match = _SCRYPT.fullmatch(stored)
    if match:
        n, r, p, salt, encoded = int(match[1]), int(match[2]), int(match[3]), match[4], match[5]
        digest = _b64(encoded)
        valid = (
            digest is not None
            and 16 <= len(digest) <= 64
            and n > 1
            and n & (n - 1) == 0
            and r >= 1
            and p >= 1
            and 128 * n * r * p <= _MAX_SCRYPT_MEMORY
        )
        return _Scheme("scrypt", (n, r, p), salt.encode(), digest) if valid and digest else None
    return None


def is_hashed(stored: str) -> bool:
    """True when `stored` is a well-formed hash in one of the accepted layouts."""
    return _parse(stored) is not None


def looks_hashed(stored: str) -> bool:
    """True when `stored` starts like a hash (used to refuse malformed hashes in the config)."""
    return stored.startswith(("pbkdf2_sha256$", "scrypt$"))


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A salted scrypt hash of `password` for the token server's YAML file."""
    salt = secrets.token_urlsafe(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt.encode(), n=n, r=r, p=p,
        maxmem=_MAX_SCRYPT_MEMORY + 1024 * 1024, dklen=32,
    )  # fmt: skip
    return f"scrypt${n}${r}${p}${salt}${base64.b64encode(digest).decode('ascii')}"


def verify_password(given: str, stored: str) -> bool:
    """Constant-time check of `given` against a plain or hashed `stored` value."""
    given_bytes = given.encode("utf-8", "surrogatepass")
    scheme = _parse(stored)
    if scheme is None:
        # Compare digests so that the time taken does not depend on the lengths either.
        return hmac.compare_digest(
            hashlib.sha256(given_bytes).digest(),
            hashlib.sha256(stored.encode("utf-8", "surrogatepass")).digest(),
        )
    return hmac.compare_digest(scheme.derive(given_bytes), scheme.digest)


def dummy_like(stored_values: list[str]) -> str:
    """A value to check against when the user or client is unknown, so that the answer takes
    about as long as for a known one: a hash with the parameters of the first configured
    hash, or a random plain value when none is hashed."""
    for stored in stored_values:
        scheme = _parse(stored)
        if scheme is None:
            continue
        if scheme.kind == "scrypt":
            n, r, p = scheme.params
            return hash_password(secrets.token_hex(16), n=n, r=r, p=p)
        salt = secrets.token_urlsafe(16)
        digest = hashlib.pbkdf2_hmac(
            "sha256", secrets.token_bytes(16), salt.encode(), scheme.params[0], len(scheme.digest)
        )
        return f"pbkdf2_sha256${scheme.params[0]}${salt}${base64.b64encode(digest).decode()}"
    return secrets.token_urlsafe(24)

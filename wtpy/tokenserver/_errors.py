"""Errors of the token server's set-up (configuration file, signing key)."""

from __future__ import annotations

__all__ = ["ConfigError", "SigningKeyError"]


class ConfigError(Exception):
    """The configuration is missing, unreadable or invalid; the message names the field."""


class SigningKeyError(ConfigError):
    """The signing key file cannot be read or written, or is not a usable RSA private key."""

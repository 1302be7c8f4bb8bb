"""wtpy: a Webtask-compatible hook runtime (sandboxed Python extensibility points)."""

__version__ = "0.1.0"

"""Server settings: one frozen object built by the CLI (or tests) and handed to create_app."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from wtpy.contract import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    DEFAULT_WORKER_MAX_JOBS,
    DEFAULT_WORKER_MEMORY_MB,
    MAX_TIMEOUT,
)
from wtpy.storage import default_database_url

__all__ = ["DATABASE_URL_ENV", "Settings", "default_data_dir"]


def default_data_dir(env: os._Environ[str] | dict[str, str] = os.environ) -> Path:
    if env.get("WTPY_DATA_DIR"):
        return Path(env["WTPY_DATA_DIR"]).expanduser()
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wtpy"


UNSAFE_NO_OS_SANDBOX_ENV = "WTPY_UNSAFE_NO_OS_SANDBOX"
DATABASE_URL_ENV = "WTPY_DATABASE_URL"


def _database_default() -> str | None:
    return os.environ.get(DATABASE_URL_ENV, "").strip() or None


def _os_sandbox_default() -> bool:
    # Development only, and logged loudly at start (see docs/security.md).
    return os.environ.get(UNSAFE_NO_OS_SANDBOX_ENV, "").strip().lower() not in ("1", "true", "yes")


def _default_workers() -> int:
    # One more than the CPUs: a worker spends part of every job being woken up and handing
    # its answer back, and the spare one keeps the CPUs busy meanwhile (bench/RESULTS.md).
    return max(2, (os.cpu_count() or 1) + 1)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    # Where webtasks and tokens live (wtpy.storage.open_storage): None means the SQLite
    # file in the data dir; else sqlite:///ABSOLUTE/PATH or memory://.
    database: str | None = field(default_factory=_database_default)
    # Seconds between reads of the storage's change feed, which makes writes and token
    # revocations by other servers sharing the database visible here.
    sync_interval: float = 1.0
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # Sandbox worker processes; each runs one hook at a time.
    workers: int = field(default_factory=_default_workers)
    worker_memory_mb: int = DEFAULT_WORKER_MEMORY_MB
    # A worker is replaced after this many invocations (and sooner when its peak RSS passes
    # half of worker_memory_mb). A replacement costs ~75 ms of CPU and one worker less while
    # it starts: at 10,000 jobs that happened every few seconds under load (latency spikes).
    worker_max_jobs: int = DEFAULT_WORKER_MAX_JOBS
    # The OS layer of the sandbox (namespaces, empty read-only root, seccomp, a uid per
    # worker): the server refuses to start where it cannot be set up, unless this is off.
    os_sandbox: bool = field(default_factory=_os_sandbox_default)
    # The original platform's limit; a webtask may lower or raise it with the
    # `wtpy-timeout` meta (seconds), never above max_timeout.
    default_timeout: float = DEFAULT_TIMEOUT
    max_timeout: float = MAX_TIMEOUT
    # Invocation request bodies above this are refused with 413.
    max_body_bytes: int = 1024 * 1024
    # Request line plus headers above this are refused (431; see _httpproto.py).
    max_header_bytes: int = 64 * 1024
    # Log records kept for replay (`--tail`, `--since`, Last-Event-ID resume).
    log_history: int = 10_000
    # Seconds between `event: ping` keep-alives on the log stream.
    log_ping_interval: float = 15.0
    # Base URL used in `url` fields; None means "as the client reached us".
    public_url: str | None = None
    # Print the admin token when it is first created (off in tests).
    announce_token: bool = True

    @property
    def database_url(self) -> str:
        return self.database or default_database_url(self.data_dir)

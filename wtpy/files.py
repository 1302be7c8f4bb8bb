"""The data dir: creating it, owning it (one server per dir), and its small secret files.

Public so that every package (runtime, storage, tokenserver) uses the same helpers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

__all__ = [
    "LOCK_FILE",
    "DataDirLock",
    "DataDirLocked",
    "acquire_data_dir_lock",
    "create_file_exclusive",
    "read_or_create_file",
    "ensure_data_dir",
    "read_small_file",
]

LOCK_FILE = "wtpy.lock"
# Secret files are a few dozen bytes; anything much bigger is not ours.
_MAX_SMALL_FILE = 4096


class DataDirLocked(RuntimeError):
    """Another process (another wtpy server) holds the data dir."""


def ensure_data_dir(path: Path) -> Path:
    """Create `path` (and parents) if missing; a directory we create gets mode 0700.

    An existing directory's mode is left alone: it may be one the operator chose.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        try:
            path.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            if not path.is_dir():
                raise NotADirectoryError(f"data dir {path} exists and is not a directory") from None
        else:
            os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    return path


class DataDirLock:
    """An exclusive flock on data_dir/wtpy.lock, held until close()."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def close(self) -> None:
        """Release the lock. The file stays (deleting a flock file races with new holders)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    release = close

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def acquire_data_dir_lock(data_dir: Path) -> DataDirLock:
    """Take the data dir for this process, or raise DataDirLocked naming the holder's pid.

    flock locks belong to the open file description: a second acquire, even from this same
    process, fails until the first handle is closed. The fd is not inherited by children
    (Python fds are non-inheritable), so sandbox workers never hold the lock.
    """
    path = Path(data_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_pid(fd)
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            raise
        by = f" by pid {holder}" if holder else ""
        raise DataDirLocked(
            f"data dir {data_dir} is in use{by} (lock file {path}): "
            "only one wtpy server may use a data dir at a time"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the pid is only a hint for the error message
    return DataDirLock(path, fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def create_file_exclusive(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create `path` holding `data` atomically; False (nothing written) if it already exists.

    The data goes to a private temp file in the same directory (mode `mode`, fsynced), which
    is then hard-linked to `path`. link() never replaces an existing file, so of two racing
    processes exactly one wins and the loser reads the winner's file; and a reader never sees
    a partial file, since the name appears only once the content is on disk ("rename without
    replace"). On file systems without hard links it falls back to O_CREAT|O_EXCL.
    """
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return _create_with_excl(path, data, mode)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(directory)
    return True


def _create_with_excl(path: Path, data: bytes, mode: int) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        return False
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)
    return True


def read_or_create_file(path: Path, make: Callable[[], bytes]) -> tuple[bytes, bool]:
    """(content, created): read a secret file, or create it holding make() when missing.

    Atomic and exclusive (create_file_exclusive): of two processes starting together, one
    writes and both end up with the same content. Raises ValueError if the file is huge.
    """
    try:
        return read_small_file(path), False
    except FileNotFoundError:
        data = make()
        if create_file_exclusive(path, data):
            return data, True
        return read_small_file(path), False  # another process created it first: use theirs


def read_small_file(path: Path) -> bytes:
    """Read a secret file (key, token): raises FileNotFoundError if missing, ValueError if huge."""
    with open(path, "rb") as handle:
        data = handle.read(_MAX_SMALL_FILE + 1)
    if len(data) > _MAX_SMALL_FILE:
        raise ValueError(f"{path} is larger than {_MAX_SMALL_FILE} bytes")
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)

"""Storage (SQLite and memory backends behind the sealing layer), the change feed, names,
and the data dir helpers (lock, private dir, exclusive files)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import pytest

from wtpy.contract import MAX_CODE_BYTES, MAX_NAME_LENGTH, NAME_RE, valid_name
from wtpy.files import (
    LOCK_FILE,
    DataDirLocked,
    acquire_data_dir_lock,
    create_file_exclusive,
    ensure_data_dir,
    read_or_create_file,
)
from wtpy.storage import (
    SCHEMA_VERSION,
    MemoryBackend,
    SealedStorage,
    SecretBox,
    SecretsError,
    SqliteBackend,
    StorageError,
    Webtask,
    generate_key,
)


def sqlite_store(path: Path, box: SecretBox) -> SealedStorage:
    return SealedStorage(SqliteBackend(path), box)


PLAIN = "s3cr3t-plaintext-marker-7f1e"
ISO_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
CODE = "def hook(client, scope, audience, context, cb):\n    cb(None, {})\n"


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(generate_key())


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path, box: SecretBox):
    backend = (
        SqliteBackend(tmp_path / "wtpy.sqlite3") if request.param == "sqlite" else MemoryBackend()
    )
    with SealedStorage(backend, box) as store:
        yield store


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["myrule", "MyRule", "MYRULE", "a", "0", "a-b.c_d~e!f$g+h=i:j@k", "x" * MAX_NAME_LENGTH,
     "...", "v1.2", "user@example.com", "-", "default"],
)  # fmt: skip
def test_valid_names(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "a/b", "/", "a b", " a", "a\t", "x" * (MAX_NAME_LENGTH + 1), ".", "..", "abc\n", "a\x00",
     "a%20b", "a?b", "a#b", "a\\b", "a,b", "a;b", "a*b", "a'b", 'a"b', "a(b)", "a&b", "caf\u00e9",
     "\u212a", "\u017f", "\uff41", "\u0430"],
)  # fmt: skip
def test_invalid_names(name: str) -> None:
    assert not valid_name(name)


def test_invalid_name_types() -> None:
    assert not valid_name(None)
    assert not valid_name(123)
    assert not valid_name(b"abc")


def test_name_re_is_the_original_rule() -> None:
    assert NAME_RE.pattern == r"^[-a-z0-9._~!$+=:@]+$"
    assert NAME_RE.flags & re.IGNORECASE
    assert MAX_CODE_BYTES == 100 * 1024


# -- store basics ----------------------------------------------------------------------------


def test_round_trip(store: SealedStorage) -> None:
    meta = {"wt-compiler": "auth0-ext-compilers/client-credentials-exchange", "empty": ""}
    secrets = {"auth0-extension-secret": PLAIN, "unicode": "\u2603 \x00 x"}
    webtask, created = store.put("default", "myrule", CODE, meta, secrets)
    assert created is True
    assert isinstance(webtask, Webtask)
    assert (webtask.container, webtask.name, webtask.code) == ("default", "myrule", CODE)
    assert webtask.meta == meta and webtask.secrets == secrets
    assert webtask.version == 1
    assert webtask.code_hash == hashlib.sha256(CODE.encode()).hexdigest()
    assert ISO_UTC.fullmatch(webtask.created_at) and webtask.updated_at == webtask.created_at
    assert store.get("default", "myrule") == webtask
    assert list(store.get("default", "myrule").meta) == list(meta)  # type: ignore[union-attr]


def test_none_meta_and_secrets_are_empty(store: SealedStorage) -> None:
    webtask, _ = store.put("c", "n", "", None, None)
    assert webtask.meta == {} and webtask.secrets == {} and webtask.code == ""
    assert store.get("c", "n") == webtask


def test_repr_hides_secrets_and_code(store: SealedStorage) -> None:
    webtask, _ = store.put("c", "n", "SOURCE_MARKER = 1", {}, {"k": PLAIN})
    assert PLAIN not in repr(webtask) and "SOURCE_MARKER" not in repr(webtask)
    assert "c" in repr(webtask)


def test_returned_dicts_are_independent(store: SealedStorage) -> None:
    meta, secrets = {"a": "1"}, {"s": "2"}
    webtask, _ = store.put("c", "n", CODE, meta, secrets)
    meta["a"] = "changed"
    secrets["s"] = "changed"
    webtask.meta["a"] = "mutated"
    fresh = store.get("c", "n")
    assert fresh is not None and fresh.meta == {"a": "1"} and fresh.secrets == {"s": "2"}


def test_version_bumps_and_created_flag(store: SealedStorage) -> None:
    first, created1 = store.put("c", "n", "v1", {}, {})
    second, created2 = store.put("c", "n", "v2", {"x": "y"}, {})
    third, created3 = store.put("c", "n", "v2", {"x": "y"}, {})  # identical content still bumps
    assert (created1, created2, created3) == (True, False, False)
    assert [w.version for w in (first, second, third)] == [1, 2, 3]
    assert third.created_at == first.created_at
    assert third.updated_at >= first.updated_at
    assert second.code_hash != first.code_hash and third.code_hash == second.code_hash
    other, created = store.put("c", "other", "v1", {}, {})
    assert other.version == 1 and created
    assert store.get("c", "n").version == 3  # type: ignore[union-attr]


def test_delete(store: SealedStorage) -> None:
    store.put("c", "n", CODE, {}, {})
    assert store.delete("c", "n") is True
    assert store.get("c", "n") is None
    assert store.delete("c", "n") is False
    webtask, created = store.put("c", "n", CODE, {}, {})
    assert created and webtask.version == 1  # a re-created webtask starts over
    assert store.delete("c", "../n") is False


def test_get_missing_and_invalid(store: SealedStorage) -> None:
    assert store.get("c", "missing") is None
    assert store.get("c", "a/b") is None
    assert store.get("", "") is None


def test_names_are_case_sensitive_keys(store: SealedStorage) -> None:
    store.put("c", "MyRule", "upper", {}, {})
    store.put("c", "myrule", "lower", {}, {})
    assert store.get("c", "MyRule").code == "upper"  # type: ignore[union-attr]
    assert store.get("c", "myrule").code == "lower"  # type: ignore[union-attr]
    assert store.count("c") == 2


def test_list_sorted_and_per_container(store: SealedStorage) -> None:
    for name in ("b", "a", "c"):
        store.put("one", name, CODE, {}, {})
    store.put("two", "a", CODE, {}, {})
    assert [w.name for w in store.list("one")] == ["a", "b", "c"]
    assert [(w.container, w.name) for w in store.list("two")] == [("two", "a")]
    assert store.list("three") == []
    assert store.list("bad/container") == []
    assert store.count() == 4 and store.count("one") == 3 and store.count("none") == 0
    assert store.containers() == ["one", "two"]


def test_list_meta_filters(store: SealedStorage) -> None:
    cc = "auth0-ext-compilers/client-credentials-exchange"
    pw = "auth0-ext-compilers/password-exchange"
    store.put("c", "r1", CODE, {"wt-compiler": cc, "auth0-extension": "runtime"}, {})
    store.put("c", "r2", CODE, {"wt-compiler": pw, "auth0-extension": "runtime"}, {})
    store.put("c", "r3", CODE, {"wt-compiler": cc}, {})
    store.put("c", "r4", CODE, {"wt-compiler": cc.upper(), "auth0-extension": "runtime"}, {})
    store.put("other", "r5", CODE, {"wt-compiler": cc, "auth0-extension": "runtime"}, {})

    def names(flt: dict[str, str]) -> list[str]:
        return [w.name for w in store.list("c", flt)]

    assert names({}) == ["r1", "r2", "r3", "r4"]
    assert names({"wt-compiler": cc}) == ["r1", "r3"]  # exact, case-sensitive
    assert names({"wt-compiler": cc, "auth0-extension": "runtime"}) == ["r1"]  # AND
    assert names({"auth0-extension": "runtime"}) == ["r1", "r2", "r4"]
    assert names({"missing": ""}) == []  # absent key never matches, not even ""
    assert names({"wt-compiler": "auth0-ext-compilers"}) == []  # no prefix match
    assert names({"wt-compiler": cc, "nope": "x"}) == []
    with pytest.raises(TypeError):
        store.list("c", {"k": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("code", "meta", "secrets"),
    [
        (None, {}, {}),
        (b"code", {}, {}),
        (CODE, {"k": 1}, {}),
        (CODE, {"k": None}, {}),
        (CODE, {1: "v"}, {}),
        (CODE, ["k"], {}),
        (CODE, {}, {"k": True}),
        (CODE, {}, {"k": {"nested": "x"}}),
    ],
)
def test_put_refuses_what_it_could_not_read_back(
    store: SealedStorage, code: object, meta: object, secrets: object
) -> None:
    # Validation (names, sizes, Unicode) is the domain's, once; storage only refuses the
    # types that would be stored and then fail every read.
    with pytest.raises((TypeError, ValueError)):
        store.put("c", "n", code, meta, secrets)  # type: ignore[arg-type]
    assert store.count() == 0


def test_code_at_the_limit_is_accepted(store: SealedStorage) -> None:
    webtask, _ = store.put("c", "n", "x" * MAX_CODE_BYTES, {}, {})
    assert len(webtask.code) == MAX_CODE_BYTES


def test_failed_put_keeps_previous_row(store: SealedStorage) -> None:
    store.put("c", "n", "old", {"a": "1"}, {"s": "1"})
    with pytest.raises(TypeError):
        store.put("c", "n", "new", {"a": 2}, {"s": "2"})  # type: ignore[dict-item]
    webtask = store.get("c", "n")
    assert webtask is not None and webtask.code == "old" and webtask.version == 1


# -- secrets at rest -------------------------------------------------------------------------


def _file_bytes(db: Path) -> bytes:
    data = b""
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            data += path.read_bytes()
    return data


def test_secrets_not_in_sqlite_files(tmp_path: Path, box: SecretBox) -> None:
    db = tmp_path / "wtpy.sqlite3"
    old_secret = PLAIN + "-old"
    store = sqlite_store(db, box)
    store.put("default", "myrule", CODE, {"k": "v"}, {"auth0-extension-secret": old_secret})
    # the documented samples copy the secret into meta as well
    meta = {"wt-compiler": "x", "auth0-extension-secret": PLAIN}
    store.put("default", "myrule", CODE, meta, {"auth0-extension-secret": PLAIN, "other": "v2"})
    assert Path(f"{db}-wal").exists() and Path(f"{db}-wal").stat().st_size > 0
    on_disk = _file_bytes(db)
    assert b"myrule" in on_disk  # sanity: we are looking at the right bytes
    for plaintext in (PLAIN, old_secret):
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            assert plaintext.encode(encoding) not in on_disk
    webtask = store.get("default", "myrule")
    assert webtask is not None and webtask.meta == meta  # sealed meta comes back intact
    assert [w.name for w in store.list("default", {"auth0-extension-secret": PLAIN})] == ["myrule"]
    assert store.list("default", {"auth0-extension-secret": "wrong"}) == []
    store.close()
    on_disk = _file_bytes(db)  # after the checkpoint on close
    assert b"myrule" in on_disk
    assert PLAIN.encode() not in on_disk and old_secret.encode() not in on_disk


def test_sqlite_files_are_private(tmp_path: Path, box: SecretBox) -> None:
    db = tmp_path / "wtpy.sqlite3"
    old = os.umask(0o022)
    try:
        with sqlite_store(db, box) as store:
            store.put("c", "n", CODE, {}, {"k": "v"})
            for suffix in ("", "-wal", "-shm"):
                assert stat.S_IMODE(Path(f"{db}{suffix}").stat().st_mode) == 0o600, suffix
    finally:
        os.umask(old)


def test_swapped_ciphertexts_fail(tmp_path: Path, box: SecretBox) -> None:
    db = tmp_path / "wtpy.sqlite3"
    with sqlite_store(db, box) as store:
        store.put("c", "a", CODE, {"m": "A"}, {"k": "A"})
        store.put("c", "b", CODE, {"m": "B"}, {"k": "B"})
        store.put("d", "a", CODE, {"m": "DA"}, {"k": "DA"})
    raw = sqlite3.connect(db)
    blobs = dict(raw.execute("SELECT container || '/' || name, secrets FROM webtasks"))
    with raw:
        raw.execute(
            "UPDATE webtasks SET secrets = ? WHERE container = 'c' AND name = 'a'", (blobs["c/b"],)
        )
        raw.execute(
            "UPDATE webtasks SET secrets = ? WHERE container = 'c' AND name = 'b'", (blobs["c/a"],)
        )
        raw.execute(
            "UPDATE webtasks SET secrets = ? WHERE container = 'd' AND name = 'a'", (blobs["c/a"],)
        )
    raw.close()
    with sqlite_store(db, box) as store:
        for container, name in (("c", "a"), ("c", "b"), ("d", "a")):
            with pytest.raises(SecretsError, match=f"{container}/{name}"):
                store.get(container, name)
        with pytest.raises(SecretsError):
            store.list("c")


def test_sealed_meta_moved_between_columns_fails(tmp_path: Path, box: SecretBox) -> None:
    db = tmp_path / "wtpy.sqlite3"
    with sqlite_store(db, box) as store:
        store.put("c", "a", CODE, {"copy": PLAIN}, {"k": PLAIN})
    raw = sqlite3.connect(db)
    with raw:
        raw.execute("UPDATE webtasks SET secrets = meta_sealed")
    raw.close()
    with sqlite_store(db, box) as store, pytest.raises(SecretsError):
        store.get("c", "a")


def test_tampered_ciphertext_fails(tmp_path: Path, box: SecretBox) -> None:
    db = tmp_path / "wtpy.sqlite3"
    with sqlite_store(db, box) as store:
        store.put("c", "a", CODE, {}, {"k": PLAIN})
    raw = sqlite3.connect(db)
    (blob,) = raw.execute("SELECT secrets FROM webtasks").fetchone()
    tampered = bytearray(blob)
    tampered[-3] ^= 0x80
    with raw:
        raw.execute("UPDATE webtasks SET secrets = ?", (bytes(tampered),))
    raw.close()
    with sqlite_store(db, box) as store:
        with pytest.raises(SecretsError) as info:
            store.get("c", "a")
        assert PLAIN not in str(info.value)


def test_wrong_key_fails(tmp_path: Path, box: SecretBox) -> None:
    db = tmp_path / "wtpy.sqlite3"
    with sqlite_store(db, box) as store:
        store.put("c", "a", CODE, {}, {"k": PLAIN})
    with sqlite_store(db, SecretBox(generate_key())) as store, pytest.raises(SecretsError):
        store.get("c", "a")


def test_corrupt_meta_is_a_store_error(tmp_path: Path, box: SecretBox) -> None:
    db = tmp_path / "wtpy.sqlite3"
    with sqlite_store(db, box) as store:
        store.put("c", "a", CODE, {"k": "v"}, {})
        store.put("c", "b", CODE, {"k": "v"}, {})
    raw = sqlite3.connect(db)
    with raw:
        raw.execute("UPDATE webtasks SET meta = 'not json' WHERE name = 'a'")
        raw.execute("""UPDATE webtasks SET meta = '{"k": null}' WHERE name = 'b'""")
    raw.close()
    with sqlite_store(db, box) as store:
        for name in ("a", "b"):
            with pytest.raises(StorageError, match="meta is corrupt"):
                store.get("c", name)


# -- schema and lifecycle ----------------------------------------------------------------------


def test_schema_version_and_pragmas(tmp_path: Path, box: SecretBox) -> None:
    db = tmp_path / "wtpy.sqlite3"
    with sqlite_store(db, box) as store:
        assert store.backend.schema_version == SCHEMA_VERSION  # type: ignore[attr-defined]
        conn = store.backend._db()  # type: ignore[attr-defined]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
        store.put("c", "n", CODE, {}, {"k": "v"})
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()
    with sqlite_store(db, box) as store:  # reopening keeps data and does not re-run migrations
        assert store.get("c", "n").secrets == {"k": "v"}  # type: ignore[union-attr]
        assert store.backend.schema_version == SCHEMA_VERSION  # type: ignore[attr-defined]


def test_reads_do_not_wait_for_a_write(tmp_path: Path, box: SecretBox) -> None:
    backend = SqliteBackend(tmp_path / "wtpy.sqlite3")
    with SealedStorage(backend, box) as store:
        store.put("c", "n", CODE, {}, {"k": "v"})
        with backend._write() as conn:  # a write in progress: lock held, transaction open
            conn.execute("UPDATE webtasks SET code = 'uncommitted'")
            assert store.get("c", "n").code == CODE  # type: ignore[union-attr]  # the last commit
        assert store.get("c", "n").code == "uncommitted"  # type: ignore[union-attr]


def test_newer_schema_is_refused(tmp_path: Path, box: SecretBox) -> None:
    db = tmp_path / "wtpy.sqlite3"
    sqlite_store(db, box).close()
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StorageError, match="newer"):
        sqlite_store(db, box)


def test_closed_store_raises(tmp_path: Path, box: SecretBox) -> None:
    store = sqlite_store(tmp_path / "wtpy.sqlite3", box)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        store.get("c", "n")
    with pytest.raises(StorageError, match="closed"):
        store.put("c", "n", CODE, {}, {})


# -- concurrency and crashes -------------------------------------------------------------------


def test_concurrent_writers_and_readers(store: SealedStorage) -> None:
    threads_n, rounds = 8, 30
    created_flags: list[tuple[str, bool]] = []
    errors: list[BaseException] = []
    flags_lock = threading.Lock()
    start = threading.Barrier(threads_n + 2)
    done = threading.Event()

    def writer(index: int) -> None:
        try:
            start.wait()
            for round_ in range(rounds):
                for name in ("shared", f"own{index}"):
                    value = f"{index}-{round_}"
                    _, created = store.put("c", name, value, {"v": value}, {"s": value})
                    with flags_lock:
                        created_flags.append((name, created))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            start.wait()
            while not done.is_set():
                webtask = store.get("c", "shared")
                if webtask is not None:  # every row read is self-consistent
                    assert webtask.meta["v"] == webtask.secrets["s"] == webtask.code
                for item in store.list("c"):
                    assert item.meta["v"] == item.secrets["s"] == item.code
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(threads_n)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in writers + readers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    for thread in readers:
        thread.join()
    assert errors == []
    shared = store.get("c", "shared")
    assert shared is not None and shared.version == threads_n * rounds
    created = Counter(name for name, was_created in created_flags if was_created)
    assert created == Counter({"shared": 1, **{f"own{i}": 1 for i in range(threads_n)}})
    for i in range(threads_n):
        assert store.get("c", f"own{i}").version == rounds  # type: ignore[union-attr]
    assert store.count("c") == threads_n + 1


_CRASH_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from wtpy.storage import SecretBox, open_storage

    data_dir = Path(sys.argv[1])
    names = int(sys.argv[2])
    box = SecretBox.from_data_dir(data_dir, env={})
    store = open_storage(f"sqlite://{data_dir / 'wtpy.sqlite3'}", box)
    print("ready", flush=True)
    i = 0
    while True:
        name = f"t{i % names}"
        store.put(
            "default", name, f"# write {i}\\n" + "x" * (i * 7919 % 20000),
            {"i": str(i), "name": name}, {"s": f"secret-{i}", "pad": "p" * (i % 700)},
        )
        print(name, i, flush=True)  # acknowledged only after put() returned
        i += 1
    """
)


@pytest.mark.parametrize("kill_after", [25, 150, 400])
def test_kill_9_keeps_every_acknowledged_write(tmp_path: Path, kill_after: int) -> None:
    names = 23
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASH_WRITER, str(tmp_path), str(names)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    lines = [proc.stdout.readline() for _ in range(kill_after)]
    os.kill(proc.pid, signal.SIGKILL)  # the child is in the middle of its next put()
    lines += proc.stdout.read().splitlines(keepends=True)  # acked before the kill, still buffered
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    acked: dict[str, int] = {}
    for line in lines:
        if not line.endswith("\n"):  # a torn final line is not an acknowledgement
            continue
        name, index = line.split()
        acked[name] = int(index)
    last = max(acked.values())
    in_flight = last + 1  # the only write that may have committed without an ack

    with sqlite_store(
        tmp_path / "wtpy.sqlite3", SecretBox.from_data_dir(tmp_path, env={})
    ) as store:
        assert store.backend._db().execute("PRAGMA integrity_check").fetchone()[0] == "ok"  # type: ignore[attr-defined]
        rows = store.list("default")  # every row decrypts
        assert len(rows) in (min(names, last + 1), min(names, in_flight + 1))
        by_name = {w.name: w for w in rows}
        assert set(acked) <= set(by_name)
        for name, webtask in by_name.items():
            stored = int(webtask.meta["i"])
            if stored != acked.get(name):
                assert stored == in_flight and name == f"t{in_flight % names}", (name, stored)
            # every column of the row comes from the same write: nothing half-written
            assert webtask.code.startswith(f"# write {stored}\n")
            assert len(webtask.code) == len(f"# write {stored}\n") + stored * 7919 % 20000
            assert webtask.code_hash == hashlib.sha256(webtask.code.encode()).hexdigest()
            assert webtask.meta == {"i": str(stored), "name": name}
            assert webtask.secrets == {"s": f"secret-{stored}", "pad": "p" * (stored % 700)}
            assert webtask.version == stored // names + 1


# -- data dir helpers ----------------------------------------------------------------------------


def test_ensure_data_dir(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = ensure_data_dir(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    assert path.is_dir() and stat.S_IMODE(path.stat().st_mode) == 0o700
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    assert ensure_data_dir(existing) == existing
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # an operator's dir is left alone
    (tmp_path / "file").write_text("x")
    with pytest.raises((NotADirectoryError, FileExistsError)):
        ensure_data_dir(tmp_path / "file")


def test_read_or_create_file_makes_once_then_reads(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    made: list[bytes] = []

    def make() -> bytes:
        made.append(b"fresh-%d\n" % len(made))
        return made[-1]

    assert read_or_create_file(path, make) == (b"fresh-0\n", True)
    assert read_or_create_file(path, make) == (b"fresh-0\n", False)
    assert made == [b"fresh-0\n"]  # not called once the file exists
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_bytes(b"x" * 100_000)
    with pytest.raises(ValueError):
        read_or_create_file(path, make)


def test_create_file_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert create_file_exclusive(path, b"first") is True
    assert create_file_exclusive(path, b"second") is False
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_lock_excludes_second_holder_in_process(tmp_path: Path) -> None:
    first = acquire_data_dir_lock(tmp_path)
    assert first.held
    assert not os.get_inheritable(first._fd)  # type: ignore[arg-type]  # workers never get it
    with pytest.raises(DataDirLocked) as info:
        acquire_data_dir_lock(tmp_path)
    assert str(tmp_path) in str(info.value) and str(os.getpid()) in str(info.value)
    first.close()
    first.close()  # idempotent
    with acquire_data_dir_lock(tmp_path) as again:
        assert again.held
    assert (tmp_path / LOCK_FILE).exists()


_LOCK_HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from wtpy.files import acquire_data_dir_lock

    handle = acquire_data_dir_lock(Path(sys.argv[1]))
    print("locked", flush=True)
    sys.stdin.readline()
    """
)


def test_lock_excludes_other_process_until_it_dies(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirLocked, match=f"pid {proc.pid}"):
            acquire_data_dir_lock(tmp_path)
    finally:
        proc.kill()  # even kill -9 releases a flock
        proc.wait()
        proc.stdout.close()
        proc.stdin.close()
    with acquire_data_dir_lock(tmp_path) as handle:
        assert handle.held


# -- versions and the change feed ------------------------------------------------------------


def test_expected_version_refuses_a_lost_update(store: SealedStorage) -> None:
    from wtpy.storage import VersionConflict

    first, _ = store.put("c", "n", "v1", {}, {})
    second, _ = store.put("c", "n", "v2", {}, {}, expected_version=first.version)
    assert second.version == 2
    with pytest.raises(VersionConflict, match="version 2, not 1") as info:
        store.put("c", "n", "stale", {}, {}, expected_version=first.version)
    assert (info.value.expected, info.value.found) == (1, 2)
    with pytest.raises(VersionConflict, match="no longer exists"):
        store.put("c", "gone", "x", {}, {}, expected_version=1)
    assert store.get("c", "n").code == "v2" and store.count() == 1  # type: ignore[union-attr]


def test_change_feed_reports_every_write_once(store: SealedStorage) -> None:
    from wtpy.storage import StoredToken

    token = StoredToken("ab" * 8, "0" * 64, "c", None, "", "2030-01-01T00:00:00Z", None, None)
    start = store.change_cursor()
    assert store.changes_since(start) == (start, [], True)
    store.put("c", "a", CODE, {}, {})
    store.put("c", "a", CODE, {}, {})
    store.add_token(token)
    assert store.delete("c", "a") and not store.delete("c", "a")  # a no-op is no change
    store.revoke_token(token.id, "2030-01-02T00:00:00Z")
    store.revoke_token(token.id, "2030-01-03T00:00:00Z")  # already revoked: no change
    batch = store.changes_since(start)
    assert batch.complete and batch.cursor == store.change_cursor() == start + 5
    assert [(c.kind, c.key) for c in batch.changes] == [
        ("webtask", ("c", "a")), ("webtask", ("c", "a")), ("token", (token.id,)),
        ("webtask", ("c", "a")), ("token", (token.id,)),
    ]  # fmt: skip
    assert [c.cursor for c in batch.changes] == list(range(start + 1, start + 6))
    assert store.changes_since(batch.cursor) == (batch.cursor, [], True)
    limited = store.changes_since(start, limit=2)
    assert limited.cursor == start + 2 and len(limited.changes) == 2
    # A cursor from another database (ahead of this one's head) means: start over.
    assert store.changes_since(start + 99) == (start + 5, [], False)


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_change_feed_is_pruned_and_says_so(
    tmp_path: Path, box: SecretBox, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wtpy.storage import _sqlite

    monkeypatch.setattr(_sqlite, "CHANGES_KEPT", 3)
    raw = SqliteBackend(tmp_path / "db") if backend == "sqlite" else MemoryBackend(changes_kept=3)
    with SealedStorage(raw, box) as store:
        for index in range(6):
            store.put("c", f"n{index}", CODE, {}, {})
        assert store.changes_since(2) == (6, [], False)  # 3 was pruned
        tail = store.changes_since(3)
        assert tail.complete and [c.key for c in tail.changes] == [
            ("c", "n3"),
            ("c", "n4"),
            ("c", "n5"),
        ]


def test_two_processes_share_a_sqlite_file(tmp_path: Path, box: SecretBox) -> None:
    from wtpy.storage import StoredToken

    db = tmp_path / "shared.sqlite3"
    with sqlite_store(db, box) as one, sqlite_store(db, box) as two:
        cursor = two.change_cursor()
        one.put("c", "n", CODE, {"k": "v"}, {"s": PLAIN})
        token = StoredToken("cd" * 8, "0" * 64, "c", "n", "", "2030-01-01T00:00:00Z", None, None)
        one.add_token(token)
        one.revoke_token(token.id, "2030-01-02T00:00:00Z")
        batch = two.changes_since(cursor)
        assert [(c.kind, c.key) for c in batch.changes] == [
            ("webtask", ("c", "n")),
            ("token", (token.id,)),
            ("token", (token.id,)),
        ]
        assert two.get_token(token.id).revoked_at == "2030-01-02T00:00:00Z"  # type: ignore[union-attr]
        assert two.get("c", "n").secrets == {"s": PLAIN}  # type: ignore[union-attr]

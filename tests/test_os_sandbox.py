"""The OS layer of the sandbox on its own: unrestricted Python inside a worker's sandbox.

These tests assume the language layer has fallen. Workers come from tests/raw_zygote.py
(test-only, not in the package, unreachable from the API), which execs a job's code as plain
Python inside exactly the OS sandbox the server's workers get. Where a property must hold
even without the seccomp filter (namespaces, uids, the empty root), the test runs twice:
with the filter and `--without-seccomp`, as if it had fallen too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import REPO, WtpyServer, free_port
from test_pool import arun

from wtpy.sandbox._oslayer import DEFAULT_UID_BASE, INNER_ID
from wtpy.sandbox._pool import JobResult, OsSandboxUnavailable, WorkerPool

HERE = Path(__file__).resolve().parent
RAW = [sys.executable, "-I", str(HERE / "raw_zygote.py")]
LAYERS = pytest.mark.parametrize(
    "layers", [[], ["--without-seccomp"]], ids=["seccomp", "without-seccomp"]
)
T = TypeVar("T")

# Runs inside the sandbox: each probe is refused, or answers what it got.
PROBE = """
import os
def probe(function):
    try:
        return ["ok", repr(function())[:300]]
    except BaseException as exc:
        return ["refused", type(exc).__name__ + ": " + str(exc)[:200]]
"""


def raw_pool(size: int = 2, *extra: str, **options: Any) -> WorkerPool:
    return WorkerPool(size, zygote_argv=[*RAW, *extra], **options)


async def run(
    pool: WorkerPool, code: str, container: str = "a", timeout: float = 10.0
) -> JobResult:
    source = PROBE + textwrap.dedent(code)
    return await pool.run(
        key=hashlib.sha256(source.encode()).hexdigest(), code=source, filename="<raw>",
        args={}, order=[], timeout=timeout, container=container,
    )  # fmt: skip


async def answer(pool: WorkerPool, code: str, container: str = "a") -> Any:
    result = await run(pool, code, container)
    assert result.outcome == "success", result
    return result.result


def with_pool(
    layers: list[str], scenario: Callable[[WorkerPool], Awaitable[T]], size: int = 2
) -> T:
    async def go() -> T:
        pool = raw_pool(size, *layers)
        await pool.start()
        try:
            return await scenario(pool)
        finally:
            await pool.close()

    return arun(go)


def refused(outcome: list[str]) -> bool:
    return outcome[0] == "refused"


# --------------------------------------------------------------------------- files


@LAYERS
def test_no_file_of_the_host_is_visible_and_nothing_is_writable(
    layers: list[str], tmp_path: Path
) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("canary-secret")
    canary.chmod(0o644)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "admin.token").write_text("admin-secret")

    async def scenario(pool: WorkerPool) -> dict[str, list[str]]:
        return await answer(
            pool,
            f"""
            result = {{
                "root": probe(lambda: os.listdir("/")),
                "canary": probe(lambda: open({str(canary)!r}).read()),
                "data_dir": probe(lambda: os.listdir({str(data_dir)!r})),
                "token": probe(lambda: open({str(data_dir / "admin.token")!r}).read()),
                "proc": probe(lambda: os.listdir("/proc")),
                "etc": probe(lambda: open("/etc/passwd").read()),
                "python": probe(lambda: os.listdir({os.path.dirname(os.__file__)!r})),
                "create": probe(lambda: open("/new-file", "w")),
                "mkdir": probe(lambda: os.mkdir("/new-dir")),
                "cwd": probe(os.getcwd),
            }}
        """,
        )

    outcome = with_pool(layers, scenario)
    assert outcome.pop("root") == ["ok", "[]"]
    assert outcome.pop("cwd") == ["ok", "'/'"]
    for name, result in outcome.items():
        assert refused(result), (name, result)
    assert "Read-only file system" in outcome["create"][1] or "Permission" in outcome["create"][1]


# --------------------------------------------------------------------------- network


@LAYERS
def test_no_network_not_even_the_hosts_loopback(layers: list[str]) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]

    async def scenario(pool: WorkerPool) -> dict[str, list[str]]:
        return await answer(
            pool,
            f"""
            import socket
            def connect():
                with socket.create_connection(("127.0.0.1", {port}), timeout=2):
                    return "connected"
            result = {{
                "interfaces": probe(lambda: sorted(name for _, name in socket.if_nameindex())),
                "connect": probe(connect),
                "udp": probe(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", {port}))),
                "unix": probe(lambda: socket.socket(socket.AF_UNIX).connect("/run/any.sock")),
            }}
        """,
        )

    try:
        outcome = with_pool(layers, scenario)
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing got through
    finally:
        listener.close()
    assert refused(outcome["connect"]) and refused(outcome["udp"]) and refused(outcome["unix"]), (
        outcome
    )
    if (
        layers
    ):  # without seccomp a socket can be made: the namespace has only a loopback that is down
        assert outcome["interfaces"] == ["ok", "['lo']"], outcome
    else:
        assert (
            refused(outcome["interfaces"]) and "Operation not permitted" in outcome["interfaces"][1]
        )


# --------------------------------------------------------------------------- processes


@LAYERS
def test_no_exec_no_fork_no_threads(layers: list[str]) -> None:
    async def scenario(pool: WorkerPool) -> dict[str, list[str]]:
        return await answer(
            pool,
            """
            import threading
            result = {
                "exec": probe(lambda: os.execv("/bin/sh", ["sh", "-c", "true"])),
                "exec_host_python": probe(lambda: os.execv(os.sys.executable, ["python", "-c", "1"])),
                "fork": probe(os.fork),
                "thread": probe(lambda: threading.Thread(target=print).start()),
            }
        """,
        )

    for name, result in with_pool(layers, scenario).items():
        assert refused(result), (name, result)


@LAYERS
def test_a_worker_cannot_signal_trace_or_read_a_sibling(layers: list[str]) -> None:
    async def scenario(pool: WorkerPool) -> tuple[dict[str, list[str]], Any, int]:
        await answer(pool, "STATE['secret'] = 'b-secret'; result = os.getpid()", container="b")
        bound = pool.bound_containers()
        sibling = next(pid for pid, container in bound.items() if container == "b")
        outcome = await answer(
            pool,
            f"""
            import ctypes, signal
            libc = ctypes.CDLL(None, use_errno=True)
            def ptrace():
                if libc.ptrace(16, {sibling}, 0, 0) != 0:  # PTRACE_ATTACH
                    raise OSError(ctypes.get_errno(), "ptrace")
            def vm_read():
                buffer = ctypes.create_string_buffer(8)
                local = (ctypes.c_void_p * 2)(ctypes.addressof(buffer), 8)
                remote = (ctypes.c_void_p * 2)(4096, 8)
                if libc.process_vm_readv({sibling}, local, 1, remote, 1, 0) < 0:
                    raise OSError(ctypes.get_errno(), "process_vm_readv")
            result = {{
                "kill": probe(lambda: os.kill({sibling}, signal.SIGKILL)),
                "kill_group": probe(lambda: os.killpg({sibling}, signal.SIGKILL)),
                "kill_all": probe(lambda: os.kill(-1, signal.SIGKILL)),
                "kill_server": probe(lambda: os.kill({os.getpid()}, signal.SIGKILL)),
                "ptrace": probe(ptrace),
                "vm_read": probe(vm_read),
                "mem": probe(lambda: open("/proc/{sibling}/mem", "rb")),
                "own_pid": probe(os.getpid),
                "parent": probe(os.getppid),
            }}
        """,
            container="a",
        )
        still = await answer(pool, "result = STATE.get('secret')", container="b")
        return outcome, still, sibling

    outcome, still, sibling = with_pool(layers, scenario)
    assert outcome.pop("own_pid") == ["ok", "1"]  # PID 1 of a namespace of its own
    assert outcome.pop("parent") == ["ok", "0"]  # its parent is outside: no pid to name
    for name, result in outcome.items():
        assert refused(result), (name, result)
    assert still == "b-secret"  # the sibling lived on, untouched


@pytest.mark.skipif(os.geteuid() != 0, reason="a uid per worker needs a server started as root")
def test_each_worker_has_a_host_uid_of_its_own_and_no_capabilities() -> None:
    async def scenario(pool: WorkerPool) -> tuple[list[Any], list[str]]:
        inside = [
            await answer(pool, "result = [os.getuid(), os.getgid(), os.getgroups()]", container=c)
            for c in "abc"
        ]
        return inside, [Path(f"/proc/{pid}/status").read_text() for pid in pool.bound_containers()]

    inside, statuses = with_pool([], scenario, size=3)
    assert inside == [[INNER_ID, INNER_ID, []]] * 3
    uids = set()
    for text in statuses:
        status = {line.split(":")[0]: line.split()[1:] for line in text.splitlines() if ":" in line}
        uid = int(status["Uid"][0])
        assert DEFAULT_UID_BASE <= uid < DEFAULT_UID_BASE + 100 and len(set(status["Uid"])) == 1
        assert status["CapEff"] == status["CapPrm"] == status["CapBnd"] == ["0000000000000000"]
        assert status["NoNewPrivs"] == ["1"] and status["Seccomp"] == ["2"]
        uids.add(uid)
    assert len(uids) == 3


# --------------------------------------------------------------------------- time


@LAYERS
def test_a_worker_never_outlives_its_deadline(layers: list[str]) -> None:
    async def scenario(pool: WorkerPool) -> tuple[JobResult, int, JobResult]:
        await answer(pool, "result = 1")
        [pid] = [p for p, c in pool.bound_containers().items() if c == "a"]
        began = time.monotonic()
        result = await run(pool, """
            import signal
            for number in (signal.SIGTERM, signal.SIGINT, signal.SIGXCPU, signal.SIGALRM):
                signal.signal(number, signal.SIG_IGN)
            while True:
                pass
        """, timeout=0.5)  # fmt: skip
        assert time.monotonic() - began < 3
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}"):
                break
            await asyncio.sleep(0.02)
        return result, pid, await run(pool, "result = 'next'")

    result, pid, after = with_pool(layers, scenario)
    assert result.outcome == "timeout", result
    assert not os.path.exists(f"/proc/{pid}"), "the runaway worker is gone"
    assert (after.outcome, after.result) == ("success", "next")


# --------------------------------------------------------------------------- tenants


@LAYERS
def test_a_trap_left_after_a_full_escape_never_meets_another_container(layers: list[str]) -> None:
    """Tenant A owns its worker completely (patches json, builtins, the protocol writer);
    tenant B's calls run in workers A never touched, and see none of it."""

    async def scenario(pool: WorkerPool) -> tuple[Any, Any, Any, dict[int, str | None]]:
        trap = await answer(pool, """
            import builtins, json
            json.dumps = lambda *a, **k: '"trapped"'
            builtins.TRAP = 'installed'
            STATE['stolen'] = []
            result = "trap set"
        """, container="a")  # fmt: skip
        seen_b = await answer(
            pool,
            "import builtins, json; result = [json.dumps(1), getattr(builtins, 'TRAP', None), sorted(STATE)]",
            container="b",
        )
        seen_a = await answer(
            pool,
            "import builtins, json; result = [json.dumps(1), getattr(builtins, 'TRAP', None), sorted(STATE)]",
            container="a",
        )
        return trap, seen_b, seen_a, pool.bound_containers()

    trap, seen_b, seen_a, bound = with_pool(layers, scenario)
    assert trap == "trap set"
    assert seen_b == ["1", None, []]  # pristine: a worker of its own, forked from the zygote
    assert seen_a == ['"trapped"', "installed", ["stolen"]]  # A's own worker keeps A's own mess
    assert sorted(c for c in bound.values() if c) == ["a", "b"]


def test_one_worker_serves_containers_in_turn_and_never_two_at_once() -> None:
    async def scenario(pool: WorkerPool) -> list[tuple[int, Any]]:
        seen = []
        for container in ["a", "b", "a", "a", "c", "b"]:
            result = await answer(
                pool,
                f"STATE.setdefault('owner', {container!r}); result = [os.getpid(), STATE['owner']]",
                container,
            )
            pids = list(pool.bound_containers())
            seen.append((pids[0], result[1]))
            assert result[1] == container  # never state of another container
        return seen

    seen = with_pool([], scenario, size=1)
    assert [owner for _, owner in seen] == ["a", "b", "a", "a", "c", "b"]
    pids = [pid for pid, _ in seen]
    assert pids[2] == pids[3] and len({pids[0], pids[1], pids[2], pids[4], pids[5]}) == 5


# --------------------------------------------------------------------------- as an unprivileged user

UNPRIVILEGED = """
import asyncio, json, sys
sys.path.insert(0, {tests!r})
import test_os_sandbox as t

async def main():
    pool = t.raw_pool(2)
    await pool.start()
    try:
        a = await t.answer(pool, '''
result = {{"uid": os.getuid(), "root": probe(lambda: os.listdir("/")), "file": probe(lambda: open({canary!r}).read()),
          "exec": probe(lambda: os.execv("/bin/sh", ["sh"])), "pid": os.getpid()}}
''', "a")
        b = await t.answer(pool, "result = os.getpid()", "b")
        sibling = [p for p, c in pool.bound_containers().items() if c == "b"][0]
        k = await t.answer(pool, "import signal; result = probe(lambda: os.kill(%d, signal.SIGKILL))" % sibling, "a")
        again = await t.answer(pool, "result = 'alive'", "b")
        print(json.dumps({{"euid": __import__("os").geteuid(), "a": a, "kill": k, "b": again}}))
    finally:
        await pool.close()
asyncio.run(main())
"""


def test_the_layer_holds_when_the_server_is_not_root(tmp_path: Path) -> None:
    """The server in a user namespace as uid 1000, without any capability on the host."""
    canary = tmp_path / "canary"
    canary.write_text("secret")
    canary.chmod(0o644)
    script = UNPRIVILEGED.format(tests=str(HERE), canary=str(canary))
    done = subprocess.run(
        ["unshare", "--user", "--map-user=1000", "--map-group=1000", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["euid"] == 1000
    assert report["a"]["uid"] == INNER_ID and report["a"]["pid"] == 1
    assert report["a"]["root"] == ["ok", "[]"]
    assert refused(report["a"]["file"]) and refused(report["a"]["exec"])
    assert refused(report["kill"]) and report["b"] == "alive"


# --------------------------------------------------------------------------- refusing to start

NO_USERNS = [
    "unshare",
    "--user",
    "--map-root-user",
    "sh",
    "-c",
    'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"',
    "sh",
]


def test_the_pool_refuses_to_start_where_the_layer_cannot_be_set_up() -> None:
    script = (
        "import asyncio\nfrom wtpy.sandbox._pool import WorkerPool, OsSandboxUnavailable\n"
        "async def main():\n    pool = WorkerPool(1)\n    try:\n        await pool.start()\n"
        "    except OsSandboxUnavailable as exc:\n        print('REFUSED', exc)\n        return\n"
        "    await pool.close()\n    print('STARTED')\nasyncio.run(main())\n"
    )
    done = subprocess.run(
        [*NO_USERNS, sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.startswith("REFUSED"), (done.stdout, done.stderr)
    assert "WTPY_UNSAFE_NO_OS_SANDBOX=1" in done.stdout
    assert issubclass(OsSandboxUnavailable, Exception)


def test_the_server_refuses_to_start_without_the_layer_and_starts_loudly_with_the_override(
    tmp_path: Path,
) -> None:
    port = free_port()
    command = [
        *NO_USERNS,
        sys.executable,
        "-m",
        "wtpy.cli",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "d"),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WTPY_")}
    refused_start = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert refused_start.returncode != 0
    assert "the OS sandbox cannot be set up" in refused_start.stderr
    assert "WTPY_UNSAFE_NO_OS_SANDBOX=1" in refused_start.stderr

    server = subprocess.Popen(command, env={**env, "WTPY_UNSAFE_NO_OS_SANDBOX": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not start with the override")
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert "the OS sandbox is OFF" in stderr


def test_a_real_server_runs_hooks_in_the_os_sandbox(server: WtpyServer) -> None:
    """The server's own workers are the sandboxed kind (the layer is on by default)."""
    from conftest import CC_BODY, cc_meta
    from test_hostile import _status, _worker_pids

    name = "os-layer-probe"
    code = "def hook(client, scope, audience, context, cb):\n    cb(None, {'ok': 1})\n"
    assert server.put(name, code, cc_meta()).status_code == 201
    assert server.run(name, CC_BODY).json()["status"] == "success"
    pids = _worker_pids(server)
    assert pids
    for pid in pids:
        status = _status(pid)
        assert status["Seccomp"] == ["2"] and status["NSpid"][-1] == "1"


def test_a_worker_that_dies_while_idle_is_noticed_at_once_and_replaced() -> None:
    """No call needed: the pidfd turns readable at exit, the pool drops and replaces it."""

    async def scenario(pool: WorkerPool) -> tuple[int, list[int], Any]:
        await answer(pool, "result = 1", container="a")
        [victim] = [pid for pid, container in pool.bound_containers().items() if container == "a"]
        os.kill(victim, signal.SIGKILL)
        for _ in range(200):
            if victim not in pool.worker_pids and len(pool.worker_pids) == pool.size:
                break
            await asyncio.sleep(0.01)
        pids = pool.worker_pids
        return victim, pids, await answer(pool, "result = 'served'", container="a")

    victim, pids, served = with_pool([], scenario)
    assert victim not in pids and len(pids) == 2
    assert served == "served"

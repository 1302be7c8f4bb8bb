"""wtpy benchmark: invocation throughput and latency, side by side with the HTTP floor.

    python bench/run.py [--duration S] [--concurrency 1,8,64] [--workers N] [--quick]

Starts, on loopback and in a fresh temporary data dir:

* wtpy (`python -m wtpy.cli serve`) with the sample client-credentials rule
  (samples/myrule.py, the documented meta and secret) created through the management API;
* the floor (bench/floor.py): a bare Starlette + uvicorn app with the same loop/http
  settings, answering the same JSON success envelope without running any hook.

It drives both with `wrk` (a Lua POST script) when installed, else with bench/loadgen.py
(raw asyncio keep-alive sockets in a separate process), at each concurrency, and prints
requests/s, p50 and p99 per server and the ratio wtpy/floor. Then: first call after
create (cold compile) against warm calls, invocation with 1,000 and 100,000 stored
webtasks (inserted through the storage API before the server starts), and the RSS of the
server and of each sandbox worker (from /proc).

The many-tenant run (`--tenants N`, default 1,000; 200 with --quick; 0 skips it) deploys
the same rule in N containers of a fresh wtpy server (concurrent PUTs) and calls them
round-robin (request i goes to container i mod N) at the same concurrencies, next to the
single-tenant figures: a worker serves one container for life, so a call for a container
without an idle worker of its own needs a fresh worker forked from the zygote.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import http.client
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
SAMPLE = REPO / "samples" / "myrule.py"
CONTAINER = "default"
CC = "auth0-ext-compilers/client-credentials-exchange"
BODY = orjson.dumps(
    {"audience": "https://api.example.com", "client": {"id": "c1"}, "scope": ["test"]}
)
EXPECTED = orjson.dumps(
    {
        "statusCode": 200,
        "headers": {},
        "status": "success",
        "data": {"https://foo.com/claim": "bar", "scope": ["test", "extra"]},
    }
)


def rule_meta(secret: str) -> dict[str, str]:
    """The documented meta of the sample rule (README quick start)."""
    return {
        "wt-compiler": CC,
        "auth0-extension": "runtime",
        "auth0-extension-name": "credentials-exchange",
        "auth0-extension-secret": secret,
    }


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A child process serving HTTP on a loopback port."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WTPY_")}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()}")
            try:
                status, _ = request(self.port, "GET", "/healthz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wtpy_server(data_dir: Path, port: int, workers: int | None, log: Path) -> Server:
    argv = [sys.executable, "-m", "wtpy.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir)]  # fmt: skip
    if workers is not None:
        argv += ["--workers", str(workers)]
    return Server("wtpy", argv, port, log)


def floor_server(port: int, log: Path) -> Server:
    return Server("floor", [sys.executable, str(BENCH / "floor.py"), str(port)], port, log)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Caller:
    """One keep-alive connection (http.client: far less client overhead than httpx)."""

    def __init__(self, port: int, secret: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}

    def call(self, name: str, container: str = CONTAINER) -> tuple[float, bytes]:
        """(latency in ms, body) of one invocation."""
        started = time.perf_counter()
        self.conn.request("POST", f"/api/run/{container}/{name}", body=BODY, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200 or body != EXPECTED:
            raise RuntimeError(f"unexpected answer from {name}: {response.status} {body[:300]!r}")
        return elapsed, body

    def close(self) -> None:
        self.conn.close()


def put_webtask(port: int, token: str, name: str, code: str, secret: str) -> None:
    payload = {
        "code": code,
        "meta": rule_meta(secret),
        "secrets": {"auth0-extension-secret": secret},
    }
    status, body = request(
        port,
        "PUT",
        f"/api/webtask/{CONTAINER}/{name}",
        orjson.dumps(payload),
        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    if status not in (200, 201):
        raise RuntimeError(f"PUT {name}: {status} {body[:300]!r}")


def tenant_container(index: int) -> str:
    return f"tenant-{index:06d}"


def deploy_tenants(
    port: int, token: str, code: str, secret: str, count: int, threads: int = 16
) -> float:
    """PUT `code` as `myrule` in `count` containers through the management API: `threads`
    concurrent keep-alive connections. Returns the seconds it took."""
    payload = orjson.dumps(
        {"code": code, "meta": rule_meta(secret), "secrets": {"auth0-extension-secret": secret}}
    )
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    local = threading.local()
    conns: list[http.client.HTTPConnection] = []

    def put(index: int) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conns.append(conn)
        path = f"/api/webtask/{tenant_container(index)}/myrule"
        conn.request("PUT", path, body=payload, headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status not in (200, 201):
            raise RuntimeError(f"PUT {path}: {response.status} {body[:300]!r}")

    started = time.perf_counter()
    try:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(put, index) for index in range(count)]:
                future.result()
    finally:
        for conn in conns:
            conn.close()
    return time.perf_counter() - started


# --------------------------------------------------------------------------- memory


def rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def children(pid: int) -> list[int]:
    return sorted(child for child, parent in _parents().items() if parent == pid)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (the zygote and the workers it forked)."""
    parents = _parents()
    found: list[int] = []
    frontier = {pid}
    while frontier:
        level = [child for child, parent in parents.items() if parent in frontier]
        found.extend(level)
        frontier = set(level)
    return sorted(found)


def sandbox_workers(server: Server) -> list[int]:
    """The sandbox workers: the zygote's children (the zygote is the server's child)."""
    return [pid for zygote in children(server.pid) for pid in children(zygote)]


def pids_allocated() -> int:
    """The machine's last allocated PID (/proc/loadavg): its growth counts new processes
    and threads, wtpy's worker forks among them."""
    return int(Path("/proc/loadavg").read_text().split()[-1])


def cpu_seconds(pid: int, reaped_children: bool = False) -> float:
    """utime + stime of one process in seconds (0 when it is gone); with
    `reaped_children`, the CPU time of its children that have exited and were waited for."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        first = 13 if reaped_children else 11  # cutime, cstime / utime, stime
        return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def cpu_split(server: Server) -> tuple[float, float]:
    """(server process, everything below it: the zygote and its workers, live ones plus
    replaced ones) CPU seconds so far. Workers are the zygote's children (it reaps them),
    so a replaced worker's CPU is in the zygote's reaped-children time."""
    below = sum(
        cpu_seconds(pid) + cpu_seconds(pid, reaped_children=True) for pid in descendants(server.pid)
    )
    return cpu_seconds(server.pid), below + cpu_seconds(server.pid, reaped_children=True)


def busy_seconds() -> float:
    """CPU seconds all processes spent (user + nice + system in /proc/stat; interrupt and
    softirq time, much of it our own loopback traffic, belongs to no process)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[0] + fields[1] + fields[2]) / os.sysconf("SC_CLK_TCK")


def loadgen_seconds() -> float:
    """CPU seconds of this script's finished children (wrk / loadgen.py runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def memory(server: Server) -> dict[str, Any]:
    workers = [rss_kib(pid) for pid in sandbox_workers(server)]
    zygote = sum(rss_kib(pid) for pid in children(server.pid))
    return {"server_kib": rss_kib(server.pid), "zygote_kib": zygote, "workers_kib": workers}


def fmt_memory(mem: dict[str, Any]) -> str:
    workers = ", ".join(f"{kib / 1024:.1f}" for kib in mem["workers_kib"])
    total = mem["server_kib"] + mem["zygote_kib"] + sum(mem["workers_kib"])
    return (
        f"server {mem['server_kib'] / 1024:.1f} MiB; zygote {mem['zygote_kib'] / 1024:.1f} MiB; "
        f"workers [{workers}] MiB; total {total / 1024:.1f} MiB (RSS counts shared pages in each)"
    )


# --------------------------------------------------------------------------- load


class LoadGen:
    def __init__(self, kind: str, tmp: Path, secret: str) -> None:
        self.kind = kind
        self.tmp = tmp
        self.secret = secret
        self.lua = tmp / "post.lua"
        self.body_file = tmp / "body.json"
        self.body_file.write_bytes(BODY)
        body = BODY.decode().replace("\\", "\\\\").replace("'", "\\'")
        self.lua_head = f"""wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {secret}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {{"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"mean_us":%f,"max_us":%d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""
        self.lua.write_text(self.lua_head)

    def _rotating_lua(self, paths_file: Path) -> Path:
        """The POST script with a `request` function that rotates over the paths (one wrk
        thread, so one counter: request i goes to path i mod N)."""
        script = self.tmp / "post-rotate.lua"
        script.write_text(
            self.lua_head
            + f"""
paths = {{}}
for line in io.lines("{paths_file}") do paths[#paths + 1] = line end
counter = 0
request = function()
  local path = paths[counter % #paths + 1]
  counter = counter + 1
  return wrk.format(nil, path)
end
"""
        )
        return script

    def describe(self) -> str:
        if self.kind == "wrk":
            version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(
                "\n"
            )[0]
            return f"wrk ({version.strip() or 'wrk'}), 1 thread, Lua POST script"
        return "bench/loadgen.py (asyncio + uvloop keep-alive sockets, separate process)"

    def run(
        self, port: int, path: str | list[str], concurrency: int, duration: float, warmup: float
    ) -> dict[str, Any]:
        """One measurement on `path`, or round-robin over a list of paths."""
        paths_file = None
        if isinstance(path, list):
            paths_file = self.tmp / "paths.txt"
            paths_file.write_text("".join(f"{p}\n" for p in path))
            path = path[0]
        if self.kind == "wrk":
            return self._wrk(port, path, concurrency, duration, warmup, paths_file)
        return self._python(port, path, concurrency, duration, warmup, paths_file)

    def _wrk(
        self, port: int, path: str, concurrency: int, duration: float, warmup: float,
        paths_file: Path | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        url = f"http://127.0.0.1:{port}{path}"
        script = self.lua if paths_file is None else self._rotating_lua(paths_file)

        def once(seconds: float) -> dict[str, Any]:
            argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
                    "--timeout", "30s", "-s", str(script), url]  # fmt: skip
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
            result: dict[str, Any] = orjson.loads(line[len("RESULT ") :])
            return result

        if warmup > 0:
            once(warmup)
        raw = once(duration)
        return {
            "requests": raw["requests"],
            "errors": raw["errors"] + raw["status_errors"],
            "rps": raw["requests"] / (raw["duration_us"] / 1e6),
            "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "mean_ms": raw["mean_us"] / 1000,
            "max_ms": raw["max_us"] / 1000,
        }

    def _python(
        self, port: int, path: str, concurrency: int, duration: float, warmup: float,
        paths_file: Path | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        argv = [sys.executable, str(BENCH / "loadgen.py"), "--port", str(port), "--path", path,
                "--body-file", str(self.body_file), "--header", f"Authorization: Bearer {self.secret}",
                "--expect", '"status":"success"', "-c", str(concurrency), "-d", str(duration),
                "-w", str(warmup)]  # fmt: skip
        if paths_file is not None:
            argv += ["--paths-file", str(paths_file)]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        result: dict[str, Any] = orjson.loads(out.strip().splitlines()[-1])
        result["errors"] += result.pop("bad_body", 0)
        return result


# --------------------------------------------------------------------------- scenarios


def measure(
    gen: LoadGen,
    server: Server,
    path: str | list[str],
    concurrency: int,
    duration: float,
    warmup: float,
) -> dict[str, Any]:
    """One load-generator run against `server`, with the CPU it cost and the PIDs allocated."""
    before, busy, gen_cpu, started = (
        cpu_split(server),
        busy_seconds(),
        loadgen_seconds(),
        time.monotonic(),
    )
    pids = pids_allocated()
    result = gen.run(server.port, path, concurrency, duration, warmup)
    after = cpu_split(server)
    result["pids_allocated"] = pids_allocated() - pids
    # CPU the machine spent on anything but this server and the load generator
    # (other jobs skew the figures: the run says so).
    ours = sum(after) - sum(before) + loadgen_seconds() - gen_cpu
    other = busy_seconds() - busy - ours
    result["other_load_pct"] = max(
        0.0, other / ((time.monotonic() - started) * (os.cpu_count() or 1)) * 100
    )
    # CPU per request over warm-up + measurement (wrk reports only the latter's count).
    total = max(1.0, result["requests"] * (duration + warmup) / duration)
    result["server_cpu_us"] = (after[0] - before[0]) / total * 1e6
    result["workers_cpu_us"] = (after[1] - before[1]) / total * 1e6
    result["pids_per_request"] = result["pids_allocated"] / total
    return result


def print_measure(
    label: str, concurrency: int, result: dict[str, Any], workers: bool, pids: bool = False
) -> None:
    print(
        f"  c={concurrency:<3} {label:<5} {result['rps']:>8.0f} req/s  "
        f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
        f"errors {result['errors']}  CPU/req: server {result['server_cpu_us']:.0f} us"
        + (f", zygote + workers {result['workers_cpu_us']:.0f} us" if workers else "")
        + (f"; new PIDs/req {result['pids_per_request']:.2f}" if pids else "")
        + (
            f"  [other load {result['other_load_pct']:.0f}% of the CPUs: figures skewed]"
            if result["other_load_pct"] > 5
            else ""
        ),
        flush=True,
    )


def throughput(
    gen: LoadGen, wtpy: Server, floor: Server, levels: list[int], duration: float, warmup: float
) -> list[dict[str, Any]]:
    rows = []
    path = f"/api/run/{CONTAINER}/myrule"
    for concurrency in levels:
        row: dict[str, Any] = {"concurrency": concurrency}
        for server in (floor, wtpy):
            result = measure(gen, server, path, concurrency, duration, warmup)
            row[server.name] = result
            print_measure(server.name, concurrency, result, workers=server is wtpy)
        rows.append(row)
    return rows


def many_tenants(
    gen: LoadGen, tmp: Path, tenants: int, secret: str, workers: int | None, levels: list[int],
    duration: float, warmup: float,
) -> dict[str, Any]:  # fmt: skip
    """The sample rule deployed in `tenants` containers of a fresh server, called
    round-robin (request i to container i mod tenants) at each concurrency."""
    data_dir = tmp / "data-tenants"
    server = wtpy_server(data_dir, free_port(), workers, tmp / "wtpy-tenants.log")
    with running(server):
        token = (data_dir / "admin.token").read_text().strip()
        deploy_s = deploy_tenants(server.port, token, SAMPLE.read_text(), secret, tenants)
        print(
            f"  deployed {tenants:,} containers (concurrent PUTs, 16 connections) in {deploy_s:.1f} s",
            flush=True,
        )
        caller = Caller(server.port, secret)
        try:  # the first and the last container answer right before the load starts
            for index in (0, tenants - 1):
                caller.call("myrule", tenant_container(index))
        finally:
            caller.close()
        paths = [f"/api/run/{tenant_container(i)}/myrule" for i in range(tenants)]
        rows = []
        for concurrency in levels:
            result = measure(gen, server, paths, concurrency, duration, warmup)
            rows.append({"concurrency": concurrency, "wtpy": result})
            print_measure("wtpy", concurrency, result, workers=True, pids=True)
        mem = memory(server)
        log_tail = [ln for ln in (tmp / "wtpy-tenants.log").read_text(errors="replace").splitlines()
                    if "Traceback" in ln or "ERROR" in ln or "error" in ln.lower()]  # fmt: skip
    return {"tenants": tenants, "deploy_s": deploy_s, "throughput": rows, "memory": mem,
            "server_log_errors": log_tail[:20]}  # fmt: skip


def cold_vs_warm(
    port: int, token: str, secret: str, workers: int, rounds: int, warm_calls: int
) -> dict[str, Any]:
    """First call after PUT (the worker compiles the new code) against warm calls."""
    base = SAMPLE.read_text()
    caller = Caller(port, secret)
    firsts: list[float] = []
    warm: list[float] = []
    try:
        for index in range(rounds):
            name = f"cold-{index}"
            # A distinct source per round: a new code hash, so no worker has compiled it.
            put_webtask(port, token, name, f"{base}\n# bench variant {uuid.uuid4().hex}\n", secret)
            firsts.append(caller.call(name)[0])
            for _ in range(workers + 1):  # every worker compiles it once
                caller.call(name)
            warm.extend(caller.call(name)[0] for _ in range(warm_calls))
    finally:
        caller.close()
    warm.sort()
    return {
        "rounds": rounds,
        "first_ms": statistics.median(firsts),
        "first_all_ms": [round(v, 2) for v in firsts],
        "warm_p50_ms": statistics.median(warm),
        "warm_p99_ms": warm[min(len(warm) - 1, int(len(warm) * 0.99))],
    }


def populate(data_dir: Path, count: int, secret: str) -> float:
    """Insert `count` copies of the sample rule through the storage API (server not running)."""
    from wtpy.storage import SecretBox, default_database_url, open_storage

    data_dir.mkdir(parents=True, mode=0o700)
    code = SAMPLE.read_text()
    started = time.perf_counter()
    box = SecretBox.from_data_dir(data_dir)
    with open_storage(default_database_url(data_dir), box) as store:
        for index in range(count):
            store.put(CONTAINER, f"rule-{index:06d}", code, rule_meta(secret),
                      {"auth0-extension-secret": secret})  # fmt: skip
    return time.perf_counter() - started


def stored(
    gen: LoadGen, tmp: Path, count: int, secret: str, workers: int | None, duration: float,
    warmup: float, samples: int,
) -> dict[str, Any]:  # fmt: skip
    data_dir = tmp / f"data-{count}"
    insert_s = populate(data_dir, count, secret)
    server = wtpy_server(data_dir, free_port(), workers, tmp / f"wtpy-{count}.log")
    with running(server):
        caller = Caller(server.port, secret)
        try:
            caller.call("rule-000000")  # workers compile the (shared) code once
            for _ in range(8):
                caller.call("rule-000000")
            # First call of webtasks never called before: store read + decrypt, code already compiled.
            names = random.Random(count).sample(range(1, count), min(samples, count - 1))
            first = sorted(caller.call(f"rule-{i:06d}")[0] for i in names)
            again = sorted(caller.call(f"rule-{i:06d}")[0] for i in names)
        finally:
            caller.close()
        target = f"/api/run/{CONTAINER}/rule-{count // 2:06d}"
        c8 = gen.run(server.port, target, 8, duration, warmup)
        mem = memory(server)
    return {
        "stored": count,
        "insert_s": insert_s,
        "first_call_p50_ms": statistics.median(first),
        "first_call_p99_ms": first[min(len(first) - 1, int(len(first) * 0.99))],
        "cached_call_p50_ms": statistics.median(again),
        "c8": c8,
        "memory": mem,
    }


# --------------------------------------------------------------------------- report


def machine_notes(gen: LoadGen, workers: int | None) -> list[str]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import starlette
    import uvicorn

    from wtpy import __version__

    return [
        f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}",
        f"Python {platform.python_version()}, uvicorn {uvicorn.__version__}, starlette {starlette.__version__}, wtpy {__version__}",
        f"load generator: {gen.describe()} on the same machine",
        f"wtpy workers: {workers if workers is not None else 'default (--workers not given)'}",
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    print(
        "| concurrency | floor req/s | floor p50 | floor p99 | wtpy req/s | wtpy p50 | wtpy p99 | wtpy/floor |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        f, w = row["floor"], row["wtpy"]
        print(
            f"| {row['concurrency']} | {f['rps']:,.0f} | {f['p50_ms']:.2f} ms | {f['p99_ms']:.2f} ms "
            f"| {w['rps']:,.0f} | {w['p50_ms']:.2f} ms | {w['p99_ms']:.2f} ms "
            f"| {w['rps'] / f['rps']:.2f} |"
        )


def print_tenants_table(single: list[dict[str, Any]], many: dict[str, Any]) -> None:
    tenants = many["tenants"]
    print()
    print(
        f"| concurrency | 1 tenant req/s | p50 | p99 | {tenants:,} tenants req/s | p50 | p99 | many/single |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    by_level = {row["concurrency"]: row["wtpy"] for row in single}
    for row in many["throughput"]:
        m = row["wtpy"]
        s = by_level.get(row["concurrency"])
        if s is None:
            continue
        print(
            f"| {row['concurrency']} | {s['rps']:,.0f} | {s['p50_ms']:.2f} ms | {s['p99_ms']:.2f} ms "
            f"| {m['rps']:,.0f} | {m['p50_ms']:.2f} ms | {m['p99_ms']:.2f} ms | {m['rps'] / s['rps']:.3f} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description="wtpy vs the bare Starlette floor")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per measurement (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of warm-up before each (default 2)"
    )
    parser.add_argument(
        "--concurrency", default="1,8,64", help="comma-separated list (default 1,8,64)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="wtpy --workers (default: wtpy's default)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 s runs, fewer samples, 10,000 instead of 100,000 stored",
    )
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--stored", default=None, help="stored-webtask counts (default 1000,100000)"
    )
    parser.add_argument(
        "--tenants",
        type=int,
        default=None,
        help="containers in the many-tenant run (default 1,000; 200 with --quick; 0 skips it)",
    )
    parser.add_argument("--skip-extras", action="store_true", help="only the throughput tables")
    parser.add_argument("--json", type=Path, help="also write all figures to this file")
    args = parser.parse_args()

    duration, warmup = args.duration, args.warmup
    rounds, warm_calls, samples = 5, 200, 300
    stored_counts = [1000, 100_000]
    tenants = 1000
    if args.quick:
        duration, warmup = min(duration, 3.0), min(warmup, 1.0)
        rounds, warm_calls, samples = 3, 100, 100
        stored_counts = [1000, 10_000]
        tenants = 200
    if args.tenants is not None:
        tenants = args.tenants
    if args.stored:
        stored_counts = [int(v) for v in args.stored.split(",") if v.strip()]
    levels = [int(v) for v in args.concurrency.split(",") if v.strip()]
    kind = args.loadgen
    if kind == "auto":
        kind = "wrk" if shutil.which("wrk") else "python"
    elif kind == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk), use --loadgen python")

    # tmpfs keeps the 100,000 inserts quick (SQLite fsyncs each commit); the hot path never reads disk.
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    tmp = Path(tempfile.mkdtemp(prefix="wtpy-bench-", dir=base))
    secret = uuid.uuid4().hex + uuid.uuid4().hex
    gen = LoadGen(kind, tmp, secret)
    report: dict[str, Any] = {"machine": machine_notes(gen, args.workers), "duration_s": duration}
    print("wtpy benchmark")
    for note in report["machine"]:
        print(f"  {note}")
    print(f"  {duration:g} s per measurement after {warmup:g} s warm-up; temp dir {tmp}")
    try:
        wtpy = wtpy_server(tmp / "data", free_port(), args.workers, tmp / "wtpy.log")
        floor = floor_server(free_port(), tmp / "floor.log")
        with running(wtpy), running(floor):
            token = (tmp / "data" / "admin.token").read_text().strip()
            put_webtask(wtpy.port, token, "myrule", SAMPLE.read_text(), secret)
            caller = Caller(wtpy.port, secret)
            caller.call("myrule")
            caller.close()
            workers = len(sandbox_workers(wtpy))
            report["workers"] = workers
            report["memory_idle"] = memory(wtpy)
            print(f"\nThroughput (sample rule, {workers} workers):", flush=True)
            rows = throughput(gen, wtpy, floor, levels, duration, warmup)
            report["throughput"] = rows
            report["memory_after_load"] = memory(wtpy)
            report["floor_rss_kib"] = rss_kib(floor.pid)
            print_table(rows)
            if not args.skip_extras:
                print("\nCold compile (first call after PUT) vs warm:", flush=True)
                cold = cold_vs_warm(wtpy.port, token, secret, workers, rounds, warm_calls)
                report["cold"] = cold
                print(
                    f"  first call {cold['first_ms']:.2f} ms (median of {rounds}: {cold['first_all_ms']}); "
                    f"warm p50 {cold['warm_p50_ms']:.2f} ms, p99 {cold['warm_p99_ms']:.2f} ms"
                )
            print("\nMemory (RSS):")
            print(f"  wtpy idle:        {fmt_memory(report['memory_idle'])}")
            print(f"  wtpy after load:  {fmt_memory(report['memory_after_load'])}")
            print(f"  floor after load: {report['floor_rss_kib'] / 1024:.1f} MiB")
        if tenants > 0:
            note = (
                " (--quick: fewer tenants than the full run's 1,000)"
                if args.quick and args.tenants is None
                else ""
            )
            print(
                f"\nMany tenants: the sample rule in {tenants:,} containers{note}, called round-robin "
                "(request i to container i mod N) on a fresh server; a worker serves one container "
                "for life, so most calls need a new worker forked from the zygote:",
                flush=True,
            )
            many = many_tenants(gen, tmp, tenants, secret, args.workers, levels, duration, warmup)
            report["many_tenants"] = many
            print_tenants_table(rows, many)
            print(f"  memory after load: {fmt_memory(many['memory'])}")
            for line in many["server_log_errors"]:
                print(f"  server log: {line}")
        if not args.skip_extras:
            print(
                "\nStored webtasks (sequential first calls on 1 connection; then c=8 on one webtask):"
            )
            report["stored"] = []
            for count in stored_counts:
                result = stored(gen, tmp, count, secret, args.workers, duration, warmup, samples)
                report["stored"].append(result)
                c8 = result["c8"]
                print(
                    f"  {count:>7,} stored (inserted in {result['insert_s']:.1f} s): first call p50 "
                    f"{result['first_call_p50_ms']:.2f} ms p99 {result['first_call_p99_ms']:.2f} ms, "
                    f"cached p50 {result['cached_call_p50_ms']:.2f} ms; c=8 {c8['rps']:,.0f} req/s "
                    f"p50 {c8['p50_ms']:.2f} ms p99 {c8['p99_ms']:.2f} ms; {fmt_memory(result['memory'])}",
                    flush=True,
                )
        if args.json:
            args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

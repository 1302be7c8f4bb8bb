"""WorkerPool against a fake worker (tests/fake_worker.py) and, when present, the real one."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from wtpy.sandbox._pool import (
    DEADLINE_CHECK_SECONDS,
    ArgumentsNotEncodable,
    JobResult,
    PoolClosedError,
    WorkerPool,
    WorkerStartError,
)

HERE = Path(__file__).resolve().parent
FAKE = [sys.executable, "-I", str(HERE / "fake_worker.py")]
REAL_WORKER = HERE.parent / "wtpy" / "sandbox" / "_worker.py"
KEY = "k" * 64
T = TypeVar("T")


def arun(factory: Callable[[], Awaitable[T]], limit: float = 60.0) -> T:
    """Run a coroutine to completion with a hard upper bound (no pytest-asyncio here)."""

    async def bounded() -> T:
        return await asyncio.wait_for(factory(), limit)

    return asyncio.run(bounded())


def fake_pool(size: int = 2, *extra: str, **options: Any) -> WorkerPool:
    return WorkerPool(size, worker_argv=[*FAKE, *extra], **options)


@contextlib.asynccontextmanager
async def started(pool: WorkerPool) -> AsyncIterator[WorkerPool]:
    """`async with started(fake_pool(1)) as pool:` the pool, started, and closed after."""
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def job(
    pool: WorkerPool, action: str = "echo", value: Any = None, *, key: str = KEY,
    code: str = "fake code", timeout: float = 10.0, **more: Any,
) -> JobResult:  # fmt: skip
    return await pool.run(
        key=key,
        code=code,
        filename="<webtask default/test>",
        args={"action": action, "value": value, **more},
        order=["action", "value"],
        timeout=timeout,
    )


async def stats(pool: WorkerPool, **kwargs: Any) -> dict[str, Any]:
    result = await job(pool, "stats", **kwargs)
    assert result.outcome == "success", result
    return result.result


async def wait_for_capacity(pool: WorkerPool, size: int, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while len(pool.worker_pids) < size:
        assert time.monotonic() < deadline, "the pool did not get its capacity back"
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------- basics


def test_results_flow_through() -> None:
    async def scenario() -> None:
        async with started(fake_pool(1)) as pool:
            ok = await job(pool, "echo", {"claims": {"a": [1, 2]}, "unicode": "é✓"})
            assert ok.outcome == "success"
            assert ok.has_result is True
            assert ok.result == {"claims": {"a": [1, 2]}, "unicode": "é✓"}
            assert ok.error is None
            assert ok.logs and ok.logs[0]["level"] == "info"
            assert 0 < ok.duration_ms < 10_000

            nothing = await job(pool, "none")
            assert (nothing.outcome, nothing.has_result, nothing.result) == ("success", False, None)

            null = await job(pool, "echo", None)
            assert (null.outcome, null.has_result, null.result) == ("success", True, None)

            failed = await job(pool, "error")
            assert failed.outcome == "error"
            assert failed.error == {
                "name": "ValueError",
                "message": "boom",
                "stack": "ValueError: boom",
            }
            assert failed.has_result is False

            # Output a job writes to its stdout never corrupts the frame stream.
            noisy = await job(pool, "print", 5)
            assert (noisy.outcome, noisy.result) == ("success", 5)
            assert (await job(pool, "echo", 6)).result == 6

    arun(scenario)


def test_concurrent_jobs_on_two_workers_all_succeed_with_matched_ids() -> None:
    async def scenario() -> None:
        async with started(fake_pool(2)) as pool:
            results = await asyncio.gather(
                *(job(pool, "sleep", i, seconds=0.01 * (i % 3)) for i in range(40))
            )
            assert [r.outcome for r in results] == ["success"] * 40
            assert [r.result for r in results] == list(range(40))
            jobs_per_worker = [s["jobs"] for s in await asyncio.gather(stats(pool), stats(pool))]
            assert len(pool.worker_pids) == 2
            assert sum(jobs_per_worker) == 42  # both workers took part
            assert min(jobs_per_worker) > 1

    arun(scenario)


def test_an_idle_pool_reuses_the_worker_that_finished_last() -> None:
    async def scenario() -> None:
        async with started(fake_pool(3)) as pool:
            pids = [(await stats(pool))["pid"] for _ in range(6)]
            assert len(set(pids)) == 1  # one call at a time: always the warm worker
            busy = await asyncio.gather(*(stats(pool) for _ in range(3)))
            assert len({result["pid"] for result in busy}) >= 2  # concurrent calls spread out

    arun(scenario)


def test_code_is_sent_once_per_worker_and_key() -> None:
    async def scenario() -> None:
        async with started(fake_pool(2)) as pool:
            for _ in range(3):
                await asyncio.gather(*(job(pool, "echo", i) for i in range(10)))
            await job(pool, "echo", key="other" * 8)
            per_worker = await asyncio.gather(stats(pool), stats(pool))
            assert {s["pid"] for s in per_worker} == set(pool.worker_pids)
            assert sum(s["code_received_by_key"].get(KEY, 0) for s in per_worker) == 2
            assert sum(s["code_received_by_key"].get("other" * 8, 0) for s in per_worker) == 1

    arun(scenario)


def test_need_code_resends_the_code() -> None:
    async def scenario() -> None:
        # --cache-size 0: the worker forgets every key, so each code-less request is refused.
        async with started(fake_pool(1, "--cache-size", "0")) as pool:
            for i in range(4):
                result = await job(pool, "echo", i)
                assert (result.outcome, result.result) == ("success", i)
            assert (await stats(pool))["code_received"] == 5  # 4 echoes + this stats call

    arun(scenario)


# --------------------------------------------------------------------------- failures


def test_timeout_kills_and_replaces_the_worker_and_the_pool_keeps_serving() -> None:
    async def scenario() -> None:
        async with started(fake_pool(1)) as pool:
            [old_pid] = pool.worker_pids
            began = time.monotonic()
            result = await job(pool, "spin", timeout=0.5)
            assert time.monotonic() - began < 10
            assert result.outcome == "timeout"
            assert result.error == {
                "name": "TimeoutError",
                "message": "Script execution timed out after 0.5 seconds",
            }
            assert 400 < result.duration_ms < 10_000
            assert old_pid not in pool.worker_pids
            nxt = await job(pool, "echo", "after")  # waits for the replacement
            assert (nxt.outcome, nxt.result) == ("success", "after")
            assert (await stats(pool))["pid"] != old_pid
            assert not alive(old_pid)

    arun(scenario)


def test_timeout_message_formats_seconds() -> None:
    async def scenario() -> None:
        async with started(fake_pool(1)) as pool:
            result = await job(pool, "sleep", seconds=30, timeout=1.0)
            assert result.error is not None
            assert result.error["message"] == "Script execution timed out after 1 seconds"

    arun(scenario)


def test_timeouts_are_noticed_within_the_deadline_check_and_checks_stop_when_idle() -> None:
    async def scenario() -> None:
        async with started(fake_pool(2)) as pool:
            short, long = await asyncio.gather(
                job(pool, "sleep", seconds=30, timeout=0.2),
                job(pool, "sleep", seconds=30, timeout=0.6),
            )
            for result, timeout in ((short, 0.2), (long, 0.6)):
                assert result.outcome == "timeout"
                # Not before the deadline; late by the check interval plus scheduling slack.
                assert (
                    timeout * 1000
                    <= result.duration_ms
                    < (timeout + DEADLINE_CHECK_SECONDS + 0.25) * 1000
                )
            await wait_for_capacity(pool, 2)
            assert (await job(pool, "echo", 1)).result == 1
            await asyncio.sleep(DEADLINE_CHECK_SECONDS * 3)
            assert pool._deadline_check is None and not pool._deadlines  # no timer while idle

    arun(scenario)


def test_other_jobs_are_unaffected_by_a_timeout() -> None:
    async def scenario() -> None:
        async with started(fake_pool(2)) as pool:
            spin = asyncio.ensure_future(job(pool, "spin", timeout=1.0))
            quick = await asyncio.gather(*(job(pool, "echo", i) for i in range(20)))
            assert [r.result for r in quick] == list(range(20))
            assert (await spin).outcome == "timeout"

    arun(scenario)


@pytest.mark.parametrize("action", ["crash", "garbage", "wrong_id"])
def test_worker_dying_or_breaking_protocol_mid_job_is_killed_and_replaced(action: str) -> None:
    async def scenario() -> None:
        async with started(fake_pool(1)) as pool:
            [old_pid] = pool.worker_pids
            result = await job(pool, action)
            assert result.outcome == "killed"
            assert result.error == {
                "name": "WorkerKilled",
                "message": "The hook's sandbox process was terminated "
                "(memory or CPU limit exceeded, or it crashed)",
            }
            nxt = await job(pool, "echo", 1)
            assert (nxt.outcome, nxt.result) == ("success", 1)
            assert pool.worker_pids != [old_pid]

    arun(scenario)


def test_worker_that_died_while_idle_is_replaced_without_failing_a_job() -> None:
    async def scenario() -> None:
        async with started(fake_pool(1)) as pool:
            [old_pid] = pool.worker_pids
            os.kill(old_pid, 9)
            deadline = time.monotonic() + 10
            while alive(old_pid):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # let the child watcher see it
            result = await job(pool, "echo", 7)
            assert (result.outcome, result.result) == ("success", 7)
            assert pool.worker_pids != [old_pid]

    arun(scenario)


def test_recycle_flag_replaces_the_worker_after_returning_the_result() -> None:
    async def scenario() -> None:
        async with started(fake_pool(1)) as pool:
            first = (await stats(pool))["pid"]
            result = await job(pool, "recycle", "kept")
            assert (result.outcome, result.result) == ("success", "kept")
            second = (await stats(pool))["pid"]
            assert second != first
            assert (await stats(pool))["pid"] == second  # no recycle without the flag

    arun(scenario)


def test_max_jobs_per_worker() -> None:
    async def scenario() -> None:
        async with started(fake_pool(1, max_jobs_per_worker=3)) as pool:
            pids = [(await stats(pool))["pid"] for _ in range(7)]
            assert pids[0] == pids[1] == pids[2]
            assert pids[3] == pids[4] == pids[5] != pids[0]
            assert pids[6] not in (pids[0], pids[3])

    arun(scenario)


def test_max_jobs_recycling_of_the_first_workers_is_staggered() -> None:
    async def scenario() -> None:
        async with started(fake_pool(2, max_jobs_per_worker=8)) as pool:
            first = set(pool.worker_pids)
            seen: list[set[int]] = []
            for _ in range(8):  # round-robin: 4 jobs each so far, limits 8 and 6
                await job(pool, "echo")
            for _ in range(4):
                await job(pool, "echo")
                seen.append(set(pool.worker_pids))
            # One of the first workers has been replaced while the other still serves.
            assert any(len(pids & first) == 1 for pids in seen)

    arun(scenario)


def test_replacement_that_fails_to_start_is_retried(tmp_path: Path) -> None:
    fail_file = tmp_path / "fail"
    events: list[tuple[str, dict[str, Any]]] = []

    async def scenario() -> None:
        pool = fake_pool(
            1, "--fail-file", str(fail_file), on_event=lambda e, info: events.append((e, info))
        )
        async with started(pool):
            fail_file.write_text("3")  # the next three starts fail
            assert (await job(pool, "crash")).outcome == "killed"
            result = await job(pool, "echo", "back")
            assert (result.outcome, result.result) == ("success", "back")
            assert fail_file.read_text() == "0"
            assert [e for e, _ in events].count("spawn_failed") == 3

    arun(scenario)


def test_start_fails_loudly_when_workers_cannot_start(tmp_path: Path) -> None:
    fail_file = tmp_path / "fail"
    fail_file.write_text("1000")

    async def scenario() -> None:
        pool = fake_pool(2, "--fail-file", str(fail_file))
        with pytest.raises(WorkerStartError):
            await pool.start()
        assert pool.closed

    arun(scenario)


def test_start_times_out_on_a_worker_that_never_says_ready() -> None:
    async def scenario() -> None:
        pool = fake_pool(1, "--ready-delay", "30", start_timeout=0.3)
        pool._backoff_initial = 0.01
        with pytest.raises(WorkerStartError):
            await pool.start()

    arun(scenario)


# --------------------------------------------------------------------------- cancellation


def test_cancelled_caller_leaves_the_worker_in_a_known_state() -> None:
    async def scenario() -> None:
        async with started(fake_pool(1)) as pool:
            [pid] = pool.worker_pids
            task = asyncio.ensure_future(job(pool, "sleep", "late", seconds=0.3))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The abandoned job's reply is consumed; the same worker serves the next job.
            result = await job(pool, "echo", "next")
            assert (result.outcome, result.result) == ("success", "next")
            assert pool.worker_pids == [pid]

    arun(scenario)


def test_cancelled_caller_of_a_runaway_job_still_times_it_out() -> None:
    async def scenario() -> None:
        async with started(fake_pool(1)) as pool:
            [pid] = pool.worker_pids
            task = asyncio.ensure_future(job(pool, "spin", timeout=0.5))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            result = await job(pool, "echo", "next")
            assert (result.outcome, result.result) == ("success", "next")
            assert pool.worker_pids != [pid]

    arun(scenario)


def test_cancelled_waiter_does_not_swallow_a_worker() -> None:
    async def scenario() -> None:
        async with started(fake_pool(1)) as pool:
            busy = asyncio.ensure_future(job(pool, "sleep", seconds=0.2))
            await asyncio.sleep(0.05)
            waiting = asyncio.ensure_future(job(pool, "echo", "never"))
            await asyncio.sleep(0.05)
            waiting.cancel()
            assert (await busy).outcome == "success"
            result = await asyncio.wait_for(job(pool, "echo", "ok"), 10)
            assert result.result == "ok"

    arun(scenario)


# --------------------------------------------------------------------------- lifecycle


def test_close_is_idempotent_and_kills_every_worker() -> None:
    async def scenario() -> None:
        pool = fake_pool(2)
        await pool.start()
        pids = pool.worker_pids
        assert len(pids) == 2
        busy = asyncio.ensure_future(job(pool, "spin", timeout=30))
        await asyncio.sleep(0.1)
        await pool.close()
        await pool.close()
        assert (await busy).outcome == "killed"
        assert not any(alive(pid) for pid in pids)
        assert pool.worker_pids == []
        with pytest.raises(PoolClosedError):
            await job(pool, "echo")

    arun(scenario)


def test_close_releases_callers_waiting_for_a_worker() -> None:
    async def scenario() -> None:
        pool = fake_pool(1)
        await pool.start()
        busy = asyncio.ensure_future(job(pool, "spin", timeout=30))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(job(pool, "echo"))
        await asyncio.sleep(0.05)
        await pool.close()
        assert (await busy).outcome == "killed"
        with pytest.raises(PoolClosedError):
            await waiting

    arun(scenario)


def test_worker_environment_is_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WTPY_SECRET_KEY", "server-secret-must-not-leak")
    monkeypatch.setenv("SOME_API_TOKEN", "token-must-not-leak")

    async def scenario() -> dict[str, str]:
        async with started(fake_pool(1, memory_mb=256)) as pool:
            result = await job(pool, "env")
            assert result.outcome == "success"
            return result.result

    env = arun(scenario)
    assert "WTPY_SECRET_KEY" not in env
    assert "SOME_API_TOKEN" not in env
    assert not any("must-not-leak" in value for value in env.values())
    assert env["WTPY_WORKER_MEMORY_MB"] == "256"
    assert set(env) <= {"PATH", "LANG", "LC_CTYPE", "TZ", "WTPY_WORKER_MEMORY_MB"}


def test_unserialisable_arguments_raise_without_losing_the_worker() -> None:
    async def scenario() -> None:
        async with started(fake_pool(1)) as pool:
            with pytest.raises(ArgumentsNotEncodable):  # a TypeError, nothing else
                await job(pool, "echo", {1, 2})  # a set is not JSON
            assert (await job(pool, "echo", [1, 2])).result == [1, 2]

    arun(scenario)


def test_concurrent_close_calls_all_wait_for_the_workers_to_die() -> None:
    async def scenario() -> None:
        pool = fake_pool(2)
        await pool.start()
        pids = pool.worker_pids
        await asyncio.gather(pool.close(), pool.close(), pool.close())
        assert not any(alive(pid) for pid in pids)

    arun(scenario)


def test_run_before_start_is_an_error() -> None:
    async def scenario() -> None:
        with pytest.raises(RuntimeError):
            await job(fake_pool(1), "echo")

    arun(scenario)


# --------------------------------------------------------------------------- real worker

real = pytest.mark.skipif(
    not REAL_WORKER.exists(), reason="wtpy/sandbox/_worker.py not written yet"
)

SAMPLE_HOOK = """
def hook(client, scope, audience, context, cb):
    access_token = {"scope": scope + ["extra"]}
    access_token["https://foo.com/claim"] = "bar"
    cb(None, {"accessToken": access_token})
"""


async def real_job(pool: WorkerPool, code: str, timeout: float = 10.0) -> JobResult:
    return await pool.run(
        key=hashlib.sha256(code.encode()).hexdigest(),
        code=code,
        filename="<webtask default/test>",
        args={"client": {"id": "c"}, "scope": ["a"], "audience": "x", "context": {"webtask": {}}},
        order=["client", "scope", "audience", "context"],
        timeout=timeout,
    )


@real
def test_real_worker_runs_a_sample_hook() -> None:
    async def scenario() -> None:
        async with started(WorkerPool(1)) as pool:
            for _ in range(3):  # compiled once, then cached by key
                result = await real_job(pool, SAMPLE_HOOK)
                assert result.outcome == "success", result
                assert result.result == {
                    "accessToken": {"scope": ["a", "extra"], "https://foo.com/claim": "bar"}
                }

    arun(scenario)


@real
def test_real_worker_infinite_loop_times_out_and_the_pool_keeps_serving() -> None:
    async def scenario() -> None:
        async with started(WorkerPool(1)) as pool:
            began = time.monotonic()
            result = await real_job(
                pool,
                "def hook(client, scope, audience, context, cb):\n    while True: pass\n",
                timeout=0.5,
            )
            assert time.monotonic() - began < 10
            assert result.outcome == "timeout", result
            assert result.error is not None
            assert result.error["message"] == "Script execution timed out after 0.5 seconds"
            again = await real_job(pool, SAMPLE_HOOK)
            assert again.outcome == "success", again

    arun(scenario)


@real
def test_real_worker_cpu_limit_kills_and_the_pool_replaces_it() -> None:
    async def scenario() -> None:
        async with started(WorkerPool(1)) as pool:
            [pid] = pool.worker_pids
            spin = "def hook(client, scope, audience, context, cb):\n    while True: pass\n"
            began = time.monotonic()
            result = await pool.run(
                key=hashlib.sha256(spin.encode()).hexdigest(),
                code=spin,
                filename="<webtask default/test>",
                args={"client": {}, "scope": [], "audience": "x", "context": {}},
                order=["client", "scope", "audience", "context"],
                timeout=30,
                cpu_seconds=1,
            )
            assert time.monotonic() - began < 20
            assert result.outcome == "killed", result
            assert result.error is not None and result.error["name"] == "WorkerKilled"
            again = await real_job(pool, SAMPLE_HOOK)
            assert again.outcome == "success", again
            assert pool.worker_pids != [pid]

    arun(scenario)

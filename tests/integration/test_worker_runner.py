"""Running jobs: unknown types and bad payloads fail the job; heavy work runs in the process pool, light work inline."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from jobqueue.worker import Worker
from jobqueue.worker.context import JobContext
from jobqueue.worker.runner import UNKNOWN_TYPE, HandlerError, Result, Runner
from tests.support import flaky_jobs
from tests.support.processes import alive
from worker_svc import builtins
from worker_svc.builtins import INLINE_FIBONACCI_N, MAX_FIBONACCI_N, decimal, fibonacci


@pytest.fixture
async def runner() -> AsyncIterator[Runner]:
    runner = Runner(builtins.worker.types, processes=1)
    yield runner
    await runner.close()


async def test_unknown_type_fails_the_job(runner: Runner) -> None:
    assert await runner.run("no_such_type", "x") == Result(False, UNKNOWN_TYPE)


@pytest.mark.parametrize(
    ("job_type", "payload", "error"),
    [
        ("reverse_string", 5.0, "payload: 5 is not of type 'string'"),
        ("uppercase_text", None, "payload: None is not of type 'string'"),
        ("fibonacci_calc", "10", "payload: '10' is not of type 'integer'"),
        ("fibonacci_calc", 2.5, "payload: 2.5 is not of type 'integer'"),
        ("fibonacci_calc", float("nan"), "payload: nan is not of type 'integer'"),
        ("fibonacci_calc", -1.0, "payload: -1 is less than the minimum of 0"),
        ("fibonacci_calc", 100_001.0, "payload: 100001 is greater than the maximum of 100000"),
    ],
)
async def test_payload_that_breaks_its_schema_fails_the_job(
    runner: Runner, job_type: str, payload: object, error: str
) -> None:
    assert await runner.run(job_type, payload) == Result(False, error)


async def test_string_jobs(runner: Runner) -> None:
    assert await runner.run("reverse_string", "hello world") == Result(True, "dlrow olleh")
    assert await runner.run("uppercase_text", "hello world") == Result(True, "HELLO WORLD")


async def test_fibonacci_runs_in_the_pool(runner: Runner) -> None:
    limit = sys.get_int_max_str_digits()
    await runner.start()
    assert await runner.run("fibonacci_calc", 10.0) == Result(True, "55")
    largest = await runner.run("fibonacci_calc", float(MAX_FIBONACCI_N))
    assert largest.ok
    assert len(largest.value) == 20_899
    assert largest.value.startswith("25974069347221724166")
    assert sys.get_int_max_str_digits() == limit


async def test_a_dead_pool_process_is_replaced(runner: Runner) -> None:
    [pid] = await runner.pids()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(BrokenProcessPool):
        await runner.run("fibonacci_calc", 5000.0)
    assert (await runner.run("fibonacci_calc", 5000.0)).value.startswith("38789684543883256337")
    assert await runner.pids() != [pid]


async def test_a_small_fibonacci_is_computed_without_the_pool(runner: Runner) -> None:
    await runner.close()  # a pool that takes no more work: only inline jobs can still run
    assert await runner.run("fibonacci_calc", float(INLINE_FIBONACCI_N)) == Result(
        True, decimal(fibonacci(INLINE_FIBONACCI_N))
    )
    with pytest.raises(RuntimeError, match="closed"):
        await runner.run("fibonacci_calc", float(INLINE_FIBONACCI_N + 1))


async def test_a_pool_job_waits_its_turn_for_a_free_process_and_an_inline_job_does_not(runner: Runner) -> None:
    big = float(INLINE_FIBONACCI_N + 1)
    entered: list[str] = []

    async def take_turn(name: str, job_type: str, payload: object, hold: asyncio.Event) -> None:
        async with runner.turn(job_type, payload):
            entered.append(name)
            await hold.wait()

    first_done, second_done = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(take_turn("first pool job", "fibonacci_calc", big, first_done))
    second = asyncio.create_task(take_turn("second pool job", "fibonacci_calc", big, second_done))
    inline_done = asyncio.Event()
    inline_done.set()
    for job_type, payload in [("fibonacci_calc", 10.0), ("reverse_string", "x"), ("fibonacci_calc", "bad"), ("?", 1)]:
        await asyncio.wait_for(take_turn(f"{job_type} {payload!r}", job_type, payload, inline_done), 1)
    await asyncio.sleep(0.05)
    assert entered[0] == "first pool job"
    assert "second pool job" not in entered  # the one process is taken

    first_done.set()
    await first
    second_done.set()
    await asyncio.wait_for(second, 1)
    assert entered[-1] == "second pool job"


@pytest.fixture
async def sleepy() -> AsyncIterator[Runner]:
    """A runner of one handler process, in a worker that loaded the test job types (``sleeps``)."""
    runner = Runner(flaky_jobs.worker.types, processes=1)
    await runner.start()
    yield runner
    await runner.close()


@pytest.mark.parametrize("stop", ["timeout", "cancel"])
async def test_a_stopped_pool_job_is_killed_with_its_process_and_the_next_job_runs_at_once(
    sleepy: Runner, stop: str
) -> None:
    [pid] = await sleepy.pids()
    async with sleepy.turn("sleeps", 600.0) as process:
        running = asyncio.ensure_future(sleepy.run("sleeps", 600.0, process))
        await asyncio.sleep(0.3)  # the handler is asleep in the process
        if stop == "timeout":
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(running, 0.1)
        else:
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
    # SIGKILL takes effect asynchronously: on a busy machine the process may
    # take a moment to die after the call returned.
    for _ in range(100):
        if not alive(pid):
            break
        await asyncio.sleep(0.05)
    assert not alive(pid)
    # The one handler process is free again at once, not in ten minutes.
    async with sleepy.turn("fibonacci_calc", 5000.0) as process:
        result = await asyncio.wait_for(sleepy.run("fibonacci_calc", 5000.0, process), 30)
    assert result.value.startswith("38789684543883256337")
    [successor] = await sleepy.pids()
    assert successor != pid
    assert alive(successor)


async def test_a_pool_job_run_without_its_turn_takes_the_process_for_its_run(sleepy: Runner) -> None:
    first = asyncio.ensure_future(sleepy.run("sleeps", 2.0))
    await asyncio.sleep(0.05)
    entered = asyncio.Event()

    async def next_pool_job() -> None:
        async with sleepy.turn("sleeps", 0.0):
            entered.set()

    waiting = asyncio.ensure_future(next_pool_job())
    await asyncio.sleep(0.3)
    assert not entered.is_set(), "the one handler process is busy: the next pool job must wait its turn"
    assert await asyncio.wait_for(first, 30) == Result(True, "slept 2 s")
    await asyncio.wait_for(waiting, 5)
    assert entered.is_set()


async def test_a_handler_exception_in_a_handler_process_becomes_its_description(sleepy: Runner) -> None:
    [pid] = await sleepy.pids()
    with pytest.raises(HandlerError) as failed:
        await sleepy.run("always_fails", "x")
    assert str(failed.value) == flaky_jobs.ERROR  # what the job's owner reads, and the e2e tests expect
    assert await sleepy.pids() == [pid]  # a handler's exception is not a crash


ODD_JOBS = """
from jobqueue.worker import JobContext, PermanentError, Worker

worker = Worker()


class Odd(Exception):
    def __init__(self, a: int, b: int) -> None:  # unpickling calls Odd("1/2"): a TypeError
        super().__init__(f"{a}/{b}")


@worker.job_type("odd", schema={"type": "string"})
def odd(value: str) -> str:
    raise Odd(1, 2)


@worker.job_type("numbered", schema={"type": "string"})
def numbered(value: str, job: JobContext) -> dict:
    return {"value": value, "job": job.job_id, "attempt": job.attempt}


@worker.job_type("refused", schema={"type": "string"})
def refused(value: str) -> str:
    raise PermanentError(f"{value} will never do")
"""


@pytest.fixture
async def odd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Runner]:
    """A runner of one handler process for a module of odd handlers (one raising an exception that cannot unpickle)."""
    name = f"odd_jobs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(ODD_JOBS)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned handler processes inherit sys.path
    worker = importlib.import_module(name).worker
    assert isinstance(worker, Worker)
    runner = Runner(worker.types, processes=1)
    await runner.start()
    yield runner
    await runner.close()


async def test_an_exception_that_cannot_cross_processes_is_still_described_and_breaks_nothing(odd: Runner) -> None:
    # Sent back as it is, Odd would fail to unpickle in the worker and break the pool (BrokenProcessPool).
    [pid] = await odd.pids()
    with pytest.raises(HandlerError, match=r"^Odd: 1/2\n  odd_jobs_\w+\.py:14 in odd$"):
        await odd.run("odd", "x")
    assert await odd.pids() == [pid]


async def test_a_handler_in_a_handler_process_is_given_its_job_and_may_return_any_json_value(odd: Runner) -> None:
    result = await odd.run("numbered", "x", job=JobContext("job-1", "numbered", 7))
    assert result == Result(True, {"value": "x", "job": "job-1", "attempt": 7})


async def test_a_permanent_error_in_a_handler_process_fails_the_job_for_good(odd: Runner) -> None:
    [pid] = await odd.pids()
    assert await odd.run("refused", "x") == Result(False, "PermanentError: x will never do")
    assert await odd.pids() == [pid]

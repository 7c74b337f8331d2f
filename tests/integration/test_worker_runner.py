"""Running jobs: unknown types and bad payloads fail the job; heavy work runs in the process pool, light work inline."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from common.job_types import MAX_FIBONACCI_N
from tests.support import flaky_jobs
from tests.support.processes import alive
from worker_svc.handlers import INLINE_FIBONACCI_N, decimal, fibonacci, load_job_types
from worker_svc.runner import UNKNOWN_TYPE, HandlerError, Result, Runner

FLAKY = "tests.support.flaky_jobs"


@pytest.fixture
async def runner() -> AsyncIterator[Runner]:
    runner = Runner(load_job_types([]), processes=1)
    yield runner
    await runner.close()


async def test_unknown_type_fails_the_job(runner: Runner) -> None:
    assert await runner.run("no_such_type", "x") == Result(False, UNKNOWN_TYPE)


@pytest.mark.parametrize(
    ("job_type", "payload", "error"),
    [
        ("reverse_string", 5.0, "payload: must be a string"),
        ("uppercase_text", None, "payload: must be a string"),
        ("fibonacci_calc", "10", "payload: must be a whole number"),
        ("fibonacci_calc", 2.5, "payload: must be a whole number"),
        ("fibonacci_calc", float("nan"), "payload: must be a whole number"),
        ("fibonacci_calc", -1.0, "payload: must be between 0 and 100000"),
        ("fibonacci_calc", 100_001.0, "payload: must be between 0 and 100000"),
    ],
)
async def test_payload_that_breaks_its_rule_fails_the_job(
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
    assert len(largest.text) == 20_899
    assert largest.text.startswith("25974069347221724166")
    assert sys.get_int_max_str_digits() == limit


async def test_a_dead_pool_process_is_replaced(runner: Runner) -> None:
    [pid] = await runner.pids()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(BrokenProcessPool):
        await runner.run("fibonacci_calc", 5000.0)
    assert (await runner.run("fibonacci_calc", 5000.0)).text.startswith("38789684543883256337")
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
    runner = Runner(load_job_types([FLAKY]), processes=1)
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
    assert result.text.startswith("38789684543883256337")
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
from common.job_types import JobType, text


class Odd(Exception):
    def __init__(self, a: int, b: int) -> None:  # unpickling calls Odd("1/2"): a TypeError
        super().__init__(f"{a}/{b}")


def odd(value: str) -> str:
    raise Odd(1, 2)


def numbered(value: str, attempt: int) -> str:
    return f"{value} #{attempt}"


JOB_TYPES = [
    JobType("odd", text, "", handler=odd, cpu_bound=True, schema={}),
    JobType("numbered", text, "", handler=numbered, cpu_bound=True, takes_attempt=True, schema={}),
]
"""


@pytest.fixture
async def odd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Runner]:
    """A runner of one handler process whose module has a handler raising an exception that cannot be unpickled."""
    name = f"odd_jobs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(ODD_JOBS)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned handler processes inherit sys.path
    runner = Runner(load_job_types([name]), processes=1)
    await runner.start()
    yield runner
    await runner.close()


async def test_an_exception_that_cannot_cross_processes_is_still_described_and_breaks_nothing(odd: Runner) -> None:
    # Sent back as it is, Odd would fail to unpickle in the worker and break the pool (BrokenProcessPool).
    [pid] = await odd.pids()
    with pytest.raises(HandlerError, match=r"^Odd: 1/2\n  odd_jobs_\w+\.py:11 in odd$"):
        await odd.run("odd", "x")
    assert await odd.pids() == [pid]


async def test_a_handler_in_a_handler_process_is_given_its_attempt(odd: Runner) -> None:
    assert await odd.run("numbered", "x", attempt=7) == Result(True, "x #7")

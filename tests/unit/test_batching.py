"""Group commit (jobqueue.runtime.batching.Coalescer): concurrent calls share batches, and each gets its own answer."""

from __future__ import annotations

import asyncio

import pytest

from jobqueue.runtime.batching import Coalescer


class Recorder:
    """A batch runner that doubles numbers, refuses 13 alone, fails whole batches holding 99, and records batches."""

    def __init__(self, delay: float = 0.01) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay

    async def run(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        await asyncio.sleep(self.delay)
        if 99 in items:
            raise ConnectionError("database unreachable")
        return [ValueError(f"{i} refused") if i == 13 else i * 2 for i in items]


async def test_a_lone_call_runs_at_once_in_a_batch_of_its_own() -> None:
    recorder = Recorder()
    assert await Coalescer(recorder.run, max_batch=10, max_concurrent=1).submit(4) == 8
    assert recorder.batches == [[4]]


async def test_calls_made_while_a_batch_runs_leave_together_in_the_next() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.run, max_batch=100, max_concurrent=1)
    first = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0.001)  # the first batch is in flight now
    results = await asyncio.gather(first, *(coalescer.submit(i) for i in range(20, 70)))
    assert results == [0, *(i * 2 for i in range(20, 70))]
    assert recorder.batches == [[0], list(range(20, 70))]


async def test_batches_are_cut_at_max_batch_and_at_most_max_concurrent_run_at_once() -> None:
    running, most = 0, 0

    async def run(items: list[int]) -> list[int]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        assert len(items) <= 7
        return items

    coalescer = Coalescer(run, max_batch=7, max_concurrent=2)
    assert await asyncio.gather(*(coalescer.submit(i) for i in range(40))) == list(range(40))
    assert most == 2


async def test_an_item_refused_alone_fails_only_its_own_call() -> None:
    coalescer = Coalescer(Recorder().run, max_batch=10, max_concurrent=1)
    results = await asyncio.gather(*(coalescer.submit(i) for i in (12, 13, 14)), return_exceptions=True)
    assert (results[0], results[2]) == (24, 28)
    assert isinstance(results[1], ValueError)


async def test_a_failed_batch_fails_every_call_in_it_and_the_next_batch_runs() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.run, max_batch=10, max_concurrent=1)
    results = await asyncio.gather(*(coalescer.submit(i) for i in (1, 99, 2)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await coalescer.submit(3) == 6


async def test_a_caller_that_stops_waiting_does_not_disturb_the_others() -> None:
    coalescer = Coalescer(Recorder(delay=0.05).run, max_batch=10, max_concurrent=1)
    impatient = asyncio.create_task(coalescer.submit(1))
    patient = asyncio.create_task(coalescer.submit(2))
    await asyncio.sleep(0.01)
    impatient.cancel()
    assert await patient == 4
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_a_caller_submitting_again_as_soon_as_it_is_answered_is_served() -> None:
    """The flusher that answered it is finishing in that very loop turn; the new item must still run.

    It once waited for ever: the finished flusher left the set of running ones only a turn later,
    so the new submit saw the set full and started none (CI hung here for 300 s under load).
    """
    recorder = Recorder()
    coalescer = Coalescer(recorder.run, max_batch=10, max_concurrent=1)
    async with asyncio.timeout(5):
        for i in range(20, 40):
            assert await coalescer.submit(i) == i * 2
    assert recorder.batches == [[i] for i in range(20, 40)]

"""The job service's gauges: jobs by status and queue counts, refreshed in rounds, never stale."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import asyncpg
import prometheus_client
import pytest

from job_svc import metrics
from job_svc.errors import BrokerUnavailable
from job_svc.model import Status
from job_svc.publisher import QueueStats
from job_svc.settings import Settings
from jobqueue.runtime.settings import SettingsError, load


class FakeCounts:
    """The store's count_by_status over a fixed table of statuses; ``down`` makes it fail as a lost database."""

    def __init__(self, counts: Mapping[Status, int]) -> None:
        self.counts = dict(counts)
        self.asked: list[bool] = []
        self.down = False

    async def count_by_status(self, *, finished: bool) -> Mapping[Status, int]:
        self.asked.append(finished)
        if self.down:
            raise ConnectionRefusedError("database down")
        # As the real store does: statuses with no job are absent.
        wanted = Status if finished else (Status.QUEUED, Status.RUNNING, Status.FAILED)
        return {status: n for status, n in self.counts.items() if status in wanted and n}


class FakeQueues:
    """Each type's queue, and the dead letters', with the counts ``stats`` gives them."""

    def __init__(self, stats: Sequence[QueueStats], job_types: Sequence[str] = ()) -> None:
        self.stats = {stat.queue: stat for stat in stats}
        self.job_types = list(job_types)
        self.down = False

    async def queue_stats(self, job_types: Iterable[str]) -> Sequence[QueueStats]:
        if self.down:
            raise BrokerUnavailable("not connected to RabbitMQ")
        names = [f"job_queue.type.{name}" for name in job_types] + ["job_queue.dead"]
        return [self.stats.get(name, QueueStats(name, 0, 0)) for name in names]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def cleared_gauges() -> None:
    for gauge in (metrics.JOBS, metrics.QUEUE_READY, metrics.QUEUE_CONSUMERS):
        gauge.clear()


def jobs_gauge() -> dict[str, float | None]:
    return {
        status.value: prometheus_client.REGISTRY.get_sample_value("jobqueue_jobs", {"status": status.value})
        for status in Status
    }


def queue_gauge(name: str, queue: str) -> float | None:
    return prometheus_client.REGISTRY.get_sample_value(name, {"queue": queue})


def gauges(store: FakeCounts, queues: FakeQueues, clock: Clock) -> metrics.Gauges:
    return metrics.Gauges(store, queues, lambda: queues.job_types, every=15, finished_every=300, clock=clock)


async def test_the_first_round_counts_every_status_and_shows_zero_for_those_with_no_job() -> None:
    store = FakeCounts({Status.QUEUED: 4, Status.COMPLETED: 7})
    await gauges(store, FakeQueues([]), Clock()).refresh()
    assert store.asked == [True]
    assert jobs_gauge() == {"QUEUED": 4, "RUNNING": 0, "COMPLETED": 7, "FAILED": 0, "CANCELLED": 0}


async def test_finished_jobs_are_counted_again_only_every_finished_every_seconds() -> None:
    store, clock = FakeCounts({Status.QUEUED: 4, Status.COMPLETED: 7}), Clock()
    refresher = gauges(store, FakeQueues([]), clock)
    await refresher.refresh()
    store.counts = {Status.RUNNING: 2, Status.COMPLETED: 9, Status.CANCELLED: 1}
    clock.now += 299
    await refresher.refresh()
    # The cheap round sets what it counted (QUEUED back to 0) and keeps the last full count of the rest.
    assert store.asked == [True, False]
    assert jobs_gauge() == {"QUEUED": 0, "RUNNING": 2, "COMPLETED": 7, "FAILED": 0, "CANCELLED": 0}
    clock.now += 1
    await refresher.refresh()
    assert store.asked == [True, False, True]
    assert jobs_gauge() == {"QUEUED": 0, "RUNNING": 2, "COMPLETED": 9, "FAILED": 0, "CANCELLED": 1}


async def test_while_the_database_is_down_the_job_gauges_are_gone_then_fully_counted_again() -> None:
    store, clock = FakeCounts({Status.QUEUED: 4, Status.COMPLETED: 7}), Clock()
    refresher = gauges(store, FakeQueues([]), clock)
    await refresher.refresh()
    store.down = True
    clock.now += 15
    await refresher.refresh()
    assert set(jobs_gauge().values()) == {None}
    store.down = False
    clock.now += 15
    await refresher.refresh()
    # Well before finished_every: the cleared COMPLETED and CANCELLED needed a full count at once.
    assert store.asked == [True, False, True]
    assert jobs_gauge()["COMPLETED"] == 7


async def test_queue_gauges_follow_the_broker_and_are_gone_while_it_is_unreachable() -> None:
    queues = FakeQueues(
        [QueueStats("job_queue.type.slow", 5, 2), QueueStats("job_queue.dead", 1, 0)], job_types=["fast", "slow"]
    )
    refresher = gauges(FakeCounts({}), queues, Clock())
    await refresher.refresh()
    assert queue_gauge("jobqueue_queue_messages_ready", "job_queue.type.slow") == 5
    assert queue_gauge("jobqueue_queue_consumers", "job_queue.type.slow") == 2
    assert queue_gauge("jobqueue_queue_messages_ready", "job_queue.type.fast") == 0
    assert queue_gauge("jobqueue_queue_messages_ready", "job_queue.dead") == 1
    assert queue_gauge("jobqueue_queue_consumers", "job_queue.dead") == 0
    queues.down = True
    await refresher.refresh()
    assert queue_gauge("jobqueue_queue_messages_ready", "job_queue.type.slow") is None
    assert queue_gauge("jobqueue_queue_consumers", "job_queue.type.slow") is None
    # The database's gauges do not depend on the broker.
    assert jobs_gauge()["QUEUED"] == 0


async def test_a_queue_no_longer_counted_loses_its_gauges_and_the_others_keep_theirs() -> None:
    queues = FakeQueues([QueueStats("job_queue.type.slow", 5, 2)], job_types=["fast", "slow"])
    refresher = gauges(FakeCounts({}), queues, Clock())
    await refresher.refresh()
    queues.job_types = ["slow"]
    await refresher.refresh()
    assert queue_gauge("jobqueue_queue_messages_ready", "job_queue.type.fast") is None
    assert queue_gauge("jobqueue_queue_consumers", "job_queue.type.fast") is None
    assert queue_gauge("jobqueue_queue_messages_ready", "job_queue.type.slow") == 5


async def test_a_database_that_refuses_the_count_empties_the_job_gauges_and_stops_nothing() -> None:
    class Refusing(FakeCounts):
        async def count_by_status(self, *, finished: bool) -> Mapping[Status, int]:
            if finished:
                raise asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout")
            return await super().count_by_status(finished=finished)

    store, clock = Refusing({Status.QUEUED: 3}), Clock()
    refresher = gauges(store, FakeQueues([]), clock)
    await refresher.refresh()  # the whole-table count times out: no exception escapes
    assert set(jobs_gauge().values()) == {None}


async def test_an_unexpected_error_is_not_swallowed() -> None:
    class Broken(FakeCounts):
        async def count_by_status(self, *, finished: bool) -> Mapping[Status, int]:
            raise KeyError("a bug")

    # The supervisor then stops the service loudly, instead of gauges silently frozen.
    with pytest.raises(KeyError):
        await gauges(Broken({}), FakeQueues([]), Clock()).refresh()


def test_the_refresh_intervals_default_to_the_documented_ones_and_must_be_positive() -> None:
    settings = load(Settings, {})
    assert (settings.job_count_seconds, settings.finished_count_seconds) == (15.0, 300.0)
    assert load(Settings, {"JOB_COUNT_SECONDS": "0.2"}).job_count_seconds == 0.2
    for name in ("JOB_COUNT_SECONDS", "FINISHED_COUNT_SECONDS"):
        with pytest.raises(SettingsError, match=name):
            load(Settings, {name: "0"})

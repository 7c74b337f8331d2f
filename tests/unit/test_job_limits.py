"""Per-user job limits: rates charged per job before the store, the HIGH bucket, refunded repeats, the cap, settings."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from common.rates import Rate, RateLimiter
from job_svc.errors import TooManyHighPriorityJobs, TooManyJobs, TooManyUnfinishedJobs
from job_svc.jobs import Jobs
from job_svc.limits import UNFINISHED_RETRY_SECONDS, JobLimits
from job_svc.model import NewJob, Priority, Status
from job_svc.settings import Settings
from jobqueue.runtime.errors import InvalidArgument
from jobqueue.runtime.settings import SettingsError, load
from tests.support.fake_job_service import FakePublisher, FakeRelay, FakeStore, type_registry

ALICE, BOB = uuid.uuid4(), uuid.uuid4()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def service(limits: JobLimits, store: FakeStore | None = None) -> tuple[Jobs, FakeStore]:
    store = store or FakeStore()
    return Jobs(store, FakeRelay(), FakePublisher(), type_registry(), limits), store


async def job(
    jobs: Jobs, owner: uuid.UUID = ALICE, *, high: bool = False, request_id: uuid.UUID | None = None
) -> NewJob:
    priority = Priority.HIGH if high else Priority.NORMAL
    return await jobs.check_new(owner, "reverse_string", "abc", priority=priority, request_id=request_id)


def test_a_bucket_charges_a_cost_and_says_when_it_will_have_it() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(10, 1, burst=100), clock=clock)
    assert limiter.take("a", 100) == 0.0
    assert limiter.wait("a", 5) == pytest.approx(0.5)
    assert limiter.take("a", 5) == pytest.approx(0.5)  # refused, nothing taken
    clock.now += 0.5
    assert limiter.wait("a") == 0.0  # wait() takes nothing
    assert limiter.take("a", 5) == 0.0
    limiter.give("a", 1000)
    assert limiter.take("a", 100) == 0.0  # given back up to the burst, not beyond
    assert limiter.take("a", 1) > 0


async def test_a_flood_is_refused_before_the_store_with_a_retry_delay_and_other_users_go_on() -> None:
    clock = Clock()
    jobs, store = service(JobLimits(rate=Rate(10, 1, burst=20), clock=clock))
    await jobs.create_batch([await job(jobs) for _ in range(15)])
    creates = len(store.creates)
    with pytest.raises(TooManyJobs) as caught:
        await jobs.create_batch([await job(jobs) for _ in range(10)])  # 5 tokens left: the whole call is refused
    assert caught.value.retry_after == pytest.approx(0.5)
    assert len(store.creates) == creates  # refused before the store
    for _ in range(5):
        await jobs.create(await job(jobs))
    with pytest.raises(TooManyJobs):
        await jobs.create(await job(jobs))
    await jobs.create(await job(jobs, BOB))  # another user's bucket is full
    clock.now += 0.1
    await jobs.create(await job(jobs))  # a token came back
    assert sum(1 for row in store.rows.values() if row.job.owner_id == ALICE) == 21


async def test_high_priority_jobs_have_a_smaller_bucket_of_their_own() -> None:
    clock = Clock()
    jobs, _ = service(JobLimits(rate=Rate(100, 1, burst=1000), high_rate=Rate(1, 1, burst=3), clock=clock))
    await jobs.create_batch([await job(jobs, high=True) for _ in range(3)])
    with pytest.raises(TooManyHighPriorityJobs) as caught:
        await jobs.create(await job(jobs, high=True))
    assert caught.value.retry_after == pytest.approx(1.0)
    await jobs.create_batch([await job(jobs) for _ in range(50)])  # NORMAL jobs are not held back
    with pytest.raises(InvalidArgument, match="at most 3 HIGH priority jobs"):
        await jobs.create_batch([await job(jobs, high=True) for _ in range(4)])  # could never pass: not a retry later
    with pytest.raises(InvalidArgument, match="at most 1000 jobs"):
        await jobs.create_batch([await job(jobs) for _ in range(1001)])


async def test_a_repeated_request_id_is_refunded_once() -> None:
    clock = Clock()
    jobs, store = service(JobLimits(rate=Rate(1, 60, burst=2), clock=clock))
    key = uuid.uuid4()
    first = await jobs.create(await job(jobs, request_id=key))
    again = await jobs.create(await job(jobs, request_id=key))  # a retry after a lost reply: given back
    assert again.id == first.id
    await jobs.create(await job(jobs))  # so one token is still there
    with pytest.raises(TooManyJobs):
        await jobs.create(await job(jobs, request_id=key))  # no token: refused before the store finds it a repeat
    clock.now += 60
    await jobs.create(await job(jobs, request_id=key))  # a second repeat is charged, not refunded
    with pytest.raises(TooManyJobs):
        await jobs.create(await job(jobs))
    assert len(store.rows) == 2


async def test_the_cap_on_unfinished_jobs_refuses_with_a_retry_delay_and_counts_only_unfinished() -> None:
    jobs, store = service(JobLimits(max_unfinished=3))
    created = await jobs.create_batch([await job(jobs) for _ in range(2)])
    with pytest.raises(TooManyUnfinishedJobs) as caught:
        await jobs.create_batch([await job(jobs) for _ in range(2)])  # one would fit: a batch is all or nothing
    assert caught.value.retry_after == UNFINISHED_RETRY_SECONDS
    outcomes = await asyncio.gather(*[jobs.create(await job(jobs)) for _ in range(3)], return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["Job", "TooManyUnfinishedJobs", "TooManyUnfinishedJobs"]
    await jobs.create(await job(jobs, BOB))
    await jobs.cancel(ALICE, created[0].id)  # a final job no longer counts
    await jobs.create(await job(jobs))
    unfinished = [r for r in store.rows.values() if r.job.owner_id == ALICE and not r.job.status.final]
    assert len(unfinished) == 3
    assert all(r.job.status is Status.QUEUED for r in unfinished)


def test_the_defaults_are_on_and_every_limit_is_a_setting() -> None:
    limits = load(Settings, {}).job_limits()
    assert limits.rate == Rate(200, 1, burst=4000)
    assert limits.high_rate == Rate(10, 1, burst=100)
    assert limits.max_unfinished == 10_000
    # Room for one other replica by default: the margin is one replica's burst plus its rate since the read.
    assert limits.margin(1.0) == 4000 + 200
    assert load(Settings, {"JOB_SERVICE_REPLICAS": "4"}).job_limits().margin(1.0) == 3 * (4000 + 200)
    assert load(Settings, {"JOB_SERVICE_REPLICAS": "1"}).job_limits().margin(1.0) == 0
    off = load(
        Settings,
        {
            "JOBS_PER_SECOND_PER_USER": "0",
            "HIGH_PRIORITY_JOBS_PER_SECOND_PER_USER": "0",
            "MAX_UNFINISHED_JOBS_PER_USER": "0",
        },
    ).job_limits()
    assert (off.rate, off.high_rate, off.max_unfinished) == (None, None, 0)


@pytest.mark.parametrize(
    "environ",
    [
        {"JOBS_PER_SECOND_PER_USER": "-1"},
        {"MAX_UNFINISHED_JOBS_PER_USER": "-5"},
        {"JOB_BURST_PER_USER": "999"},  # a full BatchCreateJobs could never pass
        {"HIGH_PRIORITY_BURST_PER_USER": "0"},
        {"JOB_SERVICE_REPLICAS": "0"},
    ],
)
def test_limits_that_make_no_sense_stop_the_start(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        load(Settings, environ)

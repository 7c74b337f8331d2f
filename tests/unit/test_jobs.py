"""The job service's use cases: create (group commit), list pages, cancel, re-run, on in-memory fakes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from job_svc.auth import Caller
from job_svc.errors import BrokerUnavailable, JobFinished, JobNotFound, NotFailed, StatsTooCostly
from job_svc.jobs import Jobs
from job_svc.model import Job, NewJob, Status
from job_svc.rules import RERUN_BATCH
from job_svc.types import JobTypeRegistry
from jobqueue.runtime.errors import InvalidArgument
from tests.support import flaky_jobs
from tests.support.fake_job_service import FakePublisher, FakeRelay, FakeStore, declared, stored_job, type_registry

ALICE, BOB = uuid.uuid4(), uuid.uuid4()


Service = tuple[Jobs, FakeStore, FakeRelay, FakePublisher]


def service(store: FakeStore | None = None, types: JobTypeRegistry | None = None) -> Service:
    """Jobs on fakes: the store (a new one unless given), the relay and the publisher, and the built-in types."""
    store = store or FakeStore()
    relay, publisher = FakeRelay(), FakePublisher()
    return Jobs(store, relay, publisher, types or type_registry()), store, relay, publisher


def user(owner: uuid.UUID, *, operator: bool = False) -> Caller:
    return Caller(id=owner, operator=operator)


# Create


async def test_concurrent_creates_share_one_transaction() -> None:
    jobs, store, relay, _ = service()
    created = await asyncio.gather(
        *[jobs.create(await jobs.check_new(ALICE, "reverse_string", f"t{i}")) for i in range(5)]
    )
    assert [job.payload for job in created] == [f"t{i}" for i in range(5)]
    assert store.creates == [5]
    assert len(store.outbox) == 5
    assert relay.wakes >= 1


async def test_a_row_the_database_refuses_fails_only_its_own_call() -> None:
    def refuse(job: NewJob) -> BaseException | None:
        return asyncpg.exceptions.CheckViolationError("bad row") if job.payload == "bad" else None

    jobs, store, _, _ = service(FakeStore(refuse=refuse))
    payloads = ["a", "bad", "b"]
    outcomes = await asyncio.gather(
        *[jobs.create(await jobs.check_new(ALICE, "reverse_string", p)) for p in payloads], return_exceptions=True
    )
    good_a, bad, good_b = outcomes
    assert isinstance(bad, asyncpg.exceptions.CheckViolationError)
    assert isinstance(good_a, Job)
    assert isinstance(good_b, Job)
    assert (good_a.payload, good_b.payload) == ("a", "b")
    # The shared statement failed, then each row was tried in a transaction of its own.
    assert store.creates == [3, 1, 1, 1]
    assert sorted(job.payload for job in (await store.get_many(list(store.rows)))) == ["a", "b"]


async def test_a_transient_database_error_fails_every_call_of_the_batch() -> None:
    lost = asyncpg.PostgresConnectionError("connection lost")  # a PostgresError, but not the row's fault
    jobs, store, _, _ = service(FakeStore(refuse=lambda _job: lost))
    outcomes = await asyncio.gather(
        *[jobs.create(await jobs.check_new(ALICE, "reverse_string", p)) for p in "ab"], return_exceptions=True
    )
    assert outcomes == [lost, lost]
    assert store.creates == [2], "a connection error is not retried row by row"


async def test_a_repeated_request_id_returns_the_first_job() -> None:
    jobs, store, _, _ = service()
    request_id = uuid.uuid4()
    first = await jobs.create(await jobs.check_new(ALICE, "reverse_string", "x", request_id=request_id))
    again = await jobs.create(await jobs.check_new(ALICE, "reverse_string", "y", request_id=request_id))
    assert again == first
    [batch_a, batch_b] = await jobs.create_batch(
        [await jobs.check_new(BOB, "reverse_string", p, request_id=request_id) for p in "ab"]
    )
    assert batch_a == batch_b
    assert batch_a.payload == "a"
    assert len(store.outbox) == 2


@pytest.mark.parametrize(
    ("job_type", "payload", "field", "message"),
    [
        ("no_such_type", "x", "type", "unknown job type 'no_such_type'; expected one of: fibonacci_calc, reverse"),
        ("reverse_string", None, "payload", "is required"),
        ("reverse_string", 5, "payload", "5 is not of type 'string'"),
        ("fibonacci_calc", -1, "payload", "-1 is less than the minimum of 0"),
        ("always_fails", "x", "type", "unknown job type 'always_fails'"),
    ],
)
async def test_check_new_refuses_what_the_registry_refuses(
    job_type: str, payload: Any, field: str, message: str
) -> None:
    jobs, *_ = service()
    with pytest.raises(InvalidArgument) as refused:
        await jobs.check_new(ALICE, job_type, payload)
    [violation] = refused.value.violations
    assert violation.field == field
    assert message in violation.description


async def test_check_new_knows_the_types_of_its_registry() -> None:
    jobs, *_ = service(types=type_registry(*flaky_jobs.worker.types.values()))
    assert (await jobs.check_new(ALICE, "always_fails", "x")).type == "always_fails"
    with pytest.raises(InvalidArgument, match="expected one of: always_fails, fibonacci_calc, reverse_string, sleeps"):
        await jobs.check_new(ALICE, "shout", "x")


async def test_declaring_types_makes_their_queues_and_waits_for_the_broker_to_do_so() -> None:
    jobs, _, _, publisher = service()
    always_fails = declared(flaky_jobs.worker.types["always_fails"])
    publisher.connected = False
    with pytest.raises(BrokerUnavailable):
        await jobs.declare_types([always_fails])
    assert publisher.queues == set()
    publisher.connected = True
    await jobs.declare_types([always_fails])
    assert publisher.queues == {"always_fails"}


# Listing


async def test_pages_of_a_listing_cover_every_job_once_newest_first() -> None:
    jobs, *_ = service()
    created = [await jobs.create(await jobs.check_new(ALICE, "reverse_string", f"t{i}")) for i in range(7)]
    # Jobs created in one transaction share created_at: the id breaks the tie.
    created += await jobs.create_batch([await jobs.check_new(ALICE, "reverse_string", f"b{i}") for i in range(3)])
    await jobs.create(await jobs.check_new(BOB, "reverse_string", "not alice's"))
    seen: list[Job] = []
    token = ""
    while True:
        page, token = await jobs.list(ALICE, 3, token, None, None)
        assert len(page) <= 3
        seen += page
        if not token:
            break
    assert len(seen) == len(created) == 10
    assert {job.id for job in seen} == {job.id for job in created}
    keys = [(job.created_at, job.id) for job in seen]
    assert keys == sorted(keys, reverse=True)


async def test_a_page_token_is_bound_to_its_filters() -> None:
    jobs, *_ = service()
    for i in range(3):
        await jobs.create(await jobs.check_new(ALICE, "reverse_string", f"t{i}"))
    _, token = await jobs.list(ALICE, 1, "", None, None)
    assert token
    for status, job_type in [(Status.QUEUED, None), (None, "reverse_string")]:
        with pytest.raises(InvalidArgument, match="page_token"):
            await jobs.list(ALICE, 1, token, status, job_type)
    page, _ = await jobs.list(ALICE, 1, token, None, None)
    assert len(page) == 1


async def test_list_refuses_an_unknown_type_and_a_bad_page_size() -> None:
    jobs, *_ = service()
    with pytest.raises(InvalidArgument) as refused:
        await jobs.list(ALICE, 501, "", None, "nope")
    assert [v.field for v in refused.value.violations] == ["page_size", "type"]


async def test_dead_jobs_are_listed_most_recently_failed_first_in_pages() -> None:
    store = FakeStore()
    dead = [
        store.add(stored_job(owner, status=Status.FAILED, attempts=3, finished_at=store.clock + timedelta(seconds=i)))
        for i, owner in enumerate([ALICE, BOB, ALICE])
    ]
    store.add(stored_job(ALICE, status=Status.COMPLETED, attempts=1))
    jobs, *_ = service(store)
    first, token = await jobs.list_dead(2, "", None)
    rest, last = await jobs.list_dead(2, token, None)
    assert [job.id for job in (*first, *rest)] == [job.id for job in reversed(dead)]
    assert last == ""
    with pytest.raises(InvalidArgument, match="page_token"):
        await jobs.list_dead(2, token, "reverse_string")


# Cancellation


async def test_cancelling_a_queued_job_announces_nothing() -> None:
    store = FakeStore()
    job = store.add(stored_job(ALICE))
    jobs, _, _, publisher = service(store)
    cancelled = await jobs.cancel(ALICE, job.id)
    assert (cancelled.status, cancelled.error) == (Status.CANCELLED, "cancelled by its owner")
    assert publisher.announced == []


async def test_cancelling_a_running_job_tells_the_workers() -> None:
    store = FakeStore()
    job = store.add(stored_job(ALICE, status=Status.RUNNING, attempts=1))
    jobs, _, _, publisher = service(store)
    assert (await jobs.cancel(ALICE, job.id)).status is Status.CANCELLED
    assert publisher.announced == [job.id]


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.CANCELLED])
async def test_cancelling_a_finished_job_is_refused(status: Status) -> None:
    store = FakeStore()
    job = store.add(stored_job(ALICE, status=status, attempts=1))
    jobs, _, _, publisher = service(store)
    with pytest.raises(JobFinished, match=f"is already {status.value}"):
        await jobs.cancel(ALICE, job.id)
    assert publisher.announced == []


async def test_cancelling_another_owners_job_is_not_found() -> None:
    store = FakeStore()
    job = store.add(stored_job(BOB, status=Status.RUNNING, attempts=1))
    jobs, _, _, publisher = service(store)
    with pytest.raises(JobNotFound):
        await jobs.cancel(ALICE, job.id)
    assert (await store.get(job.id) or job).status is Status.RUNNING
    assert publisher.announced == []


# Re-runs


async def test_an_owner_reruns_a_failed_job_with_more_attempts() -> None:
    store = FakeStore()
    job = store.add(stored_job(ALICE, status=Status.FAILED, attempts=3))
    jobs, _, relay, _ = service(store)
    rerun = await jobs.rerun(user(ALICE), job.id, 2)
    assert (rerun.status, rerun.attempts, rerun.max_attempts, rerun.finished_at) == (Status.QUEUED, 3, 5, None)
    assert [message.job_id for message in store.outbox] == [job.id]
    assert relay.wakes == 1


async def test_an_operator_reruns_anyones_failed_job_and_a_user_does_not() -> None:
    store = FakeStore()
    job = store.add(stored_job(BOB, status=Status.FAILED, attempts=3))
    jobs, *_ = service(store)
    with pytest.raises(JobNotFound):
        await jobs.rerun(user(ALICE), job.id, 0)
    rerun = await jobs.rerun(user(ALICE, operator=True), job.id, 0)
    assert (rerun.status, rerun.max_attempts) == (Status.QUEUED, 6)  # 0 grants the default, 3


@pytest.mark.parametrize("status", [Status.QUEUED, Status.RUNNING, Status.COMPLETED, Status.CANCELLED])
async def test_only_a_failed_job_can_be_rerun(status: Status) -> None:
    store = FakeStore()
    job = store.add(stored_job(ALICE, status=status, attempts=1))
    jobs, _, relay, _ = service(store)
    with pytest.raises(NotFailed, match=f"is {status.value}; only a FAILED job can be re-run"):
        await jobs.rerun(user(ALICE), job.id, 1)
    assert store.outbox == []
    assert relay.wakes == 0


async def test_rerun_refuses_a_bad_number_of_attempts() -> None:
    store = FakeStore()
    job = store.add(stored_job(ALICE, status=Status.FAILED, attempts=3))
    jobs, *_ = service(store)
    with pytest.raises(InvalidArgument, match="max_attempts"):
        await jobs.rerun(user(ALICE), job.id, -1)


@pytest.mark.parametrize(("dead", "sweeps"), [(0, [0]), (3, [3]), (RERUN_BATCH, [RERUN_BATCH, 0])])
async def test_rerun_dead_sweeps_in_batches_until_one_is_short(dead: int, sweeps: list[int]) -> None:
    store = FakeStore()
    for _ in range(dead):
        store.add(stored_job(ALICE, status=Status.FAILED, attempts=3))
    jobs, _, relay, _ = service(store)
    assert await jobs.rerun_dead(None, 0) == dead
    assert store.sweeps == sweeps
    assert relay.wakes == sum(1 for count in sweeps if count)


async def test_rerun_dead_sweeps_more_than_a_batch_of_one_type_only() -> None:
    store = FakeStore()
    for _ in range(2 * RERUN_BATCH + 1):
        store.add(stored_job(ALICE, status=Status.FAILED, attempts=3, job_type="uppercase_text"))
    other = store.add(stored_job(ALICE, status=Status.FAILED, attempts=3))
    jobs, *_ = service(store)
    assert await jobs.rerun_dead("uppercase_text", 1) == 2 * RERUN_BATCH + 1
    assert store.sweeps == [RERUN_BATCH, RERUN_BATCH, 1]
    assert (await store.get(other.id) or other).status is Status.FAILED


async def test_rerun_dead_leaves_jobs_that_fail_after_it_began() -> None:
    store = FakeStore()
    late = store.add(stored_job(ALICE, status=Status.FAILED, attempts=3, finished_at=store.clock + timedelta(hours=1)))
    jobs, *_ = service(store)
    assert await jobs.rerun_dead(None, 1) == 0
    assert (await store.get(late.id) or late).status is Status.FAILED


async def test_rerun_dead_refuses_an_unknown_type() -> None:
    jobs, store, _, _ = service()
    with pytest.raises(InvalidArgument, match="unknown job type 'nope'"):
        await jobs.rerun_dead("nope", 1)
    assert store.sweeps == []


# Attempt history and queue statistics


async def test_get_reads_the_history_only_when_asked() -> None:
    jobs, store, _, _ = service()
    job = await jobs.create(await jobs.check_new(ALICE, "reverse_string", "x"))
    await store.start([(job.id, uuid.uuid4())], 5.0, ["host/1"])
    assert (await jobs.get(ALICE, job.id)).attempt_history == ()
    [attempt] = (await jobs.get(ALICE, job.id, history=True)).attempt_history
    assert (attempt.number, attempt.worker_id, attempt.ended_at) == (1, "host/1", None)
    with pytest.raises(JobNotFound):
        await jobs.get(BOB, job.id, history=True)
    assert await jobs.with_history([]) == []


@pytest.mark.parametrize(("asked", "window"), [(0, 60), (1, 1), (1440, 1440)])
async def test_queue_stats_windows(asked: int, window: int) -> None:
    jobs, _, _, _ = service()
    await jobs.create(await jobs.check_new(ALICE, "reverse_string", "x"))
    stats = await jobs.queue_stats(asked)
    assert len(stats.minutes) == window
    assert [(t.type, t.queued) for t in stats.job_types] == [("reverse_string", 1)]


@pytest.mark.parametrize("minutes", [-1, 1441])
async def test_queue_stats_refuses_a_window_out_of_range(minutes: int) -> None:
    jobs, _, _, _ = service()
    with pytest.raises(InvalidArgument) as caught:
        await jobs.queue_stats(minutes)
    assert [v.field for v in caught.value.violations] == ["minutes"]


async def test_queue_stats_that_take_too_long_are_resource_exhausted() -> None:
    class SlowStore(FakeStore):
        async def queue_stats(self, minutes: int) -> Any:
            raise asyncpg.QueryCanceledError("canceling statement due to statement timeout")

    jobs, _, _, _ = service(SlowStore())
    with pytest.raises(StatsTooCostly):
        await jobs.queue_stats(60)

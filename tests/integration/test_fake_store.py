"""The unit tests' FakeStore does what the real JobStore does: the same scenarios, the same observable outcomes.

The job service's core is unit-tested on tests/support/fake_job_service.py;
those tests mean something only while the fake follows the SQL. Each scenario
here runs on PostgreSQL and on the fake, and the traces must be equal.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import pytest

from job_svc.model import Job, ListQuery, NewJob, Progress, Report, Status
from job_svc.store import JobStore
from tests.support.fake_job_service import FakeStore

Store = JobStore | FakeStore
Scenario = Callable[[Store], Awaitable[list[Any]]]
ALICE, BOB = uuid.uuid4(), uuid.uuid4()


def encode(job_id: uuid.UUID, job_type: str, payload: Any, timeout_seconds: int) -> bytes:
    return f"{job_id} {job_type} {payload} {timeout_seconds}".encode()


def new(owner: uuid.UUID, payload: str, request_id: uuid.UUID | None = None) -> NewJob:
    job_id = uuid.uuid4()
    return NewJob(
        job_id, owner, "reverse_string", payload, encode(job_id, "reverse_string", payload, 60), request_id=request_id
    )


def seen(job: Job | None) -> tuple[Any, ...] | None:
    """What a caller can rely on: the values, and which timestamps are set (the clocks differ)."""
    if job is None:
        return None
    return (
        job.payload,
        job.status,
        job.attempts,
        job.max_attempts,
        job.result,
        None if job.result_json is None else json.loads(job.result_json),  # jsonb writes it its own way
        job.error,
        job.started_at is not None,
        job.finished_at is not None,
        job.run_after is not None,
        None
        if job.progress is None
        else (job.progress.fraction, job.progress.message, job.progress.updated_at is not None),
    )


async def one(store: Store, job: NewJob) -> Job:
    [stored] = await store.create([job])
    assert stored is not None
    return stored[0]


def outcomes(stored: Sequence[tuple[Job, bool] | None]) -> list[Any]:
    return [None if result is None else (seen(result[0]), result[1]) for result in stored]


async def creates(store: Store) -> list[Any]:
    key = uuid.uuid4()
    batch = await store.create([new(ALICE, "a", key), new(ALICE, "b", key), new(BOB, "c", key), new(ALICE, "d")])
    again = await store.create([new(ALICE, "e", key)])
    return outcomes([*batch, *again])


async def caps(store: Store) -> list[Any]:
    key = uuid.uuid4()
    trace: list[Any] = [outcomes(await store.create([new(ALICE, "a"), new(ALICE, "b", key)], 3))]
    running = await one(store, new(ALICE, "running"))  # no cap: ALICE has 3 unfinished now
    await store.start([(running.id, uuid.uuid4())], 5.0)  # RUNNING counts as unfinished too
    trace.append(outcomes(await store.create([new(ALICE, "c"), new(BOB, "d")], 4)))  # one fits, BOB's own
    # A repeat of a used request_id always fits (it stores nothing); new jobs past the cap do not.
    trace.append(outcomes(await store.create([new(ALICE, "e", key), new(ALICE, "f"), new(ALICE, "f")], 4)))
    await store.finish([Report(running.id, Status.COMPLETED, attempt=1, result="gninnur")])
    trace.append(outcomes(await store.create([new(ALICE, "g"), new(ALICE, "h")], 4, whole=True)))  # all or none
    trace.append(outcomes(await store.create([new(ALICE, "i"), new(ALICE, "j", key)], 4, whole=True)))
    trace.append(len(await store.list(ListQuery(owner_id=ALICE, page_size=100))))
    return trace


async def capped(store: Store) -> list[Any]:
    # Only the owners named are checked against the cap (job_svc/unfinished.py knows the others far from it).
    trace: list[Any] = [
        outcomes(await store.create([new(ALICE, "a"), new(ALICE, "b"), new(BOB, "c")], 1, capped={BOB}))
    ]
    trace.append(outcomes(await store.create([new(ALICE, "d"), new(BOB, "e")], 1, capped={ALICE})))
    trace.append(outcomes(await store.create([new(ALICE, "f"), new(BOB, "g")], 1, capped=set())))
    stranger = uuid.uuid4()
    counted = await store.count_unfinished([ALICE, BOB, stranger], 10)
    trace.append([counted[owner] for owner in (ALICE, BOB, stranger)])
    trace.append(await store.count_unfinished([ALICE], 2))  # counted up to the limit
    return trace


async def lifecycle(store: Store) -> list[Any]:
    job = await one(store, new(ALICE, "x"))
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    trace: list[Any] = []

    async def start(claim: uuid.UUID) -> None:
        trace.append(("start", [seen(j) for j in await store.start([(job.id, claim)], 5.0)]))

    async def finish(report: Report) -> None:
        trace.append(("finish", [seen(j) for j in await store.finish([report])]))

    await start(first)
    await start(first)  # the same claim again: no new attempt
    await start(second)  # taken over: attempt 2
    await finish(Report(job.id, Status.COMPLETED, attempt=1, result="stale"))
    await finish(Report(job.id, Status.FAILED, attempt=2, error="flaky", retryable=True, retry_delay=30))
    await finish(Report(job.id, Status.FAILED, attempt=2, error="flaky", retryable=True, retry_delay=30))
    await start(third)
    await finish(Report(job.id, Status.FAILED, attempt=3, error="last", retryable=True))  # attempts used up
    await start(uuid.uuid4())
    trace.append(("get", [seen(j) for j in await store.get_many([job.id, uuid.uuid4()])]))
    return trace


async def progress(store: Store) -> list[Any]:
    job, other = await one(store, new(ALICE, "x")), await one(store, new(ALICE, "y"))
    first, second = uuid.uuid4(), uuid.uuid4()
    trace: list[Any] = []

    async def note(claim: uuid.UUID, fraction: float, message: str = "") -> None:
        report = Report(job.id, Status.RUNNING, claim_id=claim, progress=Progress(fraction, message))
        trace.append(("note", [seen(j) for j in await store.note_progress([report])]))

    await note(first, 0.1)  # QUEUED: no claim to fit
    await store.start([(job.id, first), (other.id, second)], 5.0)
    await note(first, 0.25, "a quarter")
    await note(second, 0.5)  # another job's claim
    trace.append(("start", [seen(j) for j in await store.start([(job.id, first)], 5.0)]))  # the same claim: kept
    trace.append(("start", [seen(j) for j in await store.start([(job.id, second)], 5.0)]))  # a new one: cleared
    await note(first, 0.9, "stale")
    await note(second, 0.75, "three quarters")
    finished = await store.finish([Report(job.id, Status.COMPLETED, attempt=2, result_json='{"b":[1,2.5],"a":null}')])
    trace.append(("finish", [seen(j) for j in finished]))  # the progress stays as it was left
    await note(second, 1.0)  # finished
    return trace


async def cancels(store: Store) -> list[Any]:
    queued = await one(store, new(ALICE, "q"))
    running = await one(store, new(ALICE, "r"))
    await store.start([(running.id, uuid.uuid4())], 5.0)
    trace: list[Any] = [await store.cancel(queued.id, BOB)]
    for job_id in (queued.id, running.id, queued.id):
        cancelled = await store.cancel(job_id, ALICE)
        trace.append(None if cancelled is None else (seen(cancelled[0]), cancelled[1]))
    return trace


async def histories(store: Store) -> list[Any]:
    """Attempts are recorded by start, ended by finish, cancel and lease expiry, and kept across a take-over."""
    job, cancelled, lost = [await one(store, new(ALICE, p)) for p in ("h", "c", "l")]
    first, second = uuid.uuid4(), uuid.uuid4()
    await store.start([(job.id, first), (cancelled.id, uuid.uuid4())], 5.0, ["w-1", "w-2"])
    await store.start([(job.id, first)], 5.0, ["w-other"])  # the same claim: no new attempt, no new worker
    await store.note_progress([Report(job.id, Status.RUNNING, claim_id=first, progress=Progress(0.5))])
    await store.start([(job.id, second)], 5.0, ["w-3"])  # taken over: attempt 1 ends LOST
    await store.finish([Report(job.id, Status.FAILED, attempt=2, error="flaky", retryable=True)])
    await store.start([(job.id, uuid.uuid4())], 5.0)  # no worker id given
    await store.finish([Report(job.id, Status.COMPLETED, attempt=3, result="done")])
    await store.cancel(cancelled.id, ALICE)
    await store.start([(lost.id, uuid.uuid4())], -3600.0, ["w-4"])  # a lease already run out
    assert await store.expire_leases(10) == 1
    history = await store.attempts([job.id, cancelled.id, lost.id, uuid.uuid4()])
    return [
        [(a.number, a.worker_id, a.outcome, a.error, a.ended_at is not None) for a in history[j.id]]
        for j in (job, cancelled, lost)
    ] + [len(history)]


async def reruns(store: Store) -> list[Any]:
    dead = []
    for payload in ("d1", "d2", "d3"):
        job = await one(store, new(ALICE, payload))
        await store.start([(job.id, uuid.uuid4())], 5.0)
        await store.finish([Report(job.id, Status.FAILED, attempt=1, error="boom")])
        dead.append(job)
    alive = await one(store, new(ALICE, "alive"))
    trace: list[Any] = [
        seen(await store.rerun(dead[0].id, 2, encode, BOB)),
        seen(await store.rerun(alive.id, 2, encode, None)),
        seen(await store.rerun(dead[0].id, 2, encode, ALICE)),
        seen(await store.rerun(dead[0].id, 2, encode, None)),  # QUEUED again now
        [seen(j) for j in await store.list_dead(10, None, None)],
    ]
    failed_by = await store.now()
    trace.append(await store.rerun_dead("reverse_string", failed_by, 3, 1, encode))
    trace.append(await store.rerun_dead(None, failed_by, 3, 10, encode))
    trace.append(await store.rerun_dead(None, failed_by, 3, 10, encode))
    trace.append(sorted(str(seen(j)) for j in await store.get_many([j.id for j in dead])))
    return trace


async def listings(store: Store) -> list[Any]:
    for payload in ("p1", "p2"):
        await one(store, new(ALICE, payload))
    await store.create([new(ALICE, f"b{i}") for i in range(3)])  # one created_at: the id orders them
    await one(store, new(BOB, "bob's"))
    pages = []
    after = None
    while True:
        page = await store.list(ListQuery(owner_id=ALICE, page_size=2, after=after))
        pages.append(len(page))
        if len(page) < 2:
            break
        after = (page[-1].created_at, page[-1].id)
    everything = await store.list(ListQuery(owner_id=ALICE, page_size=10))
    payloads = [job.payload for job in everything]
    assert [(j.created_at, j.id) for j in everything] == sorted(
        ((j.created_at, j.id) for j in everything), reverse=True
    )
    return [pages, sorted(payloads[:3]), payloads[3:], len(await store.list(ListQuery(BOB, 10, Status.QUEUED, "x")))]


async def outbox(store: Store) -> list[Any]:
    await store.create([new(ALICE, "o1"), new(ALICE, "o2")])
    trace: list[Any] = []
    async with store.outbox_batch(1) as batch:
        trace.append(len(batch))
    try:
        async with store.outbox_batch(10) as batch:
            trace.append(len(batch))
            raise RuntimeError("publish failed")  # the block fails: its rows stay
    except RuntimeError:
        trace.append("failed")
    async with store.outbox_batch(10) as batch:
        trace.append(len(batch))
    async with store.outbox_batch(10) as batch:
        trace.append(len(batch))
    return trace


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    async with pool.acquire() as connection:
        await connection.execute("TRUNCATE jobs, job_outbox, job_attempts")
    yield pool
    await pool.close()


@pytest.mark.parametrize(
    "scenario", [creates, caps, capped, lifecycle, progress, cancels, histories, reruns, listings, outbox]
)
async def test_the_fake_store_does_what_the_real_one_does(pool: asyncpg.Pool, scenario: Scenario) -> None:
    real = await scenario(JobStore(pool))
    fake = await scenario(FakeStore())
    assert fake == real

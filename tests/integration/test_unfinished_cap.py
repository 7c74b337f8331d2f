"""The cap on unfinished jobs on real PostgreSQL: plain inserts far from it never carry a user past it.

The job service's use cases run in this process on a real JobStore, one or two of them sharing the
database as replicas do, each with its own estimates (job_svc/unfinished.py); a recording store
shows that both paths were taken, so the test means something for the plain inserts too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Collection, Sequence

import asyncpg
import pytest

from common.rates import Rate
from job_svc.errors import TooManyJobs, TooManyUnfinishedJobs
from job_svc.jobs import Jobs
from job_svc.limits import JobLimits
from job_svc.model import Job, NewJob
from job_svc.store import JobStore
from job_svc.unfinished import REFRESH_SECONDS
from tests.support.fake_job_service import FakePublisher, FakeRelay, type_registry


class RecordingStore(JobStore):
    """A JobStore that counts the jobs it stored by plain insert and by the exact check."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.plain = 0
        self.exact = 0

    async def create(
        self,
        jobs: Sequence[NewJob],
        max_unfinished: int = 0,
        *,
        whole: bool = False,
        capped: Collection[uuid.UUID] | None = None,
    ) -> Sequence[tuple[Job, bool] | None]:
        if max_unfinished and (capped is None or capped):
            self.exact += len(jobs)
        else:
            self.plain += len(jobs)
        return await super().create(jobs, max_unfinished, whole=whole, capped=capped)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
    yield pool
    await pool.close()


def replica(pool: asyncpg.Pool, limits: JobLimits) -> tuple[Jobs, RecordingStore]:
    store = RecordingStore(pool)
    return Jobs(store, FakeRelay(), FakePublisher(), type_registry(), limits), store


async def flood(jobs: Jobs, owner: uuid.UUID, singles: int, batches: int, size: int) -> None:
    """Singles and batches of ``owner`` all at once; only the limits' refusals are expected."""

    async def new() -> NewJob:
        return await jobs.check_new(owner, "reverse_string", "cap")

    calls: list[Awaitable[object]] = [jobs.create(await new()) for _ in range(singles)]
    calls += [jobs.create_batch([await new() for _ in range(size)]) for _ in range(batches)]
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(outcome, BaseException) and not isinstance(outcome, TooManyUnfinishedJobs | TooManyJobs):
            raise outcome


async def unfinished(pool: asyncpg.Pool, owner: uuid.UUID) -> int:
    count = await pool.fetchval(
        "SELECT count(*) FROM jobs WHERE owner_id = $1 AND status IN ('QUEUED', 'RUNNING')", owner
    )
    assert isinstance(count, int)
    return count


async def test_one_replica_stores_exactly_the_cap_with_plain_inserts_up_to_it(pool: asyncpg.Pool) -> None:
    cap, owner = 300, uuid.uuid4()
    # No room left for other replicas: the estimate alone decides up to the cap itself.
    jobs, store = replica(pool, JobLimits(max_unfinished=cap, other_replicas=0))
    await flood(jobs, owner, 1, 0, 0)  # never read: the exact check, and a read
    await asyncio.sleep(0.2)
    await flood(jobs, owner, 200, 20, 10)  # 400 at once: single ones share group-commit batches
    assert await unfinished(pool, owner) == cap
    assert store.plain > 0, "nothing went by the estimate"
    assert store.exact > 1, "nothing was checked exactly near the cap"

    await pool.execute(
        "UPDATE jobs SET status = 'COMPLETED', finished_at = now() WHERE id IN"
        " (SELECT id FROM jobs WHERE owner_id = $1 LIMIT 50)",
        owner,
    )
    await asyncio.sleep(REFRESH_SECONDS)
    await flood(jobs, owner, 60, 4, 10)  # 50 finished: exactly 50 more, whatever the estimate said
    assert await unfinished(pool, owner) == cap
    await asyncio.sleep(REFRESH_SECONDS)
    await flood(jobs, owner, 5, 1, 5)  # at the cap: nothing more, while the count is read again
    await asyncio.sleep(0.2)
    await flood(jobs, owner, 5, 1, 5)  # nor on the fresh count
    assert await unfinished(pool, owner) == cap


async def test_two_replicas_leave_each_other_room_and_store_exactly_the_cap(pool: asyncpg.Pool) -> None:
    # Each leaves room for what the other may have accepted since its read: a burst of 1,500 plus 1,000 a second.
    cap, owner = 2500, uuid.uuid4()
    replicas = [
        replica(pool, JobLimits(rate=Rate(1000, 1, burst=1500), max_unfinished=cap, other_replicas=1)) for _ in range(2)
    ]
    for jobs, _ in replicas:
        await flood(jobs, owner, 1, 0, 0)
    await asyncio.sleep(0.2)
    await asyncio.gather(*(flood(jobs, owner, 300, 12, 100) for jobs, _ in replicas))
    assert await unfinished(pool, owner) == cap
    assert sum(store.plain for _, store in replicas) > 0, "nothing went by the estimate"

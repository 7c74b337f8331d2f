"""JobStore.count_by_status on the real PostgreSQL: the index-only count agrees with counting every row."""

from __future__ import annotations

import uuid

import asyncpg

from common import db
from job_svc.model import Status
from job_svc.store import JobStore

#: (owner, status, how many): several owners, each with a different mix, one with only finished jobs.
MIX = [
    (0, "QUEUED", 3),
    (0, "RUNNING", 1),
    (0, "COMPLETED", 5),
    (1, "QUEUED", 2),
    (1, "FAILED", 2),
    (1, "CANCELLED", 1),
    (2, "COMPLETED", 4),
    (2, "FAILED", 1),
    (3, "RUNNING", 2),
]


async def insert(pool: asyncpg.Pool, owners: list[uuid.UUID]) -> None:
    rows = [(owners[owner], status) for owner, status, count in MIX for _ in range(count)]
    await pool.executemany(
        """INSERT INTO jobs (id, owner_id, type, payload, status, finished_at, lease_until)
           VALUES (gen_random_uuid(), $1, 'reverse_string', '"x"', $2,
                   CASE WHEN $2 IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN now() END,
                   CASE WHEN $2 = 'RUNNING' THEN now() + interval '1 minute' END)""",
        rows,
    )


async def test_counts_by_status_match_a_count_of_every_row(database_url: str) -> None:
    pool = await db.create_pool(database_url, max_size=2)
    try:
        store = JobStore(pool)
        assert await store.count_by_status(finished=False) == {Status.QUEUED: 0, Status.RUNNING: 0, Status.FAILED: 0}
        await insert(pool, sorted(uuid.uuid4() for _ in range(4)))
        every = {
            Status(row["status"]): row["n"]
            for row in await pool.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
        }
        assert every == {
            Status.QUEUED: 5,
            Status.RUNNING: 3,
            Status.COMPLETED: 9,
            Status.FAILED: 3,
            Status.CANCELLED: 1,
        }
        assert await store.count_by_status(finished=True) == every
        often = {status: every[status] for status in (Status.QUEUED, Status.RUNNING, Status.FAILED)}
        assert await store.count_by_status(finished=False) == often
    finally:
        await pool.close()

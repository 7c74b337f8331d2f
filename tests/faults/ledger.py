"""The outcome ledger: every final outcome the job service stores, one row each, written by the database itself.

A duplicated outcome is the job service storing a second final outcome
(COMPLETED, or FAILED for good) for a job that already had one: the thing its
report fencing exists to prevent. The jobs row cannot show it (the second
write overwrites the first), a process's log line dies with the process, and
a service's metrics restart from zero with it. So the fault suite installs,
in its own test database, a trigger that appends a row to ``fault_outcomes``
for every UPDATE that leaves a job COMPLETED or FAILED: whichever process
wrote it, in whatever transaction, and whether or not anyone lived to log it.
No product code writes a final row without meaning it (cancellation ends in
CANCELLED; a re-run moves FAILED back to QUEUED), so each ledger row is one
stored outcome.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection

import asyncpg

_INSTALL = """
CREATE TABLE IF NOT EXISTS fault_outcomes (
    job_id    uuid        NOT NULL,
    status    text        NOT NULL,
    attempts  integer     NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS fault_outcomes_job ON fault_outcomes (job_id);
-- SECURITY DEFINER: the trigger fires in the job service's transactions, and its role may not write here.
CREATE OR REPLACE FUNCTION fault_record_outcome() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO fault_outcomes (job_id, status, attempts) VALUES (NEW.id, NEW.status, NEW.attempts);
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER fault_outcomes AFTER UPDATE ON jobs
    FOR EACH ROW WHEN (NEW.status IN ('COMPLETED', 'FAILED')) EXECUTE FUNCTION fault_record_outcome();
"""


def install(database_url: str) -> None:
    """Start recording every final outcome stored in ``database_url`` (idempotent)."""

    async def run() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(_INSTALL)
        finally:
            await connection.close()

    asyncio.run(run())


def stored_outcomes(database_url: str, job_ids: Collection[str]) -> Counter[str]:
    """How many final outcomes were stored for each of ``job_ids`` (jobs with none are absent)."""

    async def run() -> Counter[str]:
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch(
                "SELECT job_id::text, count(*) AS n FROM fault_outcomes WHERE job_id = ANY($1::uuid[]) GROUP BY job_id",
                list(job_ids),
            )
        finally:
            await connection.close()
        return Counter({row["job_id"]: row["n"] for row in rows})

    return asyncio.run(run())


def attempt_histories(database_url: str, job_ids: Collection[str]) -> dict[str, list[tuple[int, str]]]:
    """Each job's recorded attempts, oldest first, as (number, outcome) (jobs never started are absent)."""

    async def run() -> dict[str, list[tuple[int, str]]]:
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch(
                """SELECT job_id::text, array_agg(number ORDER BY number) AS numbers,
                          array_agg(outcome ORDER BY number) AS outcomes
                   FROM job_attempts WHERE job_id = ANY($1::uuid[]) GROUP BY job_id""",
                list(job_ids),
            )
        finally:
            await connection.close()
        return {row["job_id"]: list(zip(row["numbers"], row["outcomes"], strict=True)) for row in rows}

    return asyncio.run(run())

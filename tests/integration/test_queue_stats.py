"""GetQueueStats on the real job service: what an operator's dashboard reads, counted from this module's own database.

The module's database holds only the jobs these tests create (tests/support/databases.py),
so every count must come out exact. Workers are played by UpdateJob calls.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc

from job_svc import store
from jobqueue.jobs.v1 import jobs_pb2
from tests.integration.jobservice import JobService, expect, number, text
from tests.support.clients import bearer, mint_token, worker_metadata

Metadata = tuple[tuple[str, str], ...]


def _stats(jobs: JobService, operator: Metadata, minutes: int = 0) -> jobs_pb2.GetQueueStatsResponse:
    return jobs.stub.GetQueueStats(jobs_pb2.GetQueueStatsRequest(minutes=minutes), metadata=operator)


def _create(jobs: JobService, owner: Metadata, job_type: str, max_attempts: int = 0) -> jobs_pb2.Job:
    payload = number(5) if job_type == "fibonacci_calc" else text("x")
    request = jobs_pb2.CreateJobRequest(type=job_type, payload=payload, max_attempts=max_attempts)
    return jobs.stub.CreateJob(request, metadata=owner).job


def _run(jobs: JobService, secrets_dir: Path, job_id: str, outcome: jobs_pb2.JobStatus.ValueType | None) -> None:
    """Play a worker: claim the job, then (unless ``outcome`` is None) report it COMPLETED or FAILED for good."""
    worker = worker_metadata(secrets_dir)
    claim = jobs_pb2.UpdateJobRequest(id=job_id, status=jobs_pb2.JOB_STATUS_RUNNING, claim_id=str(uuid.uuid4()))
    attempt = jobs.stub.UpdateJob(claim, metadata=worker).job.attempts
    if outcome == jobs_pb2.JOB_STATUS_COMPLETED:
        report = jobs_pb2.UpdateJobRequest(id=job_id, status=outcome, attempt=attempt, result="done")
    elif outcome == jobs_pb2.JOB_STATUS_FAILED:
        report = jobs_pb2.UpdateJobRequest(id=job_id, status=outcome, attempt=attempt, error="bad input")
    else:
        return
    jobs.stub.UpdateJob(report, metadata=worker)


def _totals(minutes: list[jobs_pb2.MinuteCounts]) -> tuple[int, int, int, int]:
    return (
        sum(m.created for m in minutes),
        sum(m.completed for m in minutes),
        sum(m.failed for m in minutes),
        sum(m.cancelled for m in minutes),
    )


def test_counts_and_buckets_match_what_was_created_and_finished(
    jobs: JobService, secrets_dir: Path, database_url: str
) -> None:
    operator = bearer(mint_token(secrets_dir, roles=["operator"]))
    alice, bob = bearer(mint_token(secrets_dir)), bearer(mint_token(secrets_dir))
    empty = _stats(jobs, operator, 3)
    assert list(empty.job_types) == []
    assert _totals(list(empty.minutes)) == (0, 0, 0, 0)

    for _ in range(3):
        _create(jobs, alice, "reverse_string")  # QUEUED
    _create(jobs, bob, "reverse_string")  # QUEUED, another owner's: every user's jobs count
    _run(jobs, secrets_dir, _create(jobs, alice, "uppercase_text").id, None)  # RUNNING
    for _ in range(2):
        _run(jobs, secrets_dir, _create(jobs, bob, "fibonacci_calc", 1).id, jobs_pb2.JOB_STATUS_FAILED)  # dead
    _run(jobs, secrets_dir, _create(jobs, alice, "reverse_string").id, jobs_pb2.JOB_STATUS_COMPLETED)
    cancelled = _create(jobs, alice, "uppercase_text")
    jobs.stub.CancelJob(jobs_pb2.CancelJobRequest(id=cancelled.id), metadata=alice)
    # A job created and finished two hours ago is outside any window up to 60 minutes.
    old = _create(jobs, alice, "uppercase_text")
    _run(jobs, secrets_dir, old.id, jobs_pb2.JOB_STATUS_COMPLETED)
    asyncio.run(_backdate(database_url, old.id, timedelta(hours=2)))

    before = datetime.now(UTC)
    stats = _stats(jobs, operator, 5)
    after = datetime.now(UTC)
    assert [(t.type, t.queued, t.running, t.failed) for t in stats.job_types] == [
        ("fibonacci_calc", 0, 0, 2),
        ("reverse_string", 4, 0, 0),
        ("uppercase_text", 0, 1, 0),
    ]
    assert len(stats.minutes) == 5
    starts = [m.start.ToDatetime(tzinfo=UTC) for m in stats.minutes]
    assert all(later - earlier == timedelta(minutes=1) for earlier, later in itertools.pairwise(starts))
    assert all(start.second == 0 and start.microsecond == 0 for start in starts)
    # The last bucket is the current minute (the database's clock is this machine's).
    assert before.replace(second=0, microsecond=0) - timedelta(minutes=1) <= starts[-1] <= after
    # Created: 4 queued, 1 running, 2 dead, 1 completed, 1 cancelled (the backdated one is out of the window).
    assert _totals(list(stats.minutes)) == (9, 1, 2, 1)
    assert len(_stats(jobs, operator).minutes) == 60  # 0 means an hour
    assert _totals(list(_stats(jobs, operator, 180).minutes)) == (10, 2, 2, 1)  # the old job is in 3 hours
    assert len(_stats(jobs, operator, 1440).minutes) == 1440


async def _backdate(url: str, job_id: str, by: timedelta) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            """UPDATE jobs SET created_at = created_at - $2::interval, started_at = started_at - $2::interval,
                               finished_at = finished_at - $2::interval, updated_at = updated_at - $2::interval
               WHERE id = $1::uuid""",
            uuid.UUID(job_id),
            by,
        )
    finally:
        await connection.close()


def test_only_operators_get_the_stats(jobs: JobService, secrets_dir: Path) -> None:
    denied = grpc.StatusCode.PERMISSION_DENIED
    for metadata, reason in (
        (bearer(mint_token(secrets_dir)), "OPERATORS_ONLY"),
        (bearer(mint_token(secrets_dir, roles=["auditor"])), "OPERATORS_ONLY"),
        (worker_metadata(secrets_dir), "USERS_ONLY"),
    ):
        expect(lambda m=metadata: _stats(jobs, m), denied, reason)
    expect(lambda: jobs.stub.GetQueueStats(jobs_pb2.GetQueueStatsRequest()), grpc.StatusCode.UNAUTHENTICATED)


def test_minutes_out_of_range_are_invalid_argument(jobs: JobService, secrets_dir: Path) -> None:
    operator = bearer(mint_token(secrets_dir, roles=["operator"]))
    for bad in (-1, 1441, 2**31 - 1, -(2**31)):
        expect(
            lambda n=bad: _stats(jobs, operator, n), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["minutes"]
        )
    assert len(_stats(jobs, operator, 1).minutes) == 1


def test_the_stats_read_ranges_of_indexes_not_the_whole_table(database_url: str) -> None:
    """With sequential scans priced out, each statement still has an index to read: none is left without one.

    (On this small table the planner would rightly pick a sequential scan; the question here is whether
    any other plan exists.) Every scan of jobs must be an index-only scan.
    """

    async def plans() -> list[str]:
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute("SET enable_seqscan = off")
            await connection.execute("SET enable_bitmapscan = off")
            types = await connection.fetch(f"EXPLAIN {store._TYPE_COUNTS}")
            buckets = await connection.fetch(f"EXPLAIN {store._BUCKETS}", 1440)
            return ["\n".join(row[0] for row in plan) for plan in (types, buckets)]
        finally:
            await connection.close()

    for plan in asyncio.run(plans()):
        scans = [line for line in plan.splitlines() if " on jobs" in line]
        assert scans, plan
        assert all("Index Only Scan" in line for line in scans), plan

"""Attempt history on the real job service: GetJob's JOB_VIEW_FULL shows every attempt, who ran it and how it ended.

The reports are sent as a worker sends them (UpdateJob, UpdateJobs with the
worker token); the history is written by the same statements that move the job,
so each check here reads it right after the report that wrote it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import grpc

from jobqueue.jobs.v1 import jobs_pb2
from tests.integration.jobservice import JobService, expect, text
from tests.support.clients import bearer, mint_token, worker_metadata

RUNNING = jobs_pb2.JOB_STATUS_RUNNING
FULL = jobs_pb2.JOB_VIEW_FULL


def _owner(secrets_dir: Path) -> tuple[tuple[str, str], ...]:
    return bearer(mint_token(secrets_dir))


def _create(
    jobs: JobService, owner: tuple[tuple[str, str], ...], *, max_attempts: int = 0, timeout_seconds: int = 0
) -> jobs_pb2.Job:
    request = jobs_pb2.CreateJobRequest(
        type="reverse_string", payload=text("attempted"), max_attempts=max_attempts, timeout_seconds=timeout_seconds
    )
    return jobs.stub.CreateJob(request, metadata=owner).job


def _claim(jobs: JobService, secrets_dir: Path, job_id: str, claim_id: str, worker_id: str = "") -> jobs_pb2.Job:
    request = jobs_pb2.UpdateJobRequest(id=job_id, status=RUNNING, claim_id=claim_id, worker_id=worker_id)
    return jobs.stub.UpdateJob(request, metadata=worker_metadata(secrets_dir)).job


def _full(jobs: JobService, owner: tuple[tuple[str, str], ...], job_id: str) -> jobs_pb2.Job:
    return jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=job_id, view=FULL), metadata=owner).job


def test_a_job_that_fails_once_then_completes_shows_both_attempts_with_their_workers_and_times(
    jobs: JobService, secrets_dir: Path
) -> None:
    owner, worker = _owner(secrets_dir), worker_metadata(secrets_dir)
    job = _create(jobs, owner, max_attempts=2)
    first = _claim(jobs, secrets_dir, job.id, str(uuid.uuid4()), "host-a/101")
    failed = jobs_pb2.UpdateJobRequest(
        id=job.id, status=jobs_pb2.JOB_STATUS_FAILED, attempt=first.attempts, error="flaky", retryable=True
    )
    assert jobs.stub.UpdateJob(failed, metadata=worker).job.status == jobs_pb2.JOB_STATUS_QUEUED
    # The second attempt's claim and outcome come in UpdateJobs batches, as the worker sends them.
    claim = jobs_pb2.UpdateJobRequest(id=job.id, status=RUNNING, claim_id=str(uuid.uuid4()), worker_id="host-b/202")
    [claimed] = jobs.stub.UpdateJobs(jobs_pb2.UpdateJobsRequest(requests=[claim]), metadata=worker).results
    assert (claimed.code, claimed.attempts) == (0, 2)
    done = jobs_pb2.UpdateJobRequest(id=job.id, status=jobs_pb2.JOB_STATUS_COMPLETED, attempt=2, result="detpmetta")
    [completed] = jobs.stub.UpdateJobs(jobs_pb2.UpdateJobsRequest(requests=[done]), metadata=worker).results
    assert completed.job_status == jobs_pb2.JOB_STATUS_COMPLETED

    final = _full(jobs, owner, job.id)
    assert [(a.number, a.worker_id, a.outcome, a.error) for a in final.attempt_history] == [
        (1, "host-a/101", jobs_pb2.ATTEMPT_OUTCOME_FAILED, "flaky"),
        (2, "host-b/202", jobs_pb2.ATTEMPT_OUTCOME_COMPLETED, ""),
    ]
    one, two = final.attempt_history
    assert all(a.HasField("started_at") and a.HasField("ended_at") for a in (one, two))
    assert one.started_at.ToDatetime() <= one.ended_at.ToDatetime() <= two.started_at.ToDatetime()
    assert two.ended_at.ToDatetime() <= final.finished_at.ToDatetime()
    assert two.started_at == final.started_at  # the job's started_at is its last attempt's


def test_a_repeated_running_report_and_progress_add_no_attempt(jobs: JobService, secrets_dir: Path) -> None:
    owner, worker = _owner(secrets_dir), worker_metadata(secrets_dir)
    job = _create(jobs, owner)
    claim_id = str(uuid.uuid4())
    _claim(jobs, secrets_dir, job.id, claim_id, "host-a/1")
    _claim(jobs, secrets_dir, job.id, claim_id, "host-a/1")  # a retry after a lost reply
    progress = jobs_pb2.UpdateJobRequest(
        id=job.id, status=RUNNING, claim_id=claim_id, progress=jobs_pb2.JobProgress(fraction=0.5), worker_id="host-a/1"
    )
    jobs.stub.UpdateJob(progress, metadata=worker)
    [attempt] = _full(jobs, owner, job.id).attempt_history
    assert (attempt.number, attempt.worker_id, attempt.outcome) == (1, "host-a/1", jobs_pb2.ATTEMPT_OUTCOME_RUNNING)
    assert not attempt.HasField("ended_at")
    assert attempt.error == ""


def test_an_attempt_whose_lease_runs_out_is_lost(jobs: JobService, secrets_dir: Path) -> None:
    owner = _owner(secrets_dir)
    job = _create(jobs, owner, timeout_seconds=1, max_attempts=2)
    _claim(jobs, secrets_dir, job.id, str(uuid.uuid4()), "host-silent/9")
    deadline = time.monotonic() + 15
    while (taken := _full(jobs, owner, job.id)).status != jobs_pb2.JOB_STATUS_QUEUED:
        assert time.monotonic() < deadline, "the lease never ran out"
        time.sleep(0.1)
    [lost] = taken.attempt_history
    assert (lost.number, lost.worker_id, lost.outcome) == (1, "host-silent/9", jobs_pb2.ATTEMPT_OUTCOME_LOST)
    assert "timed out" in lost.error
    assert lost.HasField("ended_at")


def test_an_attempt_taken_over_by_a_new_claim_is_lost(jobs: JobService, secrets_dir: Path) -> None:
    owner = _owner(secrets_dir)
    job = _create(jobs, owner)
    _claim(jobs, secrets_dir, job.id, str(uuid.uuid4()), "host-a/1")
    _claim(jobs, secrets_dir, job.id, str(uuid.uuid4()), "host-b/2")  # redelivered to another worker
    history = _full(jobs, owner, job.id).attempt_history
    assert [(a.worker_id, a.outcome) for a in history] == [
        ("host-a/1", jobs_pb2.ATTEMPT_OUTCOME_LOST),
        ("host-b/2", jobs_pb2.ATTEMPT_OUTCOME_RUNNING),
    ]


def test_cancelling_a_running_job_ends_its_attempt_cancelled(jobs: JobService, secrets_dir: Path) -> None:
    owner = _owner(secrets_dir)
    job = _create(jobs, owner)
    _claim(jobs, secrets_dir, job.id, str(uuid.uuid4()), "host-a/1")
    cancelled = jobs.stub.CancelJob(jobs_pb2.CancelJobRequest(id=job.id), metadata=owner).job
    assert list(cancelled.attempt_history) == []  # only GetJob's full view carries it
    [attempt] = _full(jobs, owner, job.id).attempt_history
    assert (attempt.outcome, attempt.error) == (jobs_pb2.ATTEMPT_OUTCOME_CANCELLED, "cancelled by its owner")
    assert attempt.ended_at == _full(jobs, owner, job.id).finished_at
    queued = _create(jobs, owner)
    jobs.stub.CancelJob(jobs_pb2.CancelJobRequest(id=queued.id), metadata=owner)
    assert list(_full(jobs, owner, queued.id).attempt_history) == []  # never started: no attempt


def test_only_the_full_view_carries_the_history(jobs: JobService, secrets_dir: Path) -> None:
    owner = _owner(secrets_dir)
    job = _create(jobs, owner)
    running = _claim(jobs, secrets_dir, job.id, str(uuid.uuid4()), "host-a/1")
    assert list(running.attempt_history) == []  # UpdateJob's answer
    for view in (jobs_pb2.JOB_VIEW_UNSPECIFIED, jobs_pb2.JOB_VIEW_BASIC):
        basic = jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=job.id, view=view), metadata=owner).job
        assert (basic.attempts, list(basic.attempt_history)) == (1, [])
    listed = jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=owner).jobs
    assert [(j.id, list(j.attempt_history)) for j in listed] == [(job.id, [])]
    assert len(_full(jobs, owner, job.id).attempt_history) == 1
    bad_view = jobs_pb2.GetJobRequest(id=job.id, view=7)  # type: ignore[arg-type]
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    expect(lambda: jobs.stub.GetJob(bad_view, metadata=owner), invalid, "INVALID_ARGUMENT", ["view"])
    stranger = _owner(secrets_dir)
    expect(
        lambda: jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=job.id, view=FULL), metadata=stranger),
        grpc.StatusCode.NOT_FOUND,
        "JOB_NOT_FOUND",
    )


def test_a_bad_worker_id_is_refused_and_records_nothing(jobs: JobService, secrets_dir: Path) -> None:
    owner, worker = _owner(secrets_dir), worker_metadata(secrets_dir)
    job = _create(jobs, owner)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    for bad in ("w" * 201, 'host\n{"forged": 1}', "host\x00", "tab\there"):
        request = jobs_pb2.UpdateJobRequest(id=job.id, status=RUNNING, claim_id=str(uuid.uuid4()), worker_id=bad)
        expect(lambda r=request: jobs.stub.UpdateJob(r, metadata=worker), invalid, "INVALID_ARGUMENT", ["worker_id"])
        [result] = jobs.stub.UpdateJobs(jobs_pb2.UpdateJobsRequest(requests=[request]), metadata=worker).results
        assert result.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "worker_id" in result.message
    longest = "w" * 199 + "é"  # 200 characters, more bytes: the limit counts characters
    assert _claim(jobs, secrets_dir, job.id, str(uuid.uuid4()), longest).attempts == 1
    [attempt] = _full(jobs, owner, job.id).attempt_history
    assert attempt.worker_id == longest


def test_claims_that_waited_on_each_other_still_end_the_attempts_they_took_over(
    jobs: JobService, secrets_dir: Path, database_url: str
) -> None:
    """Two deliveries of one job claim it at once (a duplicate message) while its row is locked.

    The one that gets the lock second started its statement before the first committed, so its
    snapshot does not hold the first one's attempt: it must still end that attempt LOST, not leave it
    RUNNING for ever (the faults suite found this with messages delivered three times).
    """
    owner = _owner(secrets_dir)
    job = _create(jobs, owner)
    _claim(jobs, secrets_dir, job.id, str(uuid.uuid4()), "host-a/1")

    async def race() -> None:
        holder = await asyncpg.connect(database_url)
        try:
            async with holder.transaction():
                await holder.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", uuid.UUID(job.id))
                claims = [
                    asyncio.create_task(
                        asyncio.to_thread(_claim, jobs, secrets_dir, job.id, str(uuid.uuid4()), f"host-{name}/2")
                    )
                    for name in ("b", "c")
                ]
                deadline = time.monotonic() + 10
                while await _waiting_on_locks(holder) < len(claims):
                    assert time.monotonic() < deadline, "the claims never waited on the job's lock"
                    await asyncio.sleep(0.05)
            await asyncio.gather(*claims)
        finally:
            await holder.close()

    asyncio.run(race())
    history = _full(jobs, owner, job.id).attempt_history
    assert [(a.number, a.outcome) for a in history] == [
        (1, jobs_pb2.ATTEMPT_OUTCOME_LOST),
        (2, jobs_pb2.ATTEMPT_OUTCOME_LOST),
        (3, jobs_pb2.ATTEMPT_OUTCOME_RUNNING),
    ]
    assert history[1].error == "taken over by attempt 3"


async def _waiting_on_locks(connection: asyncpg.Connection) -> int:
    """How many other sessions of this database wait on a lock."""
    count = await connection.fetchval(
        """SELECT count(*) FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"""
    )
    assert isinstance(count, int)
    return count

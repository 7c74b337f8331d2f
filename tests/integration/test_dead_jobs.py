"""Dead jobs: a user re-runs their own FAILED job; an operator lists and re-runs every user's.

The job service runs as a real process; the worker's side is played by UpdateJob
calls with the worker token, so each attempt's outcome is exactly the one a
test needs.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc

from jobqueue.jobs.v1 import delivery_pb2, jobs_pb2
from tests.integration.jobservice import JobService, expect, take_messages, text
from tests.support.clients import bearer, mint_token, worker_metadata

Metadata = tuple[tuple[str, str], ...]
OPERATOR = ["operator"]


def fail(
    jobs: JobService, secrets_dir: Path, job_id: str, *, retryable: bool, error: str = "handler crashed"
) -> jobs_pb2.Job:
    """Play a worker: claim the job and report its attempt FAILED."""
    worker = worker_metadata(secrets_dir)
    claim = jobs_pb2.UpdateJobRequest(id=job_id, status=jobs_pb2.JOB_STATUS_RUNNING, claim_id=str(uuid.uuid4()))
    attempt = jobs.stub.UpdateJob(claim, metadata=worker).job.attempts
    failed = jobs_pb2.UpdateJobRequest(
        id=job_id, status=jobs_pb2.JOB_STATUS_FAILED, attempt=attempt, error=error, retryable=retryable
    )
    return jobs.stub.UpdateJob(failed, metadata=worker).job


def dead_job(jobs: JobService, secrets_dir: Path, owner: Metadata, job_type: str = "reverse_string") -> jobs_pb2.Job:
    """A job of ``owner`` that failed for good on its only attempt."""
    request = jobs_pb2.CreateJobRequest(type=job_type, payload=text("x"), max_attempts=1)
    job = jobs.stub.CreateJob(request, metadata=owner).job
    failed = fail(jobs, secrets_dir, job.id, retryable=True)
    assert (failed.status, failed.attempts) == (jobs_pb2.JOB_STATUS_FAILED, 1)
    return failed


def rerun(jobs: JobService, caller: Metadata, job_id: str, max_attempts: int = 0) -> jobs_pb2.Job:
    return jobs.stub.RerunJob(jobs_pb2.RerunJobRequest(id=job_id, max_attempts=max_attempts), metadata=caller).job


def test_a_user_reruns_their_own_failed_job_with_more_attempts(
    jobs: JobService, secrets_dir: Path, rabbitmq_url: str
) -> None:
    owner, stranger = bearer(mint_token(secrets_dir)), bearer(mint_token(secrets_dir))
    job = dead_job(jobs, secrets_dir, owner)
    # This test's first delivery, and leftovers.
    asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 10_000, timeout=1))

    not_found = grpc.StatusCode.NOT_FOUND
    expect(lambda: rerun(jobs, stranger, job.id), not_found, "JOB_NOT_FOUND")
    expect(lambda: rerun(jobs, owner, str(uuid.uuid4())), not_found, "JOB_NOT_FOUND")
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    expect(lambda: rerun(jobs, owner, "nope"), invalid, "INVALID_ARGUMENT", ["id"])
    for bad in (-1, 11):
        expect(lambda n=bad: rerun(jobs, owner, job.id, n), invalid, "INVALID_ARGUMENT", ["max_attempts"])
    expect(
        lambda: jobs.stub.RerunJob(jobs_pb2.RerunJobRequest(id=job.id), metadata=worker_metadata(secrets_dir)),
        grpc.StatusCode.PERMISSION_DENIED,
        "USERS_ONLY",
    )

    again = rerun(jobs, owner, job.id, max_attempts=2)
    # attempts keeps counting, so every report stays fenced by it; the budget grows by the grant.
    assert (again.status, again.attempts, again.max_attempts) == (jobs_pb2.JOB_STATUS_QUEUED, 1, 3)
    assert again.error == "handler crashed"  # the last attempt's error, until the next outcome
    assert not again.HasField("finished_at")
    assert not again.HasField("next_attempt_at")
    [message] = asyncio.run(take_messages(rabbitmq_url, jobs.queue, "reverse_string", 1))
    assert delivery_pb2.JobDelivery.FromString(message.body).job_id == job.id
    expect(lambda: rerun(jobs, owner, job.id), grpc.StatusCode.FAILED_PRECONDITION, "JOB_NOT_FAILED")

    # The dead attempt's late report is refused; the re-run's attempts run as any job's do.
    worker = worker_metadata(secrets_dir)
    stale = jobs_pb2.UpdateJobRequest(id=job.id, status=jobs_pb2.JOB_STATUS_COMPLETED, attempt=1, result="x")
    expect(lambda: jobs.stub.UpdateJob(stale, metadata=worker), grpc.StatusCode.FAILED_PRECONDITION, "NOT_RUNNING")
    retrying = fail(jobs, secrets_dir, job.id, retryable=True, error="second")
    assert (retrying.status, retrying.attempts, retrying.error) == (jobs_pb2.JOB_STATUS_QUEUED, 2, "second")
    claim = jobs_pb2.UpdateJobRequest(id=job.id, status=jobs_pb2.JOB_STATUS_RUNNING, claim_id=str(uuid.uuid4()))
    assert jobs.stub.UpdateJob(claim, metadata=worker).job.attempts == 3
    done = jobs_pb2.UpdateJobRequest(id=job.id, status=jobs_pb2.JOB_STATUS_COMPLETED, attempt=3, result="x")
    completed = jobs.stub.UpdateJob(done, metadata=worker).job
    assert (completed.status, completed.result, completed.HasField("error")) == (
        jobs_pb2.JOB_STATUS_COMPLETED,
        "x",
        False,
    )
    expect(lambda: rerun(jobs, owner, job.id), grpc.StatusCode.FAILED_PRECONDITION, "JOB_NOT_FAILED")


def test_only_operators_list_dead_jobs(jobs: JobService, secrets_dir: Path) -> None:
    denied = grpc.StatusCode.PERMISSION_DENIED
    for metadata, reason in (
        (bearer(mint_token(secrets_dir)), "OPERATORS_ONLY"),
        (bearer(mint_token(secrets_dir, roles=["auditor"])), "OPERATORS_ONLY"),
        (worker_metadata(secrets_dir), "USERS_ONLY"),
    ):
        expect(lambda m=metadata: jobs.stub.ListDeadJobs(jobs_pb2.ListDeadJobsRequest(), metadata=m), denied, reason)
        expect(lambda m=metadata: jobs.stub.RerunDeadJobs(jobs_pb2.RerunDeadJobsRequest(), metadata=m), denied, reason)
    malformed = bearer(mint_token(secrets_dir, roles="operator"))
    expect(
        lambda: jobs.stub.ListDeadJobs(jobs_pb2.ListDeadJobsRequest(), metadata=malformed),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_TOKEN",
    )


def test_an_operator_lists_and_reruns_every_users_dead_jobs(jobs: JobService, secrets_dir: Path) -> None:
    operator = bearer(mint_token(secrets_dir, roles=OPERATOR))
    alice, bob = bearer(mint_token(secrets_dir)), bearer(mint_token(secrets_dir))
    dead = [
        dead_job(jobs, secrets_dir, alice, "uppercase_text"),
        dead_job(jobs, secrets_dir, bob, "uppercase_text"),
        dead_job(jobs, secrets_dir, alice, "reverse_string"),
        dead_job(jobs, secrets_dir, bob, "reverse_string"),
    ]

    # Most recently failed first, a page at a time, across owners.
    listed: list[jobs_pb2.Job] = []
    token = ""
    while True:
        request = jobs_pb2.ListDeadJobsRequest(page_size=2, page_token=token)
        page = jobs.stub.ListDeadJobs(request, metadata=operator)
        listed.extend(page.jobs)
        token = page.next_page_token
        if not token:
            break
    ids = [j.id for j in listed]
    assert ids[:4] == [j.id for j in reversed(dead)]  # nothing failed after them
    assert {j.owner_id for j in listed[:4]} == {dead[0].owner_id, dead[1].owner_id}
    assert all(j.status == jobs_pb2.JOB_STATUS_FAILED for j in listed)
    assert len(set(ids)) == len(ids)
    first = jobs.stub.ListDeadJobs(jobs_pb2.ListDeadJobsRequest(page_size=1), metadata=operator)
    other_filter = jobs_pb2.ListDeadJobsRequest(page_token=first.next_page_token, type="reverse_string")
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    expect(lambda: jobs.stub.ListDeadJobs(other_filter, metadata=operator), invalid, "INVALID_ARGUMENT", ["page_token"])
    for bad_request, field in (
        (jobs_pb2.ListDeadJobsRequest(page_size=501), "page_size"),
        (jobs_pb2.ListDeadJobsRequest(type="rm_rf"), "type"),
    ):
        expect(lambda r=bad_request: jobs.stub.ListDeadJobs(r, metadata=operator), invalid, "INVALID_ARGUMENT", [field])
    uppercase = jobs.stub.ListDeadJobs(jobs_pb2.ListDeadJobsRequest(type="uppercase_text"), metadata=operator).jobs
    assert [j.id for j in uppercase][:2] == [dead[1].id, dead[0].id]
    assert {j.type for j in uppercase} == {"uppercase_text"}

    # One of Bob's, by id; then every dead uppercase_text job; then all the rest.
    assert rerun(jobs, operator, dead[3].id).status == jobs_pb2.JOB_STATUS_QUEUED
    for bad_rerun, field in (
        (jobs_pb2.RerunDeadJobsRequest(max_attempts=11), "max_attempts"),
        (jobs_pb2.RerunDeadJobsRequest(type="rm_rf"), "type"),
    ):
        expect(lambda r=bad_rerun: jobs.stub.RerunDeadJobs(r, metadata=operator), invalid, "INVALID_ARGUMENT", [field])
    by_type = jobs_pb2.RerunDeadJobsRequest(type="uppercase_text", max_attempts=1)
    dead_uppercase = sum(j.type == "uppercase_text" for j in listed)
    assert jobs.stub.RerunDeadJobs(by_type, metadata=operator).rerun_count == dead_uppercase
    owners = [alice, bob, alice, bob]
    now = [jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=d.id), metadata=o).job for d, o in zip(dead, owners, strict=True)]
    queued, failed = jobs_pb2.JOB_STATUS_QUEUED, jobs_pb2.JOB_STATUS_FAILED
    assert [j.status for j in now] == [queued, queued, failed, queued]
    assert (now[0].attempts, now[0].max_attempts) == (1, 2)
    everything = jobs.stub.RerunDeadJobs(jobs_pb2.RerunDeadJobsRequest(), metadata=operator)
    assert everything.rerun_count == len(listed) - dead_uppercase - 1
    assert jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=dead[2].id), metadata=alice).job.status == queued
    assert jobs.stub.RerunDeadJobs(jobs_pb2.RerunDeadJobsRequest(), metadata=operator).rerun_count == 0
    assert list(jobs.stub.ListDeadJobs(jobs_pb2.ListDeadJobsRequest(), metadata=operator).jobs) == []

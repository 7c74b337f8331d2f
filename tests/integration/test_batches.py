"""The batch RPCs against a real job service: BatchCreateJobs, UpdateJobs, and CreateJob's group commit."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from jobqueue.jobs.v1 import delivery_pb2, jobs_pb2
from tests.integration.jobservice import JobService, create_job, expect, number, take_messages, text
from tests.support.clients import bearer, mint_token, worker_metadata
from tests.support.load import mixed

QUEUED = jobs_pb2.JOB_STATUS_QUEUED
RUNNING = jobs_pb2.JOB_STATUS_RUNNING
COMPLETED = jobs_pb2.JOB_STATUS_COMPLETED
FAILED = jobs_pb2.JOB_STATUS_FAILED


def _owned(jobs: JobService, token: str) -> list[jobs_pb2.Job]:
    page = jobs.stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=500), metadata=bearer(token))
    return list(page.jobs)


def test_a_batch_of_1000_jobs_is_stored_in_order_and_each_is_published_once(
    jobs: JobService, secrets_dir: Path, rabbitmq_url: str
) -> None:
    specs = mixed(1000)
    job_types = {s.type for s in specs}
    asyncio.run(take_messages(rabbitmq_url, jobs.queue, job_types, 10_000, timeout=0.5))  # earlier tests' messages
    requests = [jobs_pb2.CreateJobRequest(type=s.type, payload=s.value) for s in specs]
    token = mint_token(secrets_dir)
    reply = jobs.stub.BatchCreateJobs(jobs_pb2.BatchCreateJobsRequest(requests=requests), metadata=bearer(token))
    assert [(j.type, j.payload) for j in reply.jobs] == [(s.type, s.value) for s in specs]
    assert {j.status for j in reply.jobs} == {QUEUED}
    assert len({j.id for j in reply.jobs}) == 1000

    messages = asyncio.run(take_messages(rabbitmq_url, jobs.queue, job_types, 1001, timeout=5))
    delivered = [delivery_pb2.JobDelivery.FromString(m.body) for m in messages]
    assert sorted(d.job_id for d in delivered) == sorted(j.id for j in reply.jobs)
    by_id = {j.id: j for j in reply.jobs}
    assert all((d.type, d.payload) == (by_id[d.job_id].type, by_id[d.job_id].payload) for d in delivered)


def test_a_request_id_repeated_in_a_batch_or_across_calls_names_one_job(jobs: JobService, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    key, other = str(uuid.uuid4()), str(uuid.uuid4())
    first = jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("first"), request_id=key)
    again = jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("again"), request_id=key)
    fresh = jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("fresh"), request_id=other)
    batch = jobs_pb2.BatchCreateJobsRequest(requests=[first, fresh, again])
    a, b, c = jobs.stub.BatchCreateJobs(batch, metadata=bearer(token)).jobs
    assert a.id == c.id != b.id
    assert c.payload.string_value == "first"
    repeat = jobs.stub.BatchCreateJobs(batch, metadata=bearer(token)).jobs
    assert [j.id for j in repeat] == [a.id, b.id, a.id]
    single = jobs.stub.CreateJob(again, metadata=bearer(token)).job
    assert single.id == a.id
    assert len(_owned(jobs, token)) == 2


def test_one_bad_job_refuses_the_whole_batch_naming_each_bad_field(jobs: JobService, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    good = jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("fine"))
    requests = [
        good,
        jobs_pb2.CreateJobRequest(type="fibonacci_calc", payload=text("ten")),
        good,
        jobs_pb2.CreateJobRequest(type="nope", payload=text("x")),
        jobs_pb2.CreateJobRequest(type="fibonacci_calc", payload=number(5), max_attempts=11),
    ]
    expect(
        lambda: jobs.stub.BatchCreateJobs(jobs_pb2.BatchCreateJobsRequest(requests=requests), metadata=bearer(token)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        ["requests[1].payload", "requests[3].type", "requests[4].max_attempts"],
    )
    for size in (0, 1001):
        expect(
            lambda n=size: jobs.stub.BatchCreateJobs(
                jobs_pb2.BatchCreateJobsRequest(requests=[good] * n), metadata=bearer(token)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            ["requests"],
        )
    assert _owned(jobs, token) == []  # nothing of any refused batch was stored
    expect(
        lambda: jobs.stub.BatchCreateJobs(
            jobs_pb2.BatchCreateJobsRequest(requests=[good]), metadata=worker_metadata(secrets_dir)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "USERS_ONLY",
    )


def test_concurrent_create_job_calls_share_transactions_and_each_gets_its_own_job(
    jobs: JobService, secrets_dir: Path
) -> None:
    token = mint_token(secrets_dir)
    key = str(uuid.uuid4())

    def create(i: int) -> jobs_pb2.Job:
        # Every fifth call repeats one request_id: those must all get the same job.
        request_id = key if i % 5 == 0 else ""
        request = jobs_pb2.CreateJobRequest(type="reverse_string", payload=text(f"job {i}"), request_id=request_id)
        return jobs.stub.CreateJob(request, metadata=bearer(token)).job

    with ThreadPoolExecutor(32) as pool:
        created = list(pool.map(create, range(200)))
    repeated = {created[i].id for i in range(0, 200, 5)}
    assert len(repeated) == 1
    assert all(created[i].payload.string_value == f"job {i}" for i in range(200) if i % 5)
    assert len({j.id for j in created}) == 161
    assert len(_owned(jobs, token)) == 161


def test_update_jobs_answers_each_report_as_update_job_would(jobs: JobService, secrets_dir: Path) -> None:
    worker = worker_metadata(secrets_dir)
    token = mint_token(secrets_dir)
    a, b, c = (create_job(jobs, token, "reverse_string", text(s)).id for s in ("abc", "de", "f"))
    claim_a, claim_a2, claim_b = (str(uuid.uuid4()) for _ in range(3))
    unknown = str(uuid.uuid4())

    def report(job_id: str, status: jobs_pb2.JobStatus.ValueType, **fields: object) -> jobs_pb2.UpdateJobRequest:
        return jobs_pb2.UpdateJobRequest(id=job_id, status=status, **fields)  # type: ignore[arg-type]

    first = jobs.stub.UpdateJobs(
        jobs_pb2.UpdateJobsRequest(
            requests=[
                report(a, RUNNING, claim_id=claim_a),
                report(b, RUNNING, claim_id=claim_b),
                report(a, RUNNING, claim_id=claim_a2),  # a second delivery of a takes it over: attempt 2
                report(c, COMPLETED, attempt=1, result="f"),  # never started
                report(unknown, RUNNING, claim_id=claim_b),
                report(b, COMPLETED, attempt=1),  # no result: malformed
                report(b, FAILED, attempt=1, error="boom", retryable=True),
            ]
        ),
        metadata=worker,
    ).results
    ok, not_found, invalid, failed_precondition = 0, 5, 3, 9
    assert [(r.code, r.job_status, r.attempts) for r in first] == [
        (ok, RUNNING, 1),
        (ok, RUNNING, 1),
        (ok, RUNNING, 2),
        (failed_precondition, 0, 0),
        (not_found, 0, 0),
        (invalid, 0, 0),
        (ok, QUEUED, 1),  # retryable with attempts left: back to QUEUED
    ]
    assert "has not been started" in first[3].message
    assert "result" in first[5].message

    second = jobs.stub.UpdateJobs(
        jobs_pb2.UpdateJobsRequest(
            requests=[
                report(a, COMPLETED, attempt=1, result="stale"),
                report(a, COMPLETED, attempt=2, result="cba"),
                report(a, COMPLETED, attempt=2, result="cba"),  # a repeat is harmless
            ]
        ),
        metadata=worker,
    ).results
    assert [(r.code, r.job_status) for r in second] == [(failed_precondition, 0), (ok, COMPLETED), (ok, COMPLETED)]
    done = jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=a), metadata=bearer(token)).job
    assert (done.status, done.result, done.attempts) == (COMPLETED, "cba", 2)

    claim = report(c, RUNNING, claim_id=claim_b)
    for metadata, code in ((bearer(token), grpc.StatusCode.PERMISSION_DENIED), ((), grpc.StatusCode.UNAUTHENTICATED)):
        expect(lambda m=metadata: jobs.stub.UpdateJobs(jobs_pb2.UpdateJobsRequest(requests=[claim]), metadata=m), code)
    for size in (0, 1001):
        expect(
            lambda n=size: jobs.stub.UpdateJobs(jobs_pb2.UpdateJobsRequest(requests=[claim] * n), metadata=worker),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            ["requests"],
        )
    untouched = jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=c), metadata=bearer(token)).job
    assert (untouched.status, untouched.attempts) == (QUEUED, 0)

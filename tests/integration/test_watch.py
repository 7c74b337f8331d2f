"""WatchJob and WatchJobs through the real job service (`python -m job_svc`), PostgreSQL and a second replica.

The test plays the worker (UpdateJob with the worker token) so that each change is made exactly
when the test says; the job's owner watches, as a client would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from jobqueue.client import JobQueueError
from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from tests.integration.jobservice import JobService, create_job, expect, number, text
from tests.support.clients import bearer, error_info, mint_token, worker_metadata
from tests.support.processes import ServiceProcess, start_service

QUEUED = jobs_pb2.JOB_STATUS_QUEUED
RUNNING = jobs_pb2.JOB_STATUS_RUNNING
COMPLETED = jobs_pb2.JOB_STATUS_COMPLETED
CANCELLED = jobs_pb2.JOB_STATUS_CANCELLED
GRPCURL = Path(sys.executable).parent / "grpcurl"
#: Every stream a test opens ends by then at the latest, so a test that waits for a message fails
#: (DEADLINE_EXCEEDED) instead of hanging.
STREAM_SECONDS = 60


class Worker:
    """Reports on jobs as a worker does: claims, progress, outcomes."""

    def __init__(self, stub: jobs_pb2_grpc.JobServiceStub, secrets_dir: Path) -> None:
        self.stub = stub
        self.metadata = worker_metadata(secrets_dir)

    def claim(self, job_id: str) -> tuple[str, int]:
        claim_id = str(uuid.uuid4())
        job = self.stub.UpdateJob(
            jobs_pb2.UpdateJobRequest(id=job_id, status=RUNNING, claim_id=claim_id), metadata=self.metadata
        ).job
        return claim_id, job.attempts

    def note(self, job_id: str, claim_id: str, fraction: float) -> None:
        progress = jobs_pb2.JobProgress(fraction=fraction, message=f"{fraction:.0%}")
        self.stub.UpdateJob(
            jobs_pb2.UpdateJobRequest(id=job_id, status=RUNNING, claim_id=claim_id, progress=progress),
            metadata=self.metadata,
        )

    def complete(self, job_id: str, attempt: int, result: str = "done") -> None:
        self.stub.UpdateJob(
            jobs_pb2.UpdateJobRequest(id=job_id, status=COMPLETED, attempt=attempt, result=result),
            metadata=self.metadata,
        )

    def run(self, job_id: str) -> None:
        _, attempt = self.claim(job_id)
        self.complete(job_id, attempt)


@pytest.fixture(scope="module")
def replica(jobs: JobService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A second job service on the same database and queue, with small watch limits."""
    env = {name: value for name, value in jobs.process_env.items() if name != "JOB_PORT"}
    process = start_service(
        "job_svc",
        {**env, "MAX_WATCHES_PER_USER": "3", "MAX_WATCH_BACKLOG": "100"},
        tmp_path_factory.mktemp("logs") / "job_svc-2.log",
    )
    yield process
    assert process.stop() == 0, process.output()


@pytest.fixture(scope="module")
def replica_stub(replica: ServiceProcess) -> Iterator[jobs_pb2_grpc.JobServiceStub]:
    with grpc.insecure_channel(replica.address) as channel:
        yield jobs_pb2_grpc.JobServiceStub(channel)


def watch_job(stub: jobs_pb2_grpc.JobServiceStub, token: str, job_id: str) -> Any:
    return stub.WatchJob(jobs_pb2.WatchJobRequest(id=job_id), metadata=bearer(token), timeout=STREAM_SECONDS)


def watch_jobs(stub: jobs_pb2_grpc.JobServiceStub, token: str, **fields: Any) -> Any:
    stream = stub.WatchJobs(jobs_pb2.WatchJobsRequest(**fields), metadata=bearer(token), timeout=STREAM_SECONDS)
    assert list(next(stream).jobs) == []  # begun
    return stream


def collect(stream: Any, job_ids: set[str], until: int = COMPLETED) -> dict[str, jobs_pb2.Job]:
    """Read WatchJobs batches until every job of ``job_ids`` was seen in status ``until``; the last state of each."""
    seen: dict[str, jobs_pb2.Job] = {}
    while not all(job_id in seen and seen[job_id].status == until for job_id in job_ids):
        for job in next(stream).jobs:
            seen[job.id] = job
    return seen


def test_watch_job_sends_the_job_then_each_change_until_it_is_final(jobs: JobService, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    worker = Worker(jobs.stub, secrets_dir)
    job = create_job(jobs, token, "reverse_string", text("abc"))
    stream = watch_job(jobs.stub, token, job.id)
    first = next(stream).job
    assert (first.id, first.status, first.payload.string_value) == (job.id, QUEUED, "abc")
    claim_id, attempt = worker.claim(job.id)
    assert next(stream).job.status == RUNNING
    worker.note(job.id, claim_id, 0.5)
    noted = next(stream).job
    assert (noted.status, noted.progress.fraction, noted.progress.message) == (RUNNING, 0.5, "50%")
    worker.complete(job.id, attempt, "cba")
    last = next(stream).job
    assert (last.status, last.result) == (COMPLETED, "cba")
    with pytest.raises(StopIteration):
        next(stream)  # the stream ends OK once the job is final
    assert stream.code() == grpc.StatusCode.OK


def test_watch_job_of_a_finished_job_sends_it_once_and_ends(jobs: JobService, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    job = create_job(jobs, token, "reverse_string", text("abc"))
    jobs.stub.CancelJob(jobs_pb2.CancelJobRequest(id=job.id), metadata=bearer(token))
    assert [reply.job.status for reply in watch_job(jobs.stub, token, job.id)] == [CANCELLED]


def test_watch_job_of_an_unknown_or_anothers_job_is_not_found(jobs: JobService, secrets_dir: Path) -> None:
    owner, stranger = mint_token(secrets_dir), mint_token(secrets_dir)
    job = create_job(jobs, owner, "reverse_string", text("abc"))
    for token, job_id in ((stranger, job.id), (owner, str(uuid.uuid4()))):
        expect(lambda t=token, j=job_id: next(watch_job(jobs.stub, t, j)), grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
    expect(lambda: next(watch_job(jobs.stub, owner, "nope")), grpc.StatusCode.INVALID_ARGUMENT, fields=["id"])
    expect(lambda: next(watch_job(jobs.stub, "", job.id)), grpc.StatusCode.UNAUTHENTICATED)


def test_watch_jobs_begins_empty_then_sends_only_the_callers_changes(jobs: JobService, secrets_dir: Path) -> None:
    token, other = mint_token(secrets_dir), mint_token(secrets_dir)
    worker = Worker(jobs.stub, secrets_dir)
    stream = watch_jobs(jobs.stub, token)
    create_job(jobs, other, "reverse_string", text("not yours"))
    mine = [create_job(jobs, token, "reverse_string", text(f"job {i}")) for i in range(3)]
    for job in mine:
        worker.run(job.id)
    seen = collect(stream, {job.id for job in mine})
    assert set(seen) == {job.id for job in mine}  # never the other user's job
    stream.cancel()


def test_watch_jobs_filters_by_type_and_sends_a_job_leaving_the_status_once(
    jobs: JobService, secrets_dir: Path
) -> None:
    token = mint_token(secrets_dir)
    worker = Worker(jobs.stub, secrets_dir)
    stream = watch_jobs(jobs.stub, token, status=RUNNING, type="uppercase_text")
    create_job(jobs, token, "reverse_string", text("other type"))
    job = create_job(jobs, token, "uppercase_text", text("abc"))  # QUEUED: not sent
    _, attempt = worker.claim(job.id)
    assert [(j.id, j.status) for j in next(stream).jobs] == [(job.id, RUNNING)]
    worker.complete(job.id, attempt)
    # It left RUNNING: sent once more, as it is now, so a view can drop it.
    assert [(j.id, j.status) for j in next(stream).jobs] == [(job.id, COMPLETED)]
    stream.cancel()
    expect(
        lambda: next(watch_jobs(jobs.stub, token, type="no_such_type")),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields=["type"],
    )


def test_watching_every_users_jobs_is_for_operators(jobs: JobService, secrets_dir: Path) -> None:
    user, operator = mint_token(secrets_dir), mint_token(secrets_dir, roles=["operator"])
    expect(lambda: next(watch_jobs(jobs.stub, user, all_users=True)), grpc.StatusCode.PERMISSION_DENIED)
    stream = watch_jobs(jobs.stub, operator, all_users=True, type="fibonacci_calc")
    job = create_job(jobs, user, "fibonacci_calc", number(7))
    assert job.id in {j.id for j in next(stream).jobs}
    stream.cancel()


def test_a_watcher_on_one_replica_sees_changes_made_through_another(
    jobs: JobService, replica_stub: jobs_pb2_grpc.JobServiceStub, secrets_dir: Path
) -> None:
    token = mint_token(secrets_dir)
    worker = Worker(jobs.stub, secrets_dir)  # reports through the first replica
    job = create_job(jobs, token, "reverse_string", text("abc"))
    one = watch_job(replica_stub, token, job.id)
    many = watch_jobs(replica_stub, token)
    assert next(one).job.status == QUEUED
    worker.run(job.id)
    statuses = [reply.job.status for reply in one]
    assert statuses[-1] == COMPLETED
    assert collect(many, {job.id})[job.id].result == "done"
    many.cancel()


def test_no_change_is_lost_between_the_snapshot_and_the_stream(
    jobs: JobService, replica_stub: jobs_pb2_grpc.JobServiceStub, secrets_dir: Path
) -> None:
    # Watches open on one replica at every moment of a job's life, changed through the other: each
    # must end with the final state (a change lost between its snapshot and its stream would leave it
    # waiting until its deadline). And a WatchJobs that has begun sees every job created after.
    token = mint_token(secrets_dir)
    worker = Worker(jobs.stub, secrets_dir)
    for _ in range(5):
        job = create_job(jobs, token, "reverse_string", text("abc"))

        def open_and_follow(job_id: str = job.id) -> int:
            stream = watch_job(replica_stub, token, job_id)
            return int([reply.job.status for reply in stream][-1])

        with ThreadPoolExecutor(3) as pool:
            watchers = [pool.submit(open_and_follow) for _ in range(3)]
            claim_id, attempt = worker.claim(job.id)
            for step in range(1, 10):
                worker.note(job.id, claim_id, step / 10)
            worker.complete(job.id, attempt)
            assert [w.result(timeout=STREAM_SECONDS) for w in watchers] == [COMPLETED] * 3

    stream = watch_jobs(jobs.stub, token, status=QUEUED)
    batch = replica_stub.BatchCreateJobs(
        jobs_pb2.BatchCreateJobsRequest(
            requests=[jobs_pb2.CreateJobRequest(type="reverse_string", payload=text(str(i))) for i in range(200)]
        ),
        metadata=bearer(token),
    ).jobs
    assert set(collect(stream, {job.id for job in batch}, until=QUEUED)) >= {job.id for job in batch}
    stream.cancel()


def test_a_reader_that_falls_behind_is_aborted_and_never_slows_the_service(
    replica_stub: jobs_pb2_grpc.JobServiceStub, jobs: JobService, secrets_dir: Path
) -> None:
    # The replica keeps at most 100 changed jobs for a reader (MAX_WATCH_BACKLOG). Large payloads
    # fill the transport's buffers first, so that the service itself has to hold what is not read.
    token = mint_token(secrets_dir)
    stream = watch_jobs(replica_stub, token)  # and then not read while 400 jobs of 40 KB are created
    big = text("x" * 40_000)
    for _ in range(20):
        jobs.stub.BatchCreateJobs(
            jobs_pb2.BatchCreateJobsRequest(
                requests=[jobs_pb2.CreateJobRequest(type="reverse_string", payload=big) for _ in range(20)]
            ),
            metadata=bearer(token),
        )
    # The replica answers others meanwhile, as before.
    other = mint_token(secrets_dir)
    replica_stub.GetJob(
        jobs_pb2.GetJobRequest(id=create_job(jobs, other, "reverse_string", text("still served")).id),
        metadata=bearer(other),
        timeout=10,
    )
    with pytest.raises(grpc.RpcError) as caught:
        list(stream)
    code, reason, _ = error_info(caught.value)
    assert (code, reason) == (grpc.StatusCode.ABORTED, "WATCH_FELL_BEHIND")


def test_watches_are_bounded_per_user(replica_stub: jobs_pb2_grpc.JobServiceStub, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    held = [watch_jobs(replica_stub, token) for _ in range(3)]  # MAX_WATCHES_PER_USER=3 on the replica
    with pytest.raises(grpc.RpcError) as caught:
        next(watch_jobs(replica_stub, token))
    assert error_info(caught.value)[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_WATCHES")
    assert JobQueueError.from_rpc_error(caught.value).retry_after == 5
    # Another user is not affected, and a closed watch frees its place.
    watch_jobs(replica_stub, mint_token(secrets_dir)).cancel()
    held.pop().cancel()
    deadline = time.monotonic() + 10
    while True:
        try:
            held.append(watch_jobs(replica_stub, token))
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "a cancelled watch did not free its place"
            time.sleep(0.1)
    for stream in held:
        stream.cancel()


def test_a_broken_feed_ends_watches_unavailable_and_the_next_watch_works(
    jobs: JobService, secrets_dir: Path, database_url: str
) -> None:
    token = mint_token(secrets_dir)
    job = create_job(jobs, token, "reverse_string", text("abc"))
    stream = watch_job(jobs.stub, token, job.id)
    assert next(stream).job.status == QUEUED

    async def cut_listeners() -> int:
        # As the database superuser, end the job service's listening connection (its LISTEN).
        owner_url = database_url
        connection = await asyncpg.connect(owner_url)
        try:
            return len(
                await connection.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = 'jobqueue-watch-feed'"
                )
            )
        finally:
            await connection.close()

    assert asyncio.run(cut_listeners()) >= 1
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)
    assert error_info(caught.value)[:2] == (grpc.StatusCode.UNAVAILABLE, "WATCH_INTERRUPTED")
    again = watch_job(jobs.stub, token, job.id)
    assert next(again).job.status == QUEUED
    Worker(jobs.stub, secrets_dir).run(job.id)
    assert [reply.job.status for reply in again][-1] == COMPLETED


def test_grpcurl_prints_a_watched_job_until_it_completes(jobs: JobService, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    job = create_job(jobs, token, "reverse_string", text("abc"))
    command = [
        str(GRPCURL),
        "-plaintext",
        "-H",
        f"authorization: Bearer {token}",
        "-d",
        json.dumps({"id": job.id}),
        jobs.address,
        "jobqueue.jobs.v1.JobService/WatchJob",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as grpcurl:
        assert grpcurl.stdout is not None
        first = grpcurl.stdout.readline()  # grpcurl prints each message as it comes
        assert first.strip() == "{"
        Worker(jobs.stub, secrets_dir).run(job.id)
        out = grpcurl.stdout.read()  # through the same buffer readline used (communicate() would not)
        assert grpcurl.wait(timeout=STREAM_SECONDS) == 0, grpcurl.stderr.read() if grpcurl.stderr else ""
    messages, text_left, decoder = [], (first + out).strip(), json.JSONDecoder()
    while text_left:
        message, end = decoder.raw_decode(text_left)
        messages.append(message)
        text_left = text_left[end:].strip()
    assert [m["job"]["status"] for m in messages] == ["JOB_STATUS_QUEUED", "JOB_STATUS_RUNNING", "JOB_STATUS_COMPLETED"]
    assert messages[-1]["job"]["result"] == "done"


def test_a_stopping_service_ends_its_watches_at_once(
    jobs: JobService, secrets_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {name: value for name, value in jobs.process_env.items() if name != "JOB_PORT"}
    # A long grace for calls in flight, which the watch must not be held for.
    env["SHUTDOWN_GRACE_SECONDS"] = "30"
    process = start_service("job_svc", env, tmp_path_factory.mktemp("logs") / "job_svc-stopping.log")
    token = mint_token(secrets_dir)
    job = create_job(jobs, token, "reverse_string", text("abc"))
    with grpc.insecure_channel(process.address) as channel:
        stream = watch_job(jobs_pb2_grpc.JobServiceStub(channel), token, job.id)
        assert next(stream).job.status == QUEUED
        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as caught:
            next(stream)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # Not held for the grace period that calls in flight get.
        assert time.monotonic() - started < 15
    assert process.stop() == 0, process.output()


def test_every_kind_of_change_is_announced(jobs: JobService, secrets_dir: Path) -> None:
    # Each statement that changes jobs announces itself (job_svc/store.py _announce): a lease that ran
    # out, a retry that fell due, a failure and a re-run reach a watcher like a claim does.
    token = mint_token(secrets_dir)
    worker = Worker(jobs.stub, secrets_dir)
    stream = watch_jobs(jobs.stub, token)
    job = jobs.stub.CreateJob(
        jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("abc"), max_attempts=2, timeout_seconds=1),
        metadata=bearer(token),
    ).job
    seen: list[jobs_pb2.Job] = []

    def until(done: Callable[[jobs_pb2.Job], bool]) -> jobs_pb2.Job:
        while True:
            batch: jobs_pb2.WatchJobsResponse = next(stream)
            for changed in batch.jobs:
                if changed.id == job.id:
                    seen.append(changed)
                    if done(changed):
                        return changed

    until(lambda j: j.status == QUEUED)  # created
    worker.claim(job.id)  # and never reported: the lease (1 s + LEASE_GRACE_SECONDS) runs out
    lost = until(lambda j: j.status == QUEUED and j.attempts == 1)
    assert "timed out" in lost.error
    if lost.HasField("next_attempt_at"):  # unless both changes came in one batch
        until(lambda j: j.status == QUEUED and not j.HasField("next_attempt_at"))  # the retry fell due
    _, attempt = worker.claim(job.id)
    jobs.stub.UpdateJob(
        jobs_pb2.UpdateJobRequest(id=job.id, status=jobs_pb2.JOB_STATUS_FAILED, attempt=attempt, error="no"),
        metadata=worker.metadata,
    )
    until(lambda j: j.status == jobs_pb2.JOB_STATUS_FAILED)
    jobs.stub.RerunJob(jobs_pb2.RerunJobRequest(id=job.id), metadata=bearer(token))
    rerun = until(lambda j: j.status == QUEUED and j.max_attempts > 2)
    assert rerun.attempts == 2
    stream.cancel()

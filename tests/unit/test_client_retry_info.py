"""The client library honours RetryInfo: a limit's refusal is retried no sooner than it says, or raised.

A real grpc.aio server on a free port plays an auth service, or a job service, that refuses the first calls.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2

from job_svc.errors import TooManyJobs
from jobqueue.auth.v1 import auth_pb2, auth_pb2_grpc
from jobqueue.client import MAX_HONOURED_RETRY_AFTER, JobQueueError, connect_auth, connect_jobs
from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from jobqueue.runtime.errors import ResourceExhausted
from jobqueue.runtime.server import status_for


class RefusingAuth(auth_pb2_grpc.AuthServiceServicer):
    """Refuses the first ``refusals`` Logins with RESOURCE_EXHAUSTED and a RetryInfo of ``retry_after``."""

    def __init__(self) -> None:
        self.refusals = 0
        self.retry_after = 0.0
        self.calls: list[float] = []

    async def Login(self, request: auth_pb2.LoginRequest, context: Any) -> auth_pb2.LoginResponse:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.refusals:
            status = status_for(ResourceExhausted("busy", reason="HASHING_BUSY", retry_after=self.retry_after))
            await context.abort(status.code, status.details, status.trailing_metadata)
        return auth_pb2.LoginResponse(access_token="token")

    async def Register(self, request: auth_pb2.RegisterRequest, context: Any) -> auth_pb2.RegisterResponse:
        raise NotImplementedError


@pytest.fixture
async def auth() -> AsyncIterator[tuple[RefusingAuth, str]]:
    servicer = RefusingAuth()
    server = grpc.aio.server()
    auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


async def test_a_refusal_with_retry_info_is_retried_after_the_delay(auth: tuple[RefusingAuth, str]) -> None:
    servicer, address = auth
    servicer.refusals, servicer.retry_after = 2, 0.3
    async with connect_auth(address) as client:
        assert await client.login("a@example.com", "correct horse battery") == "token"
    gaps = [later - earlier for earlier, later in zip(servicer.calls, servicer.calls[1:], strict=False)]
    assert len(servicer.calls) == 3
    assert all(gap >= 0.3 for gap in gaps), gaps


async def test_a_refusal_asking_for_longer_is_raised_at_once_with_its_delay(auth: tuple[RefusingAuth, str]) -> None:
    servicer, address = auth
    servicer.refusals, servicer.retry_after = 1, MAX_HONOURED_RETRY_AFTER + 50
    async with connect_auth(address) as client:
        with pytest.raises(JobQueueError) as caught:
            await client.login("a@example.com", "correct horse battery")
    assert len(servicer.calls) == 1
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.reason == "HASHING_BUSY"
    assert caught.value.retry_after == pytest.approx(MAX_HONOURED_RETRY_AFTER + 50)


def test_retry_info_is_decoded_from_a_status() -> None:
    sent = status_for(ResourceExhausted("slow down", retry_after=2.5))
    [details] = [value for key, value in sent.trailing_metadata if key == "grpc-status-details-bin"]
    error = JobQueueError.from_status(status_pb2.Status.FromString(details))
    assert (error.code, error.retry_after) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 2.5)


class RefusingJobs(jobs_pb2_grpc.JobServiceServicer):
    """Refuses the first CreateJob and the first BatchCreateJobs as the job service's rate limit does."""

    def __init__(self) -> None:
        self.creates: list[tuple[float, str]] = []
        self.batches: list[tuple[float, list[str]]] = []

    async def _refuse_first(self, calls: int, context: Any) -> None:
        if calls == 1:
            status = status_for(TooManyJobs("too many jobs submitted; retry later", retry_after=0.3))
            await context.abort(status.code, status.details, status.trailing_metadata)

    def _job(self, request: jobs_pb2.CreateJobRequest) -> jobs_pb2.Job:
        return jobs_pb2.Job(id=request.request_id, type=request.type, status=jobs_pb2.JOB_STATUS_QUEUED)

    async def CreateJob(self, request: jobs_pb2.CreateJobRequest, context: Any) -> jobs_pb2.CreateJobResponse:
        self.creates.append((time.monotonic(), request.request_id))
        await self._refuse_first(len(self.creates), context)
        return jobs_pb2.CreateJobResponse(job=self._job(request))

    async def BatchCreateJobs(
        self, request: jobs_pb2.BatchCreateJobsRequest, context: Any
    ) -> jobs_pb2.BatchCreateJobsResponse:
        self.batches.append((time.monotonic(), [r.request_id for r in request.requests]))
        await self._refuse_first(len(self.batches), context)
        return jobs_pb2.BatchCreateJobsResponse(jobs=[self._job(r) for r in request.requests])


async def test_submissions_refused_for_a_job_limit_are_sent_again_after_the_retry_info() -> None:
    servicer = RefusingJobs()  # type: ignore[abstract]  # only the two submitting methods are called
    server = grpc.aio.server()
    jobs_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with connect_jobs(f"127.0.0.1:{port}", token="token") as client:
            job = await client.submit("reverse_string", "abc")
            jobs = await client.submit_many([("reverse_string", "a"), ("reverse_string", "b")])
    finally:
        await server.stop(None)
    assert len(servicer.creates) == len(servicer.batches) == 2
    (refused_at, refused_id), (sent_at, sent_id) = servicer.creates
    assert sent_at - refused_at >= 0.3
    assert refused_id == sent_id == job.id  # the same request_id: a repeat could never create a second job
    (refused_at, refused_ids), (sent_at, sent_ids) = servicer.batches
    assert sent_at - refused_at >= 0.3
    assert refused_ids == sent_ids == [j.id for j in jobs]

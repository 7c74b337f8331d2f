"""submit_many sends CreateJobRequests with their own options, BATCH_SIZE to a call.

A real grpc.aio server on a free port plays a job service that records each BatchCreateJobs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from jobqueue.client import BATCH_SIZE, JobPriority, JobsClient, connect_jobs, to_value
from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc


class RecordingJobs(jobs_pb2_grpc.JobServiceServicer):
    """Stores every batch it is sent, and answers with a job per request (its id the request's id)."""

    def __init__(self) -> None:
        self.batches: list[list[jobs_pb2.CreateJobRequest]] = []

    async def BatchCreateJobs(
        self, request: jobs_pb2.BatchCreateJobsRequest, context: Any
    ) -> jobs_pb2.BatchCreateJobsResponse:
        self.batches.append(list(request.requests))
        jobs = [jobs_pb2.Job(id=r.request_id, type=r.type, status=jobs_pb2.JOB_STATUS_QUEUED) for r in request.requests]
        return jobs_pb2.BatchCreateJobsResponse(jobs=jobs)


@pytest.fixture
async def service() -> AsyncIterator[tuple[RecordingJobs, JobsClient]]:
    servicer = RecordingJobs()  # type: ignore[abstract]  # only BatchCreateJobs is called
    server = grpc.aio.server()
    jobs_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with connect_jobs(f"127.0.0.1:{port}", token="token") as client:
        yield servicer, client
    await server.stop(None)


async def test_requests_keep_their_own_options_and_tuples_take_the_keyword_ones(
    service: tuple[RecordingJobs, JobsClient],
) -> None:
    servicer, client = service
    own = jobs_pb2.CreateJobRequest(
        type="t",
        payload=to_value("a"),
        priority=jobs_pb2.JOB_PRIORITY_HIGH,
        max_attempts=2,
        timeout_seconds=9,
        request_id="0b6c8e5e-3f0c-4a53-9c1e-1f3f6a0c2d11",
    )
    bare = jobs_pb2.CreateJobRequest(type="t", payload=to_value("b"))
    jobs = await client.submit_many([own, bare, ("t", "c")], priority=JobPriority.LOW, max_attempts=7)
    [sent] = servicer.batches
    assert sent[0] == own  # as given: the keyword options are for the (type, payload) items
    assert (sent[1].priority, sent[1].max_attempts, sent[1].request_id != "") == (0, 0, True)
    assert (sent[2].priority, sent[2].max_attempts) == (jobs_pb2.JOB_PRIORITY_LOW, 7)
    assert [job.id for job in jobs] == [r.request_id for r in sent]
    assert bare.request_id == ""  # the caller's message is not changed


async def test_requests_go_batch_size_to_a_call(service: tuple[RecordingJobs, JobsClient]) -> None:
    servicer, client = service
    requests = [jobs_pb2.CreateJobRequest(type="t", payload=to_value(i)) for i in range(BATCH_SIZE * 2 + 1)]
    jobs = await client.submit_many(requests)
    assert [len(batch) for batch in servicer.batches] == [BATCH_SIZE, BATCH_SIZE, 1]
    assert len({job.id for job in jobs}) == len(requests)

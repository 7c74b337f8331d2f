"""The dashboard's one door to the system: the client library (``jobqueue.client`` and its stubs), nothing else.

Two channels are opened at start and shared by every browser: one to the auth
service, one to the job service. Each request makes a ``JobsClient`` on the
shared job channel with its session's token (a stub and the token's metadata:
nothing to open or close). Calls the client library has no paged form of
(one page of ListJobs or ListDeadJobs with a page token) go through its
generated stub with the client's own metadata, and their errors are turned into
``JobQueueError`` as the library's are; the rest are the client's own methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from jobqueue.client import AuthClient, Job, JobQueueError, JobsClient, JobStatus
from jobqueue.jobs.v1 import jobs_pb2

#: Seconds each unary call may take: a page waits on it, and a person waits on the page.
CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Page:
    """One page of jobs and the token of the next (empty on the last page)."""

    jobs: list[Job]
    next_token: str


class Backend:
    """The channels to the auth and job services, and the calls the pages make."""

    def __init__(self, auth_address: str, job_address: str, credentials: grpc.ChannelCredentials | None) -> None:
        # Inside the running loop (a grpc.aio channel belongs to the loop it was made in).
        self._auth_channel = _channel(auth_address, credentials)
        self._job_channel = _channel(job_address, credentials)
        self._auth = AuthClient(self._auth_channel, call_timeout=CALL_TIMEOUT)

    async def login(self, email: str, password: str) -> str:
        """An access token; JobQueueError UNAUTHENTICATED for a wrong email or password."""
        # One try: a refusal for a limit is the person's to see, not ours to wait out.
        return await self._auth.login(email, password, attempts=1)

    def jobs(self, token: str) -> JobsClient:
        """A client of the job service that sends ``token``; nothing to close (the channel is shared)."""
        return JobsClient(self._job_channel, token=token, call_timeout=CALL_TIMEOUT)

    async def page(
        self, jobs: JobsClient, *, status: JobStatus, job_type: str, page_token: str, page_size: int
    ) -> Page:
        """One page of the caller's jobs, newest first."""
        request = jobs_pb2.ListJobsRequest(
            page_size=page_size, page_token=page_token, status=jobs_pb2.JobStatus.ValueType(int(status)), type=job_type
        )
        reply: jobs_pb2.ListJobsResponse = await _unary(jobs, jobs.stub.ListJobs, request)
        return Page([Job.from_proto(job) for job in reply.jobs], reply.next_page_token)

    async def dead_page(self, jobs: JobsClient, *, job_type: str, page_token: str, page_size: int) -> Page:
        """One page of every user's dead jobs, most recently failed first (operators only)."""
        request = jobs_pb2.ListDeadJobsRequest(page_size=page_size, page_token=page_token, type=job_type)
        reply: jobs_pb2.ListDeadJobsResponse = await _unary(jobs, jobs.stub.ListDeadJobs, request)
        return Page([Job.from_proto(job) for job in reply.jobs], reply.next_page_token)

    async def close(self) -> None:
        """Close both channels; calls in flight are cancelled."""
        await self._auth_channel.close(None)
        await self._job_channel.close(None)


async def _unary(jobs: JobsClient, method: Any, request: Any) -> Any:
    try:
        return await method(request, metadata=jobs.metadata, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        raise JobQueueError.from_rpc_error(error) from error


def _channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, credentials)

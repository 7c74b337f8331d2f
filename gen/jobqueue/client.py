"""The short path to the Job Queue Processor from Python: connect, log in, submit, wait.

The generated stubs (``jobqueue.auth.v1``, ``jobqueue.jobs.v1``) are the full
API; this module adds only what every caller would otherwise write again: the
``authorization`` metadata, payload conversion to ``google.protobuf.Value``,
paging, polling for a final status, and one exception type that carries the
gRPC code together with the decoded ``google.rpc`` details.

It is asyncio-first (``grpc.aio``): the services are grpc.aio servers, and the
typical client submits many jobs and waits on them concurrently
(``asyncio.gather(*(jobs.submit_and_wait(...) for ...))``), which a blocking
client could only do with a thread per job. A blocking program can still wrap
one coroutine in ``asyncio.run``, or use the generated stubs on a
``grpc.insecure_channel`` with :func:`auth_metadata`.

Example::

    import asyncio

    import grpc
    from jobqueue.client import JobQueueError, connect_auth, connect_jobs


    async def main() -> None:
        async with connect_auth("localhost:5001") as auth:
            try:
                await auth.register("ada@example.com", "correct horse battery", "Ada")
            except JobQueueError as error:
                if error.code != grpc.StatusCode.ALREADY_EXISTS:
                    raise
            token = await auth.login("ada@example.com", "correct horse battery")

        async with connect_jobs("localhost:5002", token=token) as jobs:
            job = await jobs.submit_and_wait("fibonacci_calc", 10, timeout=30)
            print(job.result)  # "55"
            async for job in jobs.list(job_type="fibonacci_calc"):
                print(job.id, job.status)


    asyncio.run(main())

Errors: every call raises :class:`JobQueueError` when the service refuses it;
``e.code`` is the ``grpc.StatusCode``, ``e.reason`` the ``ErrorInfo`` reason and
``e.field_violations`` the ``BadRequest`` violations, e.g.
``(FieldViolation(field="payload", description="must be a string"),)``.
Payloads the API could never accept (a bool, an int JSON cannot carry exactly)
are refused locally with ``ValueError`` before any call.

Retries: :meth:`JobsClient.wait` retries, because polling is idempotent, and so
does :meth:`JobsClient.submit`, because every submission carries a
``request_id``: the job service answers a repeat with the job the first call
created, so a lost reply never creates a second job. Submissions wait between
tries with exponential backoff and jitter (0.2 to 0.4 s, then 0.4 to 0.8 s, ...).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from jobqueue.auth.v1 import auth_pb2, auth_pb2_grpc
from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_AUTH_ADDRESS",
    "DEFAULT_JOBS_ADDRESS",
    "FINAL_STATUSES",
    "MAX_SAFE_INTEGER",
    "AuthClient",
    "FieldViolation",
    "Job",
    "JobQueueError",
    "JobStatus",
    "JobsClient",
    "Payload",
    "auth_metadata",
    "connect_auth",
    "connect_jobs",
    "is_final",
    "to_value",
]

DEFAULT_AUTH_ADDRESS = "localhost:5001"
DEFAULT_JOBS_ADDRESS = "localhost:5002"

#: Largest integer a JSON number (an IEEE double) holds exactly; payloads beyond it are refused.
MAX_SAFE_INTEGER = 2**53
#: Most jobs BatchCreateJobs takes in one call.
BATCH_SIZE = 1000

Job = jobs_pb2.Job
JobStatus = jobs_pb2.JobStatus
#: What ``submit`` accepts as a payload; a prepared ``google.protobuf.Value`` is passed through.
Payload = str | int | float | struct_pb2.Value

#: Statuses a job never leaves.
FINAL_STATUSES: frozenset[jobs_pb2.JobStatus.ValueType] = frozenset(
    {jobs_pb2.JOB_STATUS_COMPLETED, jobs_pb2.JOB_STATUS_FAILED, jobs_pb2.JOB_STATUS_CANCELLED}
)

# Codes after which asking again may succeed: a service restarting, a slow reply.
# CANCELLED reaches a caller only from the server's side (a service shutting
# down drops calls it had not started); a caller's own cancellation raises
# asyncio.CancelledError instead.
_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})

# The client library ships alone (pip install ./gen) and so cannot import the
# services' common/backoff.py; _retry_delay is the same policy written for the
# one place the client retries: base * 2**n, each delay scaled by a random
# factor in [1/2, 1], so that many clients that met the same outage do not all
# come back at the same instant. A generator of its own, so that nothing a
# caller does with the global `random` (seeding it, say) makes the delays alike.
_RETRY_BASE_SECONDS = 0.2
_RANDOM = random.Random()


def _retry_delay(failures: int, rng: random.Random | None = None) -> float:
    """How long to wait after ``failures`` failed calls (>= 1): in [ceiling / 2, ceiling], ceiling 0.2 * 2**failures."""
    # min() on the exponent: 2.0**n overflows a float for large n.
    ceiling = _RETRY_BASE_SECONDS * 2.0 ** min(failures, 64)
    return (rng or _RANDOM).uniform(ceiling / 2, ceiling)


_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
#: The list requests: each pages with page_token.
_PagedRequest = TypeVar("_PagedRequest", jobs_pb2.ListJobsRequest, jobs_pb2.ListDeadJobsRequest)


def auth_metadata(token: str) -> tuple[tuple[str, str]]:
    """The call metadata that authenticates a call with ``token`` (an access token or the worker token)."""
    if not token or token != token.strip():
        raise ValueError("token must be a non-empty string without surrounding whitespace")
    return (("authorization", f"Bearer {token}"),)


def to_value(payload: Payload) -> struct_pb2.Value:
    """``payload`` as the ``google.protobuf.Value`` CreateJob takes.

    Strings become ``string_value``; ints and floats become ``number_value``.
    Refused with ValueError: bools (``True`` would silently become 1, and no job
    type takes one), ints beyond ±2**53 and non-finite floats (JSON numbers are
    doubles, so they would arrive changed or not at all). Other types raise TypeError.
    """
    if isinstance(payload, struct_pb2.Value):
        copy = struct_pb2.Value()
        copy.CopyFrom(payload)
        return copy
    # bool is a subclass of int, so it has to be ruled out before the int case.
    if isinstance(payload, bool):
        raise ValueError("a bool is not a valid payload; no job type takes one")
    if isinstance(payload, str):
        return struct_pb2.Value(string_value=payload)
    if isinstance(payload, int):
        if abs(payload) > MAX_SAFE_INTEGER:
            raise ValueError(f"integer payload {payload} is beyond ±2**53, which a JSON number cannot hold exactly")
        return struct_pb2.Value(number_value=float(payload))
    if isinstance(payload, float):
        if not math.isfinite(payload):
            raise ValueError(f"payload {payload} is not a finite number")
        return struct_pb2.Value(number_value=payload)
    raise TypeError(f"payload must be str, int or float, not {type(payload).__name__}")


def is_final(status: jobs_pb2.JobStatus.ValueType) -> bool:
    """Whether a job in ``status`` is finished for good (COMPLETED, FAILED or CANCELLED)."""
    return status in FINAL_STATUSES


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a refused request (from ``google.rpc.BadRequest``)."""

    field: str
    description: str


class JobQueueError(Exception):
    """A call the service refused or could not answer, with the status's machine-readable details."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(code, message)
        #: The gRPC status code, e.g. ``grpc.StatusCode.INVALID_ARGUMENT``.
        self.code = code
        #: The human-readable status message.
        self.message = message
        #: ``ErrorInfo.reason`` in UPPER_SNAKE_CASE (e.g. ``"INVALID_ARGUMENT"``); empty when absent.
        self.reason = reason
        #: ``ErrorInfo.domain``; empty when absent.
        self.domain = domain
        #: ``ErrorInfo.metadata``.
        self.metadata: Mapping[str, str] = dict(metadata or {})
        #: ``BadRequest.field_violations``, one per bad field.
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        return f"{text} [{self.reason}]" if self.reason else text

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later unchanged (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED)."""
        return self.code in _TRANSIENT

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> JobQueueError:
        """Decode a ``google.rpc.Status``: its code, message, ErrorInfo and BadRequest details."""
        code = _status_code(status.code)
        reason = domain = ""
        metadata: dict[str, str] = {}
        violations: list[FieldViolation] = []
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
        return cls(code, status.message, reason=reason, domain=domain, metadata=metadata, field_violations=violations)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> JobQueueError:
        """Decode the error a stub raised (sync or grpc.aio), details included when the server sent them."""
        if not isinstance(error, grpc.aio.AioRpcError | grpc.Call):
            return cls(grpc.StatusCode.UNKNOWN, str(error))
        code, message = error.code(), error.details() or ""
        try:
            # AioRpcError has the methods from_call reads (code, details,
            # trailing_metadata) without deriving from grpc.Call.
            status = rpc_status.from_call(cast(grpc.Call, error))
        except ValueError:
            # The details contradict the status line; trust the status line.
            status = None
        if status is None:
            return cls(code, message)
        return cls.from_status(status)


def _status_code(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def _channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, credentials)


class _Client:
    """What both clients share: the channel, a default deadline, and error conversion."""

    def __init__(self, channel: grpc.aio.Channel, *, call_timeout: float | None) -> None:
        self.channel = channel
        self.call_timeout = call_timeout
        self._metadata: tuple[tuple[str, str], ...] = ()

    async def _call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        *,
        # A gRPC deadline travels to the server, which asyncio.timeout (what ASYNC109 suggests) cannot do.
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> _Response:
        try:
            return await method(
                request, timeout=self.call_timeout if timeout is None else timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as error:
            raise JobQueueError.from_rpc_error(error) from error

    async def close(self) -> None:
        """Close the channel; calls still in flight are cancelled."""
        await self.channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class AuthClient(_Client):
    """Accounts and access tokens (``jobqueue.auth.v1.AuthService``)."""

    def __init__(self, channel: grpc.aio.Channel, *, call_timeout: float | None = 30.0) -> None:
        super().__init__(channel, call_timeout=call_timeout)
        self.stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def register(self, email: str, password: str, name: str) -> auth_pb2.User:
        """Create an account; ALREADY_EXISTS if the email is taken."""
        request = auth_pb2.RegisterRequest(email=email, password=password, name=name)
        return (await self._call(self.stub.Register, request)).user

    async def login(self, email: str, password: str) -> str:
        """An access token for the job service; UNAUTHENTICATED for a wrong email or password."""
        request = auth_pb2.LoginRequest(email=email, password=password)
        return (await self._call(self.stub.Login, request)).access_token


class JobsClient(_Client):
    """One user's jobs (``jobqueue.jobs.v1.JobService``), every call authenticated with ``token``."""

    def __init__(self, channel: grpc.aio.Channel, *, token: str, call_timeout: float | None = 30.0) -> None:
        super().__init__(channel, call_timeout=call_timeout)
        self._metadata = auth_metadata(token)
        self.stub = jobs_pb2_grpc.JobServiceStub(channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata sent with every call, for calling ``stub`` directly."""
        return self._metadata

    async def submit(
        self,
        job_type: str,
        payload: Payload,
        *,
        priority: jobs_pb2.JobPriority.ValueType = jobs_pb2.JOB_PRIORITY_UNSPECIFIED,
        max_attempts: int = 0,
        timeout_seconds: int = 0,
        request_id: str | None = None,
        attempts: int = 3,
    ) -> jobs_pb2.Job:
        """Store a job and queue it; returns it QUEUED.

        ``priority``, ``max_attempts`` (how often a worker may try the job) and
        ``timeout_seconds`` are CreateJob's; 0 and UNSPECIFIED take the server's
        defaults. The request carries ``request_id`` (a fresh UUID unless given),
        so an UNAVAILABLE or DEADLINE_EXCEEDED answer is retried, up to
        ``attempts`` calls in all, without any risk of creating the job twice.
        """
        request = jobs_pb2.CreateJobRequest(
            type=job_type,
            payload=to_value(payload),
            priority=priority,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
            request_id=request_id or str(uuid.uuid4()),
        )
        reply: jobs_pb2.CreateJobResponse = await self._idempotent(self.stub.CreateJob, request, attempts)
        return reply.job

    async def submit_many(
        self,
        jobs: Iterable[tuple[str, Payload]],
        *,
        priority: jobs_pb2.JobPriority.ValueType = jobs_pb2.JOB_PRIORITY_UNSPECIFIED,
        max_attempts: int = 0,
        timeout_seconds: int = 0,
        attempts: int = 3,
    ) -> list[jobs_pb2.Job]:
        """Store many (job type, payload) jobs with BatchCreateJobs; returns them QUEUED, in order.

        Up to BATCH_SIZE jobs go in each call, which stores all of its jobs or
        none; with more, a later call's failure leaves the earlier calls' jobs
        stored (the error says so). Each job carries a fresh ``request_id``,
        so calls are retried as :meth:`submit` retries, never creating a job twice.
        """
        requests = [
            jobs_pb2.CreateJobRequest(
                type=job_type,
                payload=to_value(payload),
                priority=priority,
                max_attempts=max_attempts,
                timeout_seconds=timeout_seconds,
                request_id=str(uuid.uuid4()),
            )
            for job_type, payload in jobs
        ]
        stored: list[jobs_pb2.Job] = []
        for start in range(0, len(requests), BATCH_SIZE):
            batch = jobs_pb2.BatchCreateJobsRequest(requests=requests[start : start + BATCH_SIZE])
            stored.extend((await self._idempotent(self.stub.BatchCreateJobs, batch, attempts)).jobs)
        return stored

    async def _idempotent(self, method: Any, request: Any, attempts: int) -> Any:
        """Call ``method``, retrying a retryable failure up to ``attempts`` calls in all (safe: request_id)."""
        for attempt in range(1, attempts + 1):
            try:
                return await self._call(method, request)
            except JobQueueError as error:
                if not error.retryable or attempt >= attempts:
                    raise
            await asyncio.sleep(_retry_delay(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def get(self, job_id: str) -> jobs_pb2.Job:
        """One of the caller's jobs; NOT_FOUND for an unknown id or someone else's job."""
        return (await self._call(self.stub.GetJob, jobs_pb2.GetJobRequest(id=job_id))).job

    async def cancel(self, job_id: str) -> jobs_pb2.Job:
        """Withdraw one of the caller's jobs; FAILED_PRECONDITION if it already finished."""
        return (await self._call(self.stub.CancelJob, jobs_pb2.CancelJobRequest(id=job_id))).job

    async def rerun(self, job_id: str, *, max_attempts: int = 0) -> jobs_pb2.Job:
        """Run a FAILED job again with ``max_attempts`` more attempts (0: the server's default).

        The caller's own job, or anyone's for an operator.
        """
        request = jobs_pb2.RerunJobRequest(id=job_id, max_attempts=max_attempts)
        return (await self._call(self.stub.RerunJob, request)).job

    async def list_dead(self, *, job_type: str = "", page_size: int = 0) -> AsyncIterator[jobs_pb2.Job]:
        """Every user's FAILED jobs, most recently failed first, page after page (operators only)."""
        request = jobs_pb2.ListDeadJobsRequest(page_size=page_size, type=job_type)
        async for job in self._pages(self.stub.ListDeadJobs, request):
            yield job

    async def rerun_dead(self, *, job_type: str = "", max_attempts: int = 0) -> int:
        """Run every dead job (of ``job_type``, if given) again; how many (operators only)."""
        request = jobs_pb2.RerunDeadJobsRequest(type=job_type, max_attempts=max_attempts)
        return (await self._call(self.stub.RerunDeadJobs, request)).rerun_count

    # `timeout` rather than asyncio.timeout (ASYNC109): it bounds each poll's
    # gRPC deadline too, and the TimeoutError can say what status was last seen.
    async def wait(
        self,
        job_id: str,
        *,
        timeout: float = 60.0,  # noqa: ASYNC109
        poll_interval: float = 0.2,
    ) -> jobs_pb2.Job:
        """Poll until the job is COMPLETED, FAILED or CANCELLED and return it.

        Raises TimeoutError if it is not final after ``timeout`` seconds.
        UNAVAILABLE and DEADLINE_EXCEEDED answers are polled through (a service
        restart should not fail a wait); any other error is raised at once.
        """
        deadline = time.monotonic() + timeout
        last: str = "never answered"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"job {job_id} is not finished after {timeout} s (last seen: {last})")
            call_timeout = remaining if self.call_timeout is None else min(remaining, self.call_timeout)
            try:
                request = jobs_pb2.GetJobRequest(id=job_id)
                job = (await self._call(self.stub.GetJob, request, timeout=call_timeout)).job
            except JobQueueError as error:
                if not error.retryable:
                    raise
                last = error.code.name
            else:
                if is_final(job.status):
                    return job
                last = jobs_pb2.JobStatus.Name(job.status)
            await asyncio.sleep(max(0.0, min(poll_interval, deadline - time.monotonic())))

    async def submit_and_wait(
        self,
        job_type: str,
        payload: Payload,
        timeout: float = 60.0,  # noqa: ASYNC109 -- see wait
        *,
        poll_interval: float = 0.2,
    ) -> jobs_pb2.Job:
        """Submit a job and wait for its final state (see ``wait``); a FAILED job is returned, not raised."""
        job = await self.submit(job_type, payload)
        return await self.wait(job.id, timeout=timeout, poll_interval=poll_interval)

    async def list(
        self,
        *,
        status: jobs_pb2.JobStatus.ValueType = jobs_pb2.JOB_STATUS_UNSPECIFIED,
        job_type: str = "",
        page_size: int = 0,
    ) -> AsyncIterator[jobs_pb2.Job]:
        """Every one of the caller's jobs, newest first, fetching page after page as it is iterated.

        ``status`` and ``job_type`` filter (the defaults mean "any"); ``page_size``
        is per call (0 lets the server choose).
        """
        request = jobs_pb2.ListJobsRequest(page_size=page_size, status=status, type=job_type)
        async for job in self._pages(self.stub.ListJobs, request):
            yield job

    async def _pages(self, method: Any, request: _PagedRequest) -> AsyncIterator[jobs_pb2.Job]:
        """The jobs of every page ``method`` returns for ``request``, following next_page_token."""
        while True:
            reply = await self._call(method, request)
            for job in reply.jobs:
                yield job
            if not reply.next_page_token:
                return
            # A fresh request per page: one already sent is never changed under its caller.
            following = type(request)()
            following.CopyFrom(request)
            following.page_token = reply.next_page_token
            request = following


def connect_auth(
    address: str = DEFAULT_AUTH_ADDRESS,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    call_timeout: float | None = 30.0,
) -> AuthClient:
    """A client for the auth service at ``address`` (plaintext unless ``credentials`` are given).

    Call it inside a running event loop; use it as ``async with`` (or ``await close()``).
    ``call_timeout`` is each call's deadline in seconds (None: no deadline).
    """
    return AuthClient(_channel(address, credentials), call_timeout=call_timeout)


def connect_jobs(
    address: str = DEFAULT_JOBS_ADDRESS,
    *,
    token: str,
    credentials: grpc.ChannelCredentials | None = None,
    call_timeout: float | None = 30.0,
) -> JobsClient:
    """A client for the job service at ``address`` that sends ``token`` with every call.

    Same conventions as :func:`connect_auth`.
    """
    auth_metadata(token)  # refuses a malformed token before a channel is opened
    return JobsClient(_channel(address, credentials), token=token, call_timeout=call_timeout)

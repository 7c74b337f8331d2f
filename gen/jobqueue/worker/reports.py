"""The worker's side of UpdateJobs: claim a job, report its outcome, and know when to retry or let go.

Reports made while a call is in flight wait and leave together in the next
UpdateJobs call (gen/jobqueue/runtime/batching.py), so a busy worker makes a few calls for
many jobs, and an idle one still sends each report at once. Every report is
answered on its own, exactly as a unary UpdateJob would have been.

Every report is retried while the job service is unreachable (UNAVAILABLE,
DEADLINE_EXCEEDED), with capped backoff, for as long as the worker runs: the
message stays unacknowledged meanwhile, so nothing is lost and nothing is run
twice. Once the worker is stopping, a report gives up after a bounded time and
its message is handed back for redelivery. FAILED_PRECONDITION and NOT_FOUND
mean another attempt (or a cancel) already decided the job: "superseded".
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format

from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from jobqueue.runtime import tracing
from jobqueue.runtime.backoff import Backoff
from jobqueue.runtime.batching import Coalescer
from jobqueue.runtime.errors import code_from_number
from jobqueue.runtime.health_check import HealthCheck

if TYPE_CHECKING:
    from opentelemetry.context import Context

log = logging.getLogger(__name__)

#: Most reports in one UpdateJobs call (the job service takes up to 1,000).
MAX_BATCH = 500
#: How many UpdateJobs calls one worker may have in flight at once.
CALLS_IN_FLIGHT = 2
#: Most bytes of reports in one call: half the job service's 1 MiB message limit.
CALL_BYTES = 512 * 1024

#: How the job service answered one report: its status code, the details, and the result when stored.
Answer = tuple[grpc.StatusCode, str, jobs_pb2.UpdateJobsResult | None]
#: A report waiting for its call, with the trace context of the job it is about (None when not tracing).
Pending = tuple[jobs_pb2.UpdateJobRequest, "Context | None"]


class Outcome(enum.Enum):
    """What a status code from UpdateJob means for the report."""

    #: The job service stored the report.
    STORED = "stored"
    #: The job is no longer ours to report on (finished, cancelled, another attempt, unknown id).
    SUPERSEDED = "superseded"
    #: The job service could not take it now; the same report may succeed later.
    RETRY = "retry"
    #: The job service will not take this report; repeating it will not help.
    REFUSED = "refused"


_OUTCOMES: dict[grpc.StatusCode, Outcome] = {
    grpc.StatusCode.OK: Outcome.STORED,
    grpc.StatusCode.FAILED_PRECONDITION: Outcome.SUPERSEDED,
    grpc.StatusCode.NOT_FOUND: Outcome.SUPERSEDED,
    grpc.StatusCode.UNAVAILABLE: Outcome.RETRY,
    grpc.StatusCode.DEADLINE_EXCEEDED: Outcome.RETRY,
    # Both mean "not now" (overload, a conflicting transaction), never "not this report".
    grpc.StatusCode.RESOURCE_EXHAUSTED: Outcome.RETRY,
    grpc.StatusCode.ABORTED: Outcome.RETRY,
    # A job service shutting down drops calls it had not started with CANCELLED;
    # the worker's own cancellations surface as asyncio.CancelledError instead.
    grpc.StatusCode.CANCELLED: Outcome.RETRY,
}


def outcome_of(code: grpc.StatusCode) -> Outcome:
    """The outcome of a report the job service answered with ``code``; unlisted codes are REFUSED."""
    return _OUTCOMES.get(code, Outcome.REFUSED)


class ReportRefused(Exception):
    """Raised when the job service refuses a report for a reason retrying cannot fix (a bad token, a bug)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class Failure(enum.Enum):
    """What a stored FAILED report did to the job."""

    #: Another attempt or a cancellation had already settled the job.
    SUPERSEDED = "superseded"
    #: The job went back to the queue for another attempt after a backoff.
    RETRYING = "retrying"
    #: The job is FAILED for good.
    FINAL = "final"


class ReportAbandoned(Exception):
    """Raised while stopping when the job service stayed unreachable for the allowed time."""


def open_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None = None,
    *,
    server_name: str = "",
    reconnect_cap: float = 5.0,
) -> grpc.aio.Channel:
    """A channel to the job service at ``address`` for a ReportClient.

    ``address`` is any gRPC target: ``host:port``; ``dns:///job-service:5002``,
    whose every address (one per replica behind the name) gets its share of
    the calls; or a fixed list, ``ipv4:10.0.0.1:5002,10.0.0.2:5002``.
    ``credentials`` (jobqueue.runtime.tls.channel_credentials): TLS, the server's
    certificate checked against the target's host name, or ``server_name``.
    """
    options: list[tuple[str, str | int]] = [
        # gRPC's own reconnect backoff grows to 2 minutes by default, which
        # would keep reports failing long after the job service is back.
        ("grpc.max_reconnect_backoff_ms", int(reconnect_cap * 1000)),
        # Calls go round the job service's replicas instead of all to the first
        # (gRPC's default, pick_first). Any replica may take any report: the
        # database fences them, not the replica that took the claim.
        ("grpc.lb_policy_name", "round_robin"),
        # A dns:/// name is resolved again when a connection ends (a replica stopped, or the job
        # service aging the connection out to spread its clients); gRPC's default waits at least
        # 30 s between resolutions, which would keep new or moved replicas out for that long.
        ("grpc.dns_min_time_between_resolutions_ms", 2000),
    ]
    # None when tracing is off: a channel with no interceptor at all.
    interceptors = tracing.client_interceptors() or None
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


class ReportClient:
    """The worker's client of the job service, for its reports and for its health; owns ``channel``."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        token: bytes,
        *,
        timeout: float = 5.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        worker_id: str = "",
    ) -> None:
        self._channel = channel
        #: Sent with every report, so that the job service records which worker ran each attempt.
        self._worker_id = worker_id
        self._stub = jobs_pb2_grpc.JobServiceStub(channel)
        self._health = HealthCheck(channel, timeout=timeout)
        self._metadata = (("authorization", f"Bearer {token.decode()}"),)
        self._timeout = timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._give_up_at: float | None = None
        self._unreachable = False
        # Reports made while a call is in flight leave together in the next one.
        self._batches: Coalescer[Pending, Answer] = Coalescer(
            self._send, max_batch=MAX_BATCH, max_concurrent=CALLS_IN_FLIGHT
        )

    async def claim(self, job_id: str, claim_id: str) -> int | None:
        """Report the job RUNNING under ``claim_id``; returns the attempt number, or None if superseded."""
        request = jobs_pb2.UpdateJobRequest(id=job_id, status=jobs_pb2.JOB_STATUS_RUNNING, claim_id=claim_id)
        stored = await self._report(request)
        return None if stored is None else stored.attempts

    async def complete(self, job_id: str, attempt: int, result: Any) -> bool:
        """Report the job COMPLETED with its ``result``, any JSON value; returns False if superseded.

        A string goes as ``result``, stored exactly as it is (the built-in
        types' F(n) has more digits than a JSON number holds); any other value
        as ``result_value``.
        """
        request = jobs_pb2.UpdateJobRequest(id=job_id, status=jobs_pb2.JOB_STATUS_COMPLETED, attempt=attempt)
        if isinstance(result, str):
            request.result = result
        else:
            json_format.ParseDict(result, request.result_value)
        return await self._report(request) is not None

    async def progress(self, job_id: str, claim_id: str, fraction: float, message: str) -> None:
        """Report how far the job under ``claim_id`` got; sent once, never retried (a later report replaces it)."""
        request = jobs_pb2.UpdateJobRequest(
            id=job_id,
            status=jobs_pb2.JOB_STATUS_RUNNING,
            claim_id=claim_id,
            progress=jobs_pb2.JobProgress(fraction=fraction, message=message),
        )
        code, details, _ = await self._batches.submit((request, tracing.current()))
        if code is not grpc.StatusCode.OK:
            log.debug("progress not stored", extra={"job_id": job_id, "code": code.name, "details": details})

    async def declare(self, job_types: list[jobs_pb2.JobType]) -> None:
        """Declare the job types this worker runs (DeclareJobTypes); raises the call's grpc.aio.AioRpcError."""
        await self._stub.DeclareJobTypes(
            jobs_pb2.DeclareJobTypesRequest(job_types=job_types), metadata=self._metadata, timeout=self._timeout
        )

    async def fail(self, job_id: str, attempt: int, error: str, *, retryable: bool = False) -> Failure:
        """Report the job FAILED (``retryable``: the failure was transient); returns what became of it."""
        request = jobs_pb2.UpdateJobRequest(
            id=job_id, status=jobs_pb2.JOB_STATUS_FAILED, attempt=attempt, error=error, retryable=retryable
        )
        stored = await self._report(request)
        if stored is None:
            return Failure.SUPERSEDED
        return Failure.RETRYING if stored.job_status == jobs_pb2.JOB_STATUS_QUEUED else Failure.FINAL

    def begin_stop(self, give_up_after: float) -> None:
        """From now on, a report that cannot be delivered within ``give_up_after`` seconds is abandoned."""
        self._give_up_at = time.monotonic() + give_up_after

    async def probe(self) -> None:
        """Raise unless the job service answers its health check with SERVING (a HealthMonitor probe)."""
        await self._health.require_serving()

    async def close(self) -> None:
        """Close the channel; calls still in flight are cancelled."""
        await self._channel.close(None)

    async def _send(self, reports: list[Pending]) -> list[Answer]:
        """Send the reports that are ready (the Coalescer's runner): each one's answer, in order.

        They go in one UpdateJobs call, or in several if together they would
        pass the job service's message size limit (large results).
        """
        for request, _ in reports:
            request.worker_id = self._worker_id
        calls = await asyncio.gather(*(self._call(chunk) for chunk in _chunks(reports, CALL_BYTES)))
        return [answer for answers in calls for answer in answers]

    async def _call(self, reports: list[Pending]) -> list[Answer]:
        """One UpdateJobs call: each report's answer.

        Traced as a span of the batch, a child of the first report's job and linked to every
        report's (jobqueue.runtime.tracing.batch_span): the client call, and the job service's
        handling of it, then join those traces.
        """
        requests = [request for request, _ in reports]
        try:
            with tracing.batch_span("UpdateJobs batch", (context for _, context in reports)):
                response = await self._stub.UpdateJobs(
                    jobs_pb2.UpdateJobsRequest(requests=requests), metadata=self._metadata, timeout=self._timeout
                )
        except grpc.aio.AioRpcError as error:
            # Nothing was applied: every report in the call gets the call's status.
            return [(error.code(), error.details() or "", None)] * len(requests)
        return [
            (code_from_number(result.code), result.message, result if result.code == 0 else None)
            for result in response.results
        ]

    async def _report(self, request: jobs_pb2.UpdateJobRequest) -> jobs_pb2.UpdateJobsResult | None:
        """Send one report until it is stored (its result) or superseded (None); see the module doc."""
        backoff: Backoff | None = None
        context = tracing.current()
        while True:
            code, details, stored = await self._batches.submit((request, context))
            if stored is not None:
                self._reachable()
                return stored
            outcome = outcome_of(code)
            if outcome is Outcome.REFUSED:
                self._reachable()
                raise ReportRefused(code, details)
            fields = {"job_id": request.id, "status": jobs_pb2.JobStatus.Name(request.status), "code": code.name}
            if outcome is Outcome.SUPERSEDED:
                self._reachable()
                log.info("report superseded", extra={**fields, "details": details})
                return None
            if not self._unreachable:
                self._unreachable = True
                log.warning("job service unreachable; retrying reports", extra=fields)
            backoff = backoff or Backoff(self._backoff_base, self._backoff_cap)
            delay = backoff.next_delay()
            if self._give_up_at is not None:
                remaining = self._give_up_at - time.monotonic()
                if remaining <= 0:
                    raise ReportAbandoned(f"job service unreachable while stopping ({code.name})")
                delay = min(delay, remaining)
            await asyncio.sleep(delay)

    def _reachable(self) -> None:
        if self._unreachable:
            self._unreachable = False
            log.info("job service reachable again")


def _chunks(reports: list[Pending], limit: int) -> list[list[Pending]]:
    """The reports in order, cut into runs of at most ``limit`` serialized bytes (a larger report goes alone)."""
    chunks: list[list[Pending]] = [[]]
    size = 0
    for request, context in reports:
        # Each repeated field costs its bytes plus a tag and a length prefix (at most 6 bytes here).
        cost = request.ByteSize() + 6
        if chunks[-1] and size + cost > limit:
            chunks.append([])
            size = 0
        chunks[-1].append((request, context))
        size += cost
    return chunks

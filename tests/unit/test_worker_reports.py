"""The worker's UpdateJobs client: which status codes mean stored, superseded, retry or refused, what it sends,
and how concurrent reports share calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from jobqueue.jobs.v1 import jobs_pb2
from jobqueue.runtime.errors import code_from_number, code_number
from jobqueue.worker.reports import Failure, Outcome, ReportAbandoned, ReportClient, ReportRefused, outcome_of

JOB_ID = "0b6c7c1e-8f0a-4d3e-9b59-2f3b1c7d9a10"
UPDATE = "/jobqueue.jobs.v1.JobService/UpdateJobs"
CHECK = "/grpc.health.v1.Health/Check"


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_status_codes_survive_the_trip_through_a_number(code: grpc.StatusCode) -> None:
    assert code_from_number(code_number(code)) is code


def test_a_status_number_grpc_does_not_define_reads_as_unknown() -> None:
    assert code_number(grpc.StatusCode.UNAUTHENTICATED) == 16  # google.rpc.Code, fixed by the wire contract
    assert code_from_number(17) is grpc.StatusCode.UNKNOWN
    assert code_from_number(-1) is grpc.StatusCode.UNKNOWN


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (grpc.StatusCode.OK, Outcome.STORED),
        (grpc.StatusCode.FAILED_PRECONDITION, Outcome.SUPERSEDED),
        (grpc.StatusCode.NOT_FOUND, Outcome.SUPERSEDED),
        (grpc.StatusCode.UNAVAILABLE, Outcome.RETRY),
        (grpc.StatusCode.DEADLINE_EXCEEDED, Outcome.RETRY),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, Outcome.RETRY),
        (grpc.StatusCode.ABORTED, Outcome.RETRY),
        (grpc.StatusCode.CANCELLED, Outcome.RETRY),
        (grpc.StatusCode.UNAUTHENTICATED, Outcome.REFUSED),
        (grpc.StatusCode.PERMISSION_DENIED, Outcome.REFUSED),
        (grpc.StatusCode.INVALID_ARGUMENT, Outcome.REFUSED),
        (grpc.StatusCode.INTERNAL, Outcome.REFUSED),
        (grpc.StatusCode.UNKNOWN, Outcome.REFUSED),
        (grpc.StatusCode.UNIMPLEMENTED, Outcome.REFUSED),
    ],
)
def test_outcome_of_each_status_code(code: grpc.StatusCode, outcome: Outcome) -> None:
    assert outcome_of(code) is outcome


def test_every_status_code_has_an_outcome() -> None:
    assert all(isinstance(outcome_of(code), Outcome) for code in grpc.StatusCode)


@dataclass
class Call:
    """One call the fake channel received."""

    method: str
    request: Any
    timeout: float | None
    metadata: Any


@dataclass
class FakeChannel:
    """Stands in for a grpc.aio.Channel: answers each method from a script of replies or status codes."""

    #: An UpdateJobsResult answers every report of a call alike; a status code fails the whole call.
    script: dict[str, list[Message | grpc.StatusCode]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    closed: bool = False

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        async def invoke(request: Any, **options: Any) -> Any:
            self.calls.append(Call(method, request, options.get("timeout"), options.get("metadata")))
            replies = self.script[method]
            # The last reply repeats for as long as it is asked for.
            reply = replies.pop(0) if len(replies) > 1 else replies[0]
            if isinstance(reply, grpc.StatusCode):
                empty = grpc.aio.Metadata()
                raise grpc.aio.AioRpcError(reply, empty, empty, details=f"fake {reply.name}", debug_error_string="")
            if isinstance(reply, jobs_pb2.UpdateJobsResult):
                return jobs_pb2.UpdateJobsResponse(results=[reply] * len(request.requests))
            return reply

        return invoke

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        def invoke(request: Any, **options: Any) -> Any:
            raise AssertionError(f"a worker has no business watching: {method}")

        return invoke

    async def close(self, grace: float | None) -> None:
        self.closed = True

    def updates(self) -> list[jobs_pb2.UpdateJobRequest]:
        return [report for call in self.calls if call.method == UPDATE for report in call.request.requests]


def job(attempts: int, status: jobs_pb2.JobStatus.ValueType = jobs_pb2.JOB_STATUS_RUNNING) -> jobs_pb2.UpdateJobsResult:
    """A report stored: the job's status and attempts after it."""
    return jobs_pb2.UpdateJobsResult(attempts=attempts, job_status=status)


def refused(code: grpc.StatusCode) -> jobs_pb2.UpdateJobsResult:
    """A report the job service answered on its own with ``code``."""
    return jobs_pb2.UpdateJobsResult(code=code_number(code), message=f"fake {code.name}")


def reports_on(*replies: Message | grpc.StatusCode, timeout: float = 3.0) -> tuple[ReportClient, FakeChannel]:
    channel = FakeChannel({UPDATE: list(replies)})
    reports = ReportClient(
        cast(grpc.aio.Channel, channel), b"s3cret", timeout=timeout, backoff_base=0.001, backoff_cap=0.005
    )
    return reports, channel


async def test_claim_sends_running_with_the_claim_the_token_and_a_deadline() -> None:
    reports, channel = reports_on(job(attempts=3), timeout=4.0)
    assert await reports.claim(JOB_ID, "claim-1") == 3
    (call,) = channel.calls
    (report,) = call.request.requests
    assert report == jobs_pb2.UpdateJobRequest(id=JOB_ID, status=jobs_pb2.JOB_STATUS_RUNNING, claim_id="claim-1")
    assert call.timeout == 4.0
    assert ("authorization", "Bearer s3cret") in call.metadata


async def test_final_reports_carry_the_attempt_and_result_or_error() -> None:
    reports, channel = reports_on(job(attempts=2, status=jobs_pb2.JOB_STATUS_COMPLETED))
    assert await reports.complete(JOB_ID, 2, "55") is True
    assert await reports.fail(JOB_ID, 2, "payload: must be a string") is Failure.FINAL
    completed, failed = channel.updates()
    assert completed == jobs_pb2.UpdateJobRequest(
        id=JOB_ID, status=jobs_pb2.JOB_STATUS_COMPLETED, attempt=2, result="55"
    )
    assert failed == jobs_pb2.UpdateJobRequest(
        id=JOB_ID, status=jobs_pb2.JOB_STATUS_FAILED, attempt=2, error="payload: must be a string"
    )
    assert not completed.HasField("error")
    assert not failed.HasField("result")


@pytest.mark.parametrize("code", [grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND])
async def test_superseded_reports(code: grpc.StatusCode) -> None:
    reports, channel = reports_on(refused(code))
    assert await reports.claim(JOB_ID, "claim-1") is None
    assert await reports.complete(JOB_ID, 1, "x") is False
    assert await reports.fail(JOB_ID, 1, "x") is Failure.SUPERSEDED
    assert len(channel.calls) == 3


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_unreachable_job_service_is_retried_with_the_same_report(code: grpc.StatusCode) -> None:
    reports, channel = reports_on(code, code, code, job(attempts=1))
    assert await reports.claim(JOB_ID, "claim-1") == 1
    requests = channel.updates()
    assert len(requests) == 4
    # The same claim_id every time, so a RUNNING report whose reply was lost does not count a new attempt.
    assert all(request == requests[0] for request in requests)


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INTERNAL]
)
async def test_refused_calls_raise_without_retrying(code: grpc.StatusCode) -> None:
    reports, channel = reports_on(code)
    with pytest.raises(ReportRefused) as caught:
        await reports.complete(JOB_ID, 1, "x")
    assert caught.value.code is code
    assert len(channel.calls) == 1


async def test_a_report_refused_on_its_own_raises_without_retrying() -> None:
    reports, channel = reports_on(refused(grpc.StatusCode.INVALID_ARGUMENT))
    with pytest.raises(ReportRefused, match="INVALID_ARGUMENT: fake INVALID_ARGUMENT"):
        await reports.complete(JOB_ID, 1, "x")
    assert len(channel.calls) == 1


async def test_concurrent_reports_share_calls_and_each_gets_its_own_answer() -> None:
    channel = FakeChannel()
    answered: list[int] = []

    def invoke(method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        async def update_jobs(request: jobs_pb2.UpdateJobsRequest, **options: Any) -> jobs_pb2.UpdateJobsResponse:
            channel.calls.append(Call(method, request, options.get("timeout"), options.get("metadata")))
            answered.append(len(request.requests))
            await asyncio.sleep(0.01)  # while this call is in flight, more reports wait for the next
            # Each job's attempt number is the number in its claim id; job 7's report is superseded.
            return jobs_pb2.UpdateJobsResponse(
                results=[
                    refused(grpc.StatusCode.FAILED_PRECONDITION) if r.claim_id == "7" else job(int(r.claim_id))
                    for r in request.requests
                ]
            )

        return update_jobs

    channel.unary_unary = invoke  # type: ignore[method-assign]
    reports = ReportClient(cast(grpc.aio.Channel, channel), b"t")
    attempts = await asyncio.gather(*(reports.claim(f"job-{i}", str(i)) for i in range(100)))
    assert attempts == [None if i == 7 else i for i in range(100)]
    assert sum(answered) == 100
    # The first call goes at once, alone or nearly; the rest wait for a slot and leave in a few big calls.
    assert len(answered) <= 4, answered


async def test_while_stopping_an_unreachable_job_service_is_given_up_on_in_bounded_time() -> None:
    reports, channel = reports_on(grpc.StatusCode.UNAVAILABLE)
    reports.begin_stop(0.2)
    started = time.monotonic()
    with pytest.raises(ReportAbandoned):
        await reports.complete(JOB_ID, 1, "x")
    assert 0.15 <= time.monotonic() - started < 2.0
    assert len(channel.calls) > 1


async def test_while_stopping_a_reachable_job_service_still_gets_the_report() -> None:
    reports, _ = reports_on(grpc.StatusCode.UNAVAILABLE, job(attempts=1))
    reports.begin_stop(5.0)
    assert await reports.complete(JOB_ID, 1, "x") is True


@pytest.mark.parametrize(
    ("reply", "healthy"),
    [
        (health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING), True),
        (health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING), False),
        (grpc.StatusCode.UNAVAILABLE, False),
    ],
)
async def test_probe_passes_only_when_the_job_service_is_serving(
    reply: Message | grpc.StatusCode, healthy: bool
) -> None:
    channel = FakeChannel({CHECK: [reply]})
    reports = ReportClient(cast(grpc.aio.Channel, channel), b"t")
    if healthy:
        await reports.probe()
    else:
        with pytest.raises((ConnectionError, grpc.aio.AioRpcError), match=r"NOT_SERVING|UNAVAILABLE"):
            await reports.probe()
    assert channel.calls[0].request == health_pb2.HealthCheckRequest(service="")


async def test_close_closes_the_channel() -> None:
    reports, channel = reports_on(job(attempts=1))
    await reports.close()
    assert channel.closed


async def test_a_retryable_failure_says_whether_the_job_will_be_retried() -> None:
    reports, channel = reports_on(job(attempts=1, status=jobs_pb2.JOB_STATUS_QUEUED))
    assert await reports.fail(JOB_ID, 1, "crashed", retryable=True) is Failure.RETRYING
    (request,) = channel.updates()
    assert request.retryable


async def test_reports_too_big_for_one_call_are_split_across_calls_in_order() -> None:
    reports, channel = reports_on(job(attempts=1, status=jobs_pb2.JOB_STATUS_COMPLETED))
    digits = "7" * 20_899  # F(100000) has this many digits
    done = await asyncio.gather(*(reports.complete(f"job-{i}", 1, digits) for i in range(60)))
    assert all(done)
    sizes = [call.request.ByteSize() for call in channel.calls]
    assert len(sizes) >= 3
    assert all(size <= 512 * 1024 for size in sizes)
    assert [r.id for r in channel.updates()] == [f"job-{i}" for i in range(60)]


async def test_every_report_names_the_worker() -> None:
    channel = FakeChannel({UPDATE: [job(attempts=1, status=jobs_pb2.JOB_STATUS_RUNNING)]})
    reports = ReportClient(cast(grpc.aio.Channel, channel), b"t", worker_id="host-a/4242")
    await reports.claim(JOB_ID, "claim-1")
    await reports.progress(JOB_ID, "claim-1", 0.5, "half")
    await reports.complete(JOB_ID, 1, "x")
    await reports.fail(JOB_ID, 1, "boom")
    assert [r.worker_id for r in channel.updates()] == ["host-a/4242"] * 4

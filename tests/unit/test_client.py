"""The client helper's own logic: payload conversion, metadata, final states, error decoding, polling, paging.

Calls go to fake stubs here; the helper against the running system is covered end to end.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast

import grpc
import pytest
from google.protobuf import any_pb2, struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from common.errors import FieldViolation as ServerFieldViolation
from common.errors import InvalidArgument, NotFound, Unavailable
from common.server import status_for
from jobqueue import client as client_module
from jobqueue.client import (
    FINAL_STATUSES,
    MAX_SAFE_INTEGER,
    FieldViolation,
    JobQueueError,
    JobsClient,
    auth_metadata,
    connect_jobs,
    is_final,
    to_value,
)
from jobqueue.jobs.v1 import jobs_pb2

# --- payloads -------------------------------------------------------------------------------------------


def test_string_payload_is_a_string_value() -> None:
    value = to_value("hello world")
    assert value.WhichOneof("kind") == "string_value"
    assert value.string_value == "hello world"


@pytest.mark.parametrize("number", [0, 10, -3, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER])
def test_int_payload_is_an_exact_number_value(number: int) -> None:
    value = to_value(number)
    assert value.WhichOneof("kind") == "number_value"
    assert int(value.number_value) == number


def test_float_payload_is_a_number_value() -> None:
    assert to_value(2.5).number_value == 2.5


@pytest.mark.parametrize("flag", [True, False])
def test_bool_payload_is_refused(flag: bool) -> None:
    with pytest.raises(ValueError, match="bool"):
        to_value(flag)


@pytest.mark.parametrize("number", [MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 10**30])
def test_int_beyond_2_pow_53_is_refused(number: int) -> None:
    with pytest.raises(ValueError, match="2\\*\\*53"):
        to_value(number)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_float_is_refused(number: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        to_value(number)


@pytest.mark.parametrize("payload", [None, [1], {"n": 1}, b"bytes"])
def test_other_types_are_refused(payload: object) -> None:
    with pytest.raises(TypeError):
        to_value(payload)  # type: ignore[arg-type]


def test_prepared_value_is_copied_not_shared() -> None:
    original = struct_pb2.Value(string_value="x")
    converted = to_value(original)
    assert converted == original
    assert converted is not original


# --- metadata and statuses ------------------------------------------------------------------------------


def test_auth_metadata_is_a_bearer_header() -> None:
    assert auth_metadata("abc.def") == (("authorization", "Bearer abc.def"),)


@pytest.mark.parametrize("token", ["", " abc", "abc\n"])
def test_auth_metadata_refuses_a_malformed_token(token: str) -> None:
    with pytest.raises(ValueError, match="token"):
        auth_metadata(token)


@pytest.mark.parametrize(
    ("status", "final"),
    [
        (jobs_pb2.JOB_STATUS_UNSPECIFIED, False),
        (jobs_pb2.JOB_STATUS_QUEUED, False),
        (jobs_pb2.JOB_STATUS_RUNNING, False),
        (jobs_pb2.JOB_STATUS_COMPLETED, True),
        (jobs_pb2.JOB_STATUS_FAILED, True),
        (jobs_pb2.JOB_STATUS_CANCELLED, True),
    ],
)
def test_final_statuses(status: jobs_pb2.JobStatus.ValueType, final: bool) -> None:
    assert is_final(status) is final


def test_every_status_is_classified() -> None:
    # A status added to the proto must be placed deliberately, final or not.
    assert set(jobs_pb2.JobStatus.values()) == {0, 1, 2} | set(FINAL_STATUSES)


# --- errors ---------------------------------------------------------------------------------------------


def _rpc_error(status: grpc.Status) -> grpc.aio.AioRpcError:
    """The error a grpc.aio stub raises for ``status``."""
    trailing = grpc.aio.Metadata(*status.trailing_metadata)
    return grpc.aio.AioRpcError(status.code, grpc.aio.Metadata(), trailing, status.details, None)


def _packed(*details: Any) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return packed


def test_error_decodes_what_the_servers_send() -> None:
    sent = status_for(InvalidArgument([ServerFieldViolation("payload", "must be a string")], reason="BAD_PAYLOAD"))
    error = JobQueueError.from_rpc_error(_rpc_error(sent))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "BAD_PAYLOAD"
    assert error.domain == "jobqueue"
    assert error.field_violations == (FieldViolation("payload", "must be a string"),)
    assert error.message == "payload: must be a string"
    assert not error.retryable


def test_error_decodes_a_constructed_status() -> None:
    status = status_pb2.Status(
        code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
        message="two bad fields",
        details=_packed(
            error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT", domain="example", metadata={"k": "v"}),
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field="email", description="is not an email"),
                    error_details_pb2.BadRequest.FieldViolation(field="name", description="is empty"),
                ]
            ),
        ),
    )
    error = JobQueueError.from_rpc_error(_rpc_error(rpc_status.to_status(status)))
    assert (error.code, error.message, error.reason, error.domain) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "two bad fields",
        "INVALID_ARGUMENT",
        "example",
    )
    assert dict(error.metadata) == {"k": "v"}
    assert [v.field for v in error.field_violations] == ["email", "name"]
    assert str(error) == "INVALID_ARGUMENT: two bad fields [INVALID_ARGUMENT]"


def test_error_without_details_keeps_code_and_message() -> None:
    error = JobQueueError.from_rpc_error(
        grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down", None)
    )
    assert (error.code, error.message, error.reason, error.field_violations) == (
        grpc.StatusCode.UNAVAILABLE,
        "down",
        "",
        (),
    )
    assert error.retryable


def test_error_whose_details_contradict_the_status_trusts_the_status() -> None:
    details = status_for(NotFound("no such job"))
    error = JobQueueError.from_rpc_error(
        grpc.aio.AioRpcError(
            grpc.StatusCode.INTERNAL,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(*details.trailing_metadata),
            "internal error",
            None,
        )
    )
    assert (error.code, error.message, error.reason) == (grpc.StatusCode.INTERNAL, "internal error", "")


# --- polling and paging against fake stubs --------------------------------------------------------------


class FakeMethod:
    """Stands in for a grpc.aio unary method: answers (or raises) from a script, records each call."""

    def __init__(self, answers: Sequence[Any]) -> None:
        self._answers: Iterator[Any] = iter(answers)
        self.calls: list[tuple[Any, float | None, Any]] = []

    async def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
        self.calls.append((request, timeout, metadata))
        answer = next(self._answers)
        if isinstance(answer, BaseException):
            raise answer
        return answer


class FakeStub:
    """A JobService stub whose methods are FakeMethods."""

    def __init__(self, **methods: FakeMethod) -> None:
        for name, method in methods.items():
            setattr(self, name, method)


@pytest.fixture
async def client() -> AsyncIterator[JobsClient]:
    # The channel is never used (the stub is replaced), so nothing listens on it.
    async with connect_jobs("127.0.0.1:1", token="t0ken", call_timeout=5.0) as jobs:
        yield jobs


def _got(status: jobs_pb2.JobStatus.ValueType) -> jobs_pb2.GetJobResponse:
    return jobs_pb2.GetJobResponse(job=jobs_pb2.Job(id="j1", status=status))


def _unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down", None)


async def test_wait_polls_until_final_through_transient_errors(client: JobsClient) -> None:
    get = FakeMethod(
        [
            _got(jobs_pb2.JOB_STATUS_QUEUED),
            _unavailable(),
            _got(jobs_pb2.JOB_STATUS_RUNNING),
            _got(jobs_pb2.JOB_STATUS_COMPLETED),
        ]
    )
    client.stub = cast(Any, FakeStub(GetJob=get))
    job = await client.wait("j1", timeout=5, poll_interval=0.01)
    assert job.status == jobs_pb2.JOB_STATUS_COMPLETED
    assert len(get.calls) == 4
    request, timeout, metadata = get.calls[0]
    assert request.id == "j1"
    assert metadata == (("authorization", "Bearer t0ken"),)
    assert timeout is not None
    assert 0 < timeout <= 5.0


async def test_wait_returns_a_failed_job(client: JobsClient) -> None:
    client.stub = cast(Any, FakeStub(GetJob=FakeMethod([_got(jobs_pb2.JOB_STATUS_FAILED)])))
    assert (await client.wait("j1", timeout=5, poll_interval=0.01)).status == jobs_pb2.JOB_STATUS_FAILED


async def test_wait_raises_a_refusal_at_once(client: JobsClient) -> None:
    not_found = _rpc_error(status_for(NotFound("no such job")))
    client.stub = cast(Any, FakeStub(GetJob=FakeMethod([not_found])))
    with pytest.raises(JobQueueError) as caught:
        await client.wait("j1", timeout=5, poll_interval=0.01)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.reason == "NOT_FOUND"


async def test_wait_times_out_naming_the_last_status(client: JobsClient) -> None:
    client.stub = cast(Any, FakeStub(GetJob=FakeMethod([_got(jobs_pb2.JOB_STATUS_RUNNING)] * 1000)))
    with pytest.raises(TimeoutError, match="JOB_STATUS_RUNNING"):
        await client.wait("j1", timeout=0.2, poll_interval=0.02)


async def test_submit_and_wait_sends_a_converted_payload(client: JobsClient) -> None:
    create = FakeMethod([jobs_pb2.CreateJobResponse(job=jobs_pb2.Job(id="j1", status=jobs_pb2.JOB_STATUS_QUEUED))])
    client.stub = cast(Any, FakeStub(CreateJob=create, GetJob=FakeMethod([_got(jobs_pb2.JOB_STATUS_COMPLETED)])))
    job = await client.submit_and_wait("fibonacci_calc", 10, timeout=5)
    assert job.status == jobs_pb2.JOB_STATUS_COMPLETED
    request = create.calls[0][0]
    assert request.type == "fibonacci_calc"
    assert request.payload == struct_pb2.Value(number_value=10)


async def test_submit_refuses_a_bad_payload_before_calling(client: JobsClient) -> None:
    create = FakeMethod([])
    client.stub = cast(Any, FakeStub(CreateJob=create))
    with pytest.raises(ValueError, match="bool"):
        await client.submit("fibonacci_calc", True)
    assert create.calls == []


async def test_list_follows_every_page(client: JobsClient) -> None:
    pages = FakeMethod(
        [
            jobs_pb2.ListJobsResponse(jobs=[jobs_pb2.Job(id="a"), jobs_pb2.Job(id="b")], next_page_token="p2"),
            jobs_pb2.ListJobsResponse(jobs=[jobs_pb2.Job(id="c")], next_page_token=""),
        ]
    )
    client.stub = cast(Any, FakeStub(ListJobs=pages))
    ids = [job.id async for job in client.list(status=jobs_pb2.JOB_STATUS_COMPLETED, job_type="x", page_size=2)]
    assert ids == ["a", "b", "c"]
    first, second = (call[0] for call in pages.calls)
    assert (first.page_token, second.page_token) == ("", "p2")
    assert (second.status, second.type, second.page_size) == (jobs_pb2.JOB_STATUS_COMPLETED, "x", 2)


async def test_dead_jobs_are_listed_page_after_page_and_rerun(client: JobsClient) -> None:
    pages = FakeMethod(
        [
            jobs_pb2.ListDeadJobsResponse(jobs=[jobs_pb2.Job(id="a")], next_page_token="p2"),
            jobs_pb2.ListDeadJobsResponse(jobs=[jobs_pb2.Job(id="b")], next_page_token=""),
        ]
    )
    rerun = FakeMethod([jobs_pb2.RerunJobResponse(job=jobs_pb2.Job(id="a", status=jobs_pb2.JOB_STATUS_QUEUED))])
    rerun_dead = FakeMethod([jobs_pb2.RerunDeadJobsResponse(rerun_count=7)])
    client.stub = cast(Any, FakeStub(ListDeadJobs=pages, RerunJob=rerun, RerunDeadJobs=rerun_dead))
    assert [job.id async for job in client.list_dead(job_type="x", page_size=1)] == ["a", "b"]
    second = pages.calls[1][0]
    assert (second.page_token, second.type, second.page_size) == ("p2", "x", 1)
    assert (await client.rerun("a", max_attempts=2)).status == jobs_pb2.JOB_STATUS_QUEUED
    assert (rerun.calls[0][0].id, rerun.calls[0][0].max_attempts) == ("a", 2)
    assert await client.rerun_dead(job_type="x") == 7
    assert rerun_dead.calls[0][0].type == "x"


async def test_a_refused_call_raises_job_queue_error(client: JobsClient) -> None:
    refused = _rpc_error(status_for(InvalidArgument([ServerFieldViolation("type", "unknown job type")])))
    client.stub = cast(Any, FakeStub(CreateJob=FakeMethod([refused])))
    with pytest.raises(JobQueueError) as caught:
        await client.submit("nope", "x")
    assert caught.value.field_violations == (FieldViolation("type", "unknown job type"),)
    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)


async def test_submit_retries_an_unavailable_service_with_the_same_request_id(client: JobsClient) -> None:
    down = _rpc_error(status_for(Unavailable("database unreachable")))
    created = jobs_pb2.CreateJobResponse(job=jobs_pb2.Job(id="j1", status=jobs_pb2.JOB_STATUS_QUEUED))
    create = FakeMethod([down, down, created])
    client.stub = cast(Any, FakeStub(CreateJob=create))
    assert (await client.submit("reverse_string", "x")).id == "j1"
    request_ids = {call[0].request_id for call in create.calls}
    assert len(create.calls) == 3
    assert len(request_ids) == 1
    assert uuid.UUID(request_ids.pop())


async def test_submit_gives_up_after_its_attempts_and_never_retries_a_refusal(client: JobsClient) -> None:
    down = _rpc_error(status_for(Unavailable("database unreachable")))
    create = FakeMethod([down, down])
    client.stub = cast(Any, FakeStub(CreateJob=create))
    with pytest.raises(JobQueueError) as caught:
        await client.submit("reverse_string", "x", request_id=str(uuid.UUID(int=7)), attempts=2)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert [call[0].request_id for call in create.calls] == [str(uuid.UUID(int=7))] * 2


class RecordingRandom(random.Random):
    """A random.Random whose uniform() records its bounds and answers the lower one (the shortest wait)."""

    def __init__(self) -> None:
        super().__init__()
        self.bounds: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append((a, b))
        return a


async def test_submit_waits_a_jittered_doubling_delay_between_tries(
    client: JobsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = RecordingRandom()
    monkeypatch.setattr(client_module, "_RANDOM", rng)
    down = _rpc_error(status_for(Unavailable("database unreachable")))
    created = jobs_pb2.CreateJobResponse(job=jobs_pb2.Job(id="j1", status=jobs_pb2.JOB_STATUS_QUEUED))
    client.stub = cast(Any, FakeStub(CreateJob=FakeMethod([down, down, created])))
    assert (await client.submit("reverse_string", "x")).id == "j1"
    # Each wait is drawn from [ceiling / 2, ceiling], the ceiling doubling per failure.
    assert rng.bounds == [(0.2, 0.4), (0.4, 0.8)]


def test_retry_delays_are_spread_within_half_to_all_of_the_ceiling() -> None:
    rng = random.Random(1)  # a generator of the test's own: the global one is left alone
    for failures, ceiling in [(1, 0.4), (2, 0.8), (3, 1.6)]:
        delays = [client_module._retry_delay(failures, rng) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        # Jitter: clients that failed together come back at different moments, over most of the range.
        assert len(set(delays)) == len(delays)
        assert max(delays) - min(delays) > 0.8 * (ceiling / 2)


def test_retry_delay_never_overflows() -> None:
    assert client_module._retry_delay(10_000) > 0

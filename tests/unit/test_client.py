"""The client helper's own logic: payload conversion, metadata, statuses as words, the job view, error
decoding, polling, paging, retries and token refresh.

Calls go to fake stubs here; the helper against the running system is covered end to end.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import math
import random
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast

import grpc
import pytest
from google.protobuf import any_pb2, json_format, struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from jobqueue import client as client_module
from jobqueue.client import (
    FINAL_STATUSES,
    MAX_SAFE_INTEGER,
    FieldViolation,
    Job,
    JobPriority,
    JobProgress,
    JobQueueError,
    JobsClient,
    JobStatus,
    JobType,
    auth_metadata,
    connect_jobs,
    is_final,
    login_with,
    to_value,
)
from jobqueue.jobs.v1 import jobs_pb2
from jobqueue.runtime.errors import FieldViolation as ServerFieldViolation
from jobqueue.runtime.errors import InvalidArgument, NotFound, Unauthenticated, Unavailable
from jobqueue.runtime.server import status_for

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


def test_objects_and_arrays_become_json_values_all_the_way_down() -> None:
    payload = {"targets": [{"host": "a", "port": 80}, ("b", 2.5)], "verbose": True, "note": None, "empty": {}}
    value = to_value(payload)
    assert json_format.MessageToDict(value) == {
        "targets": [{"host": "a", "port": 80}, ["b", 2.5]],
        "verbose": True,
        "note": None,
        "empty": {},
    }
    assert value.struct_value.fields["verbose"].WhichOneof("kind") == "bool_value"


@pytest.mark.parametrize(
    ("payload", "error"),
    [({"n": 2**60}, ValueError), ([math.nan], ValueError), ({1: "x"}, TypeError), ({"n": b"x"}, TypeError)],
)
def test_what_a_json_value_cannot_hold_is_refused_inside_objects_too(payload: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        to_value(payload)  # type: ignore[arg-type]


@pytest.mark.parametrize("payload", [None, b"bytes", {1, 2}])
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


def test_final_statuses_are_the_enum_members() -> None:
    assert {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED} == FINAL_STATUSES
    assert all(type(status) is JobStatus for status in FINAL_STATUSES)
    assert is_final(JobStatus.FAILED)
    assert not is_final(JobStatus.RUNNING)


# --- statuses and priorities as words -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "number", "word"),
    [
        (JobStatus.COMPLETED, jobs_pb2.JOB_STATUS_COMPLETED, "COMPLETED"),
        (JobStatus.QUEUED, jobs_pb2.JOB_STATUS_QUEUED, "QUEUED"),
        (JobPriority.HIGH, jobs_pb2.JOB_PRIORITY_HIGH, "HIGH"),
    ],
)
def test_statuses_and_priorities_print_as_words_and_compare_as_numbers(
    member: enum.IntEnum, number: int, word: str
) -> None:
    assert (str(member), f"{member}", f"{member:>10}", repr(member)) == (
        word,
        word,
        word.rjust(10),
        f"{type(member).__name__}.{word}",
    )
    assert str([member]) == f"[{type(member).__name__}.{word}]"
    assert member == number
    assert f"{member:d}" == str(number)
    assert type(member)(number) is member
    # Requests take them as they take the proto numbers (the .pyi stubs type those as jobs_pb2's own).
    assert jobs_pb2.ListJobsRequest(status=JobStatus.FAILED).status == jobs_pb2.JOB_STATUS_FAILED  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mirror", "proto", "prefix"),
    [(JobStatus, jobs_pb2.JobStatus, "JOB_STATUS_"), (JobPriority, jobs_pb2.JobPriority, "JOB_PRIORITY_")],
)
def test_the_enums_mirror_the_proto_enums(mirror: type[enum.IntEnum], proto: Any, prefix: str) -> None:
    assert [(member.name, member.value) for member in mirror] == [
        (name.removeprefix(prefix), number) for name, number in proto.items()
    ]


def test_an_enum_that_drifted_from_the_proto_refuses_to_import() -> None:
    class Stale(client_module._ProtoEnum):
        UNSPECIFIED = 0
        QUEUED = 1

    with pytest.raises(ImportError, match=r"Stale is .* but jobqueue\.jobs\.v1\.JobStatus is"):
        client_module._check_mirror(Stale, jobs_pb2.JobStatus.DESCRIPTOR, "JOB_STATUS_")


def test_a_number_from_a_newer_service_is_kept_not_refused() -> None:
    status = JobStatus(9)
    assert (status, str(status), repr(status)) == (9, "UNKNOWN_9", "JobStatus.UNKNOWN_9")
    assert not is_final(status)
    assert Job.from_proto(jobs_pb2.Job(id="j1", status=cast(Any, 9))).status == 9
    with pytest.raises(ValueError, match="not a valid JobStatus"):
        JobStatus("COMPLETED")  # type: ignore[arg-type]


# --- the job view ---------------------------------------------------------------------------------------

_TRACEBACK = "RuntimeError: disk on fire\nTraceback (most recent call last):\n" + "".join(
    f'  File "/srv/handlers/step_{i}.py", line {i}, in step_{i}\n    step_{i + 1}()\n' for i in range(200)
)


def _full_job() -> jobs_pb2.Job:
    message = jobs_pb2.Job(
        id="j1",
        type="fibonacci_calc",
        payload=struct_pb2.Value(number_value=10),
        status=jobs_pb2.JOB_STATUS_COMPLETED,
        result="55",
        attempts=1,
        owner_id="u1",
        priority=jobs_pb2.JOB_PRIORITY_HIGH,
        max_attempts=3,
        timeout_seconds=60,
    )
    for seconds, stamp in enumerate(
        (message.created_at, message.updated_at, message.started_at, message.finished_at), start=1
    ):
        stamp.FromSeconds(1_800_000_000 + seconds)
    return message


def test_the_job_view_converts_every_field() -> None:
    message = _full_job()
    job = Job.from_proto(message)
    at = datetime.datetime.fromtimestamp(1_800_000_000, datetime.UTC)
    assert job == Job(
        id="j1",
        type="fibonacci_calc",
        status=JobStatus.COMPLETED,
        payload=10,
        result="55",
        result_value="55",
        error=None,
        attempts=1,
        max_attempts=3,
        priority=JobPriority.HIGH,
        timeout_seconds=60,
        owner_id="u1",
        created_at=at + datetime.timedelta(seconds=1),
        updated_at=at + datetime.timedelta(seconds=2),
        started_at=at + datetime.timedelta(seconds=3),
        finished_at=at + datetime.timedelta(seconds=4),
        next_attempt_at=None,
        progress=None,
        attempt_history=(),
        proto=jobs_pb2.Job(),
    )
    assert type(job.status) is JobStatus
    assert type(job.priority) is JobPriority
    assert type(job.payload) is int
    assert job.proto is message


def test_absent_fields_are_none_not_empty() -> None:
    job = Job.from_proto(jobs_pb2.Job(id="j1", status=jobs_pb2.JOB_STATUS_QUEUED))
    assert (job.result, job.error, job.started_at, job.finished_at, job.next_attempt_at) == (None,) * 5
    assert (job.result_value, job.progress) == (None, None)
    assert Job.from_proto(jobs_pb2.Job(result="")).result == ""  # present but empty is not absent


def test_the_job_view_has_every_field_of_the_proto() -> None:
    # A field added to jobqueue.jobs.v1.Job must be added to the view deliberately.
    view = {name for name in Job.__dataclass_fields__ if name != "proto"}
    assert view == {f.name for f in jobs_pb2.Job.DESCRIPTOR.fields}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (struct_pb2.Value(string_value="hello"), "hello"),
        (struct_pb2.Value(number_value=10), 10),
        (struct_pb2.Value(number_value=2.5), 2.5),
        (struct_pb2.Value(number_value=2.0**60), 2.0**60),  # beyond 2**53: not claimed exact
        (struct_pb2.Value(bool_value=True), True),
        (struct_pb2.Value(null_value=struct_pb2.NULL_VALUE), None),
        (struct_pb2.Value(list_value=struct_pb2.ListValue(values=[struct_pb2.Value(string_value="a")])), ["a"]),
        (struct_pb2.Value(struct_value=struct_pb2.Struct(fields={"n": struct_pb2.Value(number_value=1)})), {"n": 1}),
    ],
)
def test_payloads_come_back_as_python_values(value: struct_pb2.Value, expected: object) -> None:
    payload = Job.from_proto(jobs_pb2.Job(payload=value)).payload
    assert payload == expected
    assert type(payload) is type(expected)


@pytest.mark.parametrize(
    ("value", "text", "expected"),
    [
        (struct_pb2.Value(string_value="55"), "55", "55"),
        (struct_pb2.Value(number_value=42), "42", 42),
        (struct_pb2.Value(null_value=struct_pb2.NULL_VALUE), "null", None),
        (
            struct_pb2.Value(struct_value=struct_pb2.Struct(fields={"words": struct_pb2.Value(number_value=2)})),
            '{"words":2}',
            {"words": 2},
        ),
    ],
)
def test_a_result_comes_back_as_its_json_value_and_as_text(
    value: struct_pb2.Value, text: str, expected: object
) -> None:
    job = Job.from_proto(jobs_pb2.Job(status=jobs_pb2.JOB_STATUS_COMPLETED, result=text, result_value=value))
    assert (job.result, job.result_value) == (text, expected)
    assert type(job.result_value) is type(expected)


def test_a_result_from_a_service_without_result_value_is_its_string() -> None:
    assert Job.from_proto(jobs_pb2.Job(status=jobs_pb2.JOB_STATUS_COMPLETED, result="55")).result_value == "55"


def test_progress_is_its_fraction_note_and_time() -> None:
    message = jobs_pb2.Job(id="j3", type="crawl", status=jobs_pb2.JOB_STATUS_RUNNING, attempts=1, max_attempts=3)
    message.progress.fraction = 0.25
    message.progress.message = "page 3 of 12"
    message.progress.updated_at.FromSeconds(1_800_000_000)
    job = Job.from_proto(message)
    at = datetime.datetime.fromtimestamp(1_800_000_000, datetime.UTC)
    assert job.progress == JobProgress(0.25, "page 3 of 12", at)
    assert str(job) == "job j3 (crawl): RUNNING, attempt 1 of 3\nprogress: 25% page 3 of 12"


def test_a_failed_job_shows_its_whole_error() -> None:
    message = jobs_pb2.Job(
        id="j1",
        type="always_fails",
        status=jobs_pb2.JOB_STATUS_FAILED,
        error=_TRACEBACK,
        attempts=2,
        max_attempts=2,
    )
    job = Job.from_proto(message)
    assert job.error == _TRACEBACK
    text = str(job)
    first, second, *rest = text.split("\n")
    assert first == "job j1 (always_fails): FAILED, attempt 2 of 2"
    assert second == "error: RuntimeError: disk on fire"
    # Every line of the error, each indented under it, none cut.
    assert rest == ["  " + line for line in _TRACEBACK.split("\n")[1:]]
    assert "status=JobStatus.FAILED" in repr(job)
    assert f"error={_TRACEBACK!r}" in repr(job)


def test_a_completed_job_and_a_waiting_retry_read_as_words() -> None:
    assert str(Job.from_proto(_full_job())) == "job j1 (fibonacci_calc): COMPLETED, attempt 1 of 3\nresult: 55"
    retry = jobs_pb2.Job(
        id="j2", type="flaky", status=jobs_pb2.JOB_STATUS_QUEUED, error="TimeoutError", attempts=1, max_attempts=3
    )
    retry.next_attempt_at.FromSeconds(1_800_000_000)
    assert str(Job.from_proto(retry)) == (
        "job j2 (flaky): QUEUED, attempt 1 of 3, next attempt at 2027-01-15T08:00:00+00:00\nerror: TimeoutError"
    )


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

    def __init__(self, **methods: object) -> None:
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


class FakeStream:
    """Stands in for a grpc.aio server-streaming method: each call plays the next script of replies.

    A script is a list of replies, ending (optionally) with an error the stream then raises.
    """

    def __init__(self, scripts: Sequence[Sequence[Any]]) -> None:
        self._scripts: Iterator[Sequence[Any]] = iter(scripts)
        self.calls: list[tuple[Any, Any]] = []

    def __call__(self, request: Any, metadata: Any = None) -> AsyncIterator[Any]:
        self.calls.append((request, metadata))
        script = next(self._scripts)

        async def replies() -> AsyncIterator[Any]:
            for reply in script:
                if isinstance(reply, BaseException):
                    raise reply
                yield reply

        return replies()


def _watched(status: jobs_pb2.JobStatus.ValueType, attempts: int = 0) -> jobs_pb2.WatchJobResponse:
    return jobs_pb2.WatchJobResponse(job=jobs_pb2.Job(id="j1", status=status, attempts=attempts))


async def test_wait_watches_until_final_and_reopens_a_stream_a_restart_ended(
    client: JobsClient, delays: ImmediateRandom
) -> None:
    watch = FakeStream(
        [
            [_watched(jobs_pb2.JOB_STATUS_QUEUED), _unavailable()],
            [
                _watched(jobs_pb2.JOB_STATUS_QUEUED),
                _watched(jobs_pb2.JOB_STATUS_RUNNING, 1),
                _answer(grpc.StatusCode.ABORTED),
            ],
            [_watched(jobs_pb2.JOB_STATUS_COMPLETED, 1)],
        ]
    )
    client.stub = cast(Any, FakeStub(WatchJob=watch))
    job = await client.wait("j1", timeout=5)
    assert (type(job), str(job.status)) == (Job, "COMPLETED")
    assert len(watch.calls) == 3
    request, metadata = watch.calls[0]
    assert (request.id, request.view) == ("j1", jobs_pb2.JOB_VIEW_BASIC)
    assert metadata == (("authorization", "Bearer t0ken"),)


async def test_watch_yields_each_state_once_and_stops_at_the_final_one(
    client: JobsClient, delays: ImmediateRandom
) -> None:
    watch = FakeStream(
        [
            [_watched(jobs_pb2.JOB_STATUS_QUEUED), _watched(jobs_pb2.JOB_STATUS_RUNNING, 1), _unavailable()],
            # The reopened stream starts with the state already yielded: it is not yielded again.
            [_watched(jobs_pb2.JOB_STATUS_RUNNING, 1), _watched(jobs_pb2.JOB_STATUS_FAILED, 1)],
        ]
    )
    client.stub = cast(Any, FakeStub(WatchJob=watch))
    seen = [str(job.status) async for job in client.watch("j1", history=True)]
    assert seen == ["QUEUED", "RUNNING", "FAILED"]
    assert watch.calls[0][0].view == jobs_pb2.JOB_VIEW_FULL


async def test_watch_gives_up_after_its_attempts(client: JobsClient, delays: ImmediateRandom) -> None:
    client.stub = cast(Any, FakeStub(WatchJob=FakeStream([[_unavailable()]] * 3)))
    with pytest.raises(JobQueueError) as caught:
        await anext(client.watch("j1", attempts=3))
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


async def test_wait_returns_a_failed_job(client: JobsClient) -> None:
    client.stub = cast(Any, FakeStub(WatchJob=FakeStream([[_watched(jobs_pb2.JOB_STATUS_FAILED)]])))
    assert (await client.wait("j1", timeout=5)).status == JobStatus.FAILED


async def test_wait_raises_a_refusal_at_once(client: JobsClient) -> None:
    not_found = _rpc_error(status_for(NotFound("no such job")))
    watch = FakeStream([[not_found]])
    client.stub = cast(Any, FakeStub(WatchJob=watch))
    with pytest.raises(JobQueueError) as caught:
        await client.wait("j1", timeout=5)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.reason == "NOT_FOUND"
    assert len(watch.calls) == 1


async def test_wait_times_out_naming_the_last_status(client: JobsClient) -> None:
    class Endless:
        def __call__(self, request: Any, metadata: Any = None) -> AsyncIterator[Any]:
            async def replies() -> AsyncIterator[Any]:
                yield _watched(jobs_pb2.JOB_STATUS_RUNNING)
                await asyncio.sleep(3600)

            return replies()

    client.stub = cast(Any, FakeStub(WatchJob=Endless()))
    with pytest.raises(TimeoutError, match=r"\(last seen: RUNNING\)"):
        await client.wait("j1", timeout=0.2)


async def test_wait_polls_a_service_without_watch_job(client: JobsClient) -> None:
    get = FakeMethod([_got(jobs_pb2.JOB_STATUS_RUNNING), _unavailable(), _got(jobs_pb2.JOB_STATUS_COMPLETED)])
    watch = FakeStream([[_answer(grpc.StatusCode.UNIMPLEMENTED)]])
    client.stub = cast(Any, FakeStub(WatchJob=watch, GetJob=get))
    assert (await client.wait("j1", timeout=5, poll_interval=0.01)).status == JobStatus.COMPLETED
    assert len(get.calls) == 3


async def test_watch_jobs_yields_batches_starting_with_the_empty_one(client: JobsClient) -> None:
    batch = jobs_pb2.WatchJobsResponse(jobs=[jobs_pb2.Job(id="a"), jobs_pb2.Job(id="b")])
    watch = FakeStream([[jobs_pb2.WatchJobsResponse(), batch, _answer(grpc.StatusCode.ABORTED)]])
    client.stub = cast(Any, FakeStub(WatchJobs=watch))
    seen: list[list[str]] = []

    async def read() -> None:
        async for jobs in client.watch_jobs(status=JobStatus.RUNNING, job_type="t", all_users=True):
            seen.append([job.id for job in jobs])

    with pytest.raises(JobQueueError) as caught:
        await read()
    assert seen == [[], ["a", "b"]]
    assert caught.value.code == grpc.StatusCode.ABORTED  # not reopened: changes may have been missed
    request = watch.calls[0][0]
    assert (request.status, request.type, request.all_users) == (jobs_pb2.JOB_STATUS_RUNNING, "t", True)


async def test_submit_and_wait_sends_a_converted_payload(client: JobsClient) -> None:
    create = FakeMethod([jobs_pb2.CreateJobResponse(job=jobs_pb2.Job(id="j1", status=jobs_pb2.JOB_STATUS_QUEUED))])
    watch = FakeStream([[_watched(jobs_pb2.JOB_STATUS_COMPLETED)]])
    client.stub = cast(Any, FakeStub(CreateJob=create, WatchJob=watch))
    job = await client.submit_and_wait("fibonacci_calc", 10, timeout=5)
    assert job.status == JobStatus.COMPLETED
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
    assert (await client.rerun("a", max_attempts=2)).status == JobStatus.QUEUED
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


# --- what the client returns ----------------------------------------------------------------------------


async def test_calls_return_job_views_that_print_words(client: JobsClient) -> None:
    create = FakeMethod([jobs_pb2.CreateJobResponse(job=jobs_pb2.Job(id="j1", status=jobs_pb2.JOB_STATUS_QUEUED))])
    pages = FakeMethod([jobs_pb2.ListJobsResponse(jobs=[jobs_pb2.Job(id="j1", status=jobs_pb2.JOB_STATUS_FAILED)])])
    client.stub = cast(Any, FakeStub(CreateJob=create, ListJobs=pages))
    submitted = await client.submit("reverse_string", "x", priority=JobPriority.HIGH)
    assert isinstance(submitted, Job)
    assert str(submitted.status) == "QUEUED"
    assert create.calls[0][0].priority == jobs_pb2.JOB_PRIORITY_HIGH
    [listed] = [job async for job in client.list(status=JobStatus.FAILED)]
    assert (type(listed), f"{listed.status}") == (Job, "FAILED")
    assert pages.calls[0][0].status == jobs_pb2.JOB_STATUS_FAILED


# --- retrying reads -------------------------------------------------------------------------------------


def _answer(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), code.name.lower(), None)


class ImmediateRandom(RecordingRandom):
    """Records each delay's bounds and waits not at all."""

    def uniform(self, a: float, b: float) -> float:
        super().uniform(a, b)
        return 0.0


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> ImmediateRandom:
    rng = ImmediateRandom()
    monkeypatch.setattr(client_module, "_RANDOM", rng)
    return rng


async def test_get_is_retried_on_unavailable_and_on_a_stopping_services_cancelled(
    client: JobsClient, delays: ImmediateRandom
) -> None:
    get = FakeMethod([_unavailable(), _answer(grpc.StatusCode.CANCELLED), _got(jobs_pb2.JOB_STATUS_RUNNING)])
    client.stub = cast(Any, FakeStub(GetJob=get))
    assert (await client.get("j1")).status == JobStatus.RUNNING
    assert [call[0].id for call in get.calls] == ["j1"] * 3
    assert delays.bounds == [(0.2, 0.4), (0.4, 0.8)]  # the jittered, doubling backoff


async def test_get_gives_up_after_its_attempts(client: JobsClient, delays: ImmediateRandom) -> None:
    get = FakeMethod([_unavailable()] * 4)
    client.stub = cast(Any, FakeStub(GetJob=get))
    with pytest.raises(JobQueueError) as caught:
        await client.get("j1", attempts=4)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(get.calls) == 4


@pytest.mark.parametrize("code", [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.NOT_FOUND])
async def test_get_does_not_retry_its_own_deadline_or_a_refusal(
    client: JobsClient, delays: ImmediateRandom, code: grpc.StatusCode
) -> None:
    get = FakeMethod([_answer(code), _got(jobs_pb2.JOB_STATUS_RUNNING)])
    client.stub = cast(Any, FakeStub(GetJob=get))
    with pytest.raises(JobQueueError) as caught:
        await client.get("j1")
    assert caught.value.code == code
    assert len(get.calls) == 1


async def test_a_page_is_retried_with_its_own_token(client: JobsClient, delays: ImmediateRandom) -> None:
    pages = FakeMethod(
        [
            jobs_pb2.ListJobsResponse(jobs=[jobs_pb2.Job(id="a")], next_page_token="p2"),
            _answer(grpc.StatusCode.CANCELLED),
            jobs_pb2.ListJobsResponse(jobs=[jobs_pb2.Job(id="b")]),
        ]
    )
    dead = FakeMethod([_unavailable(), jobs_pb2.ListDeadJobsResponse(jobs=[jobs_pb2.Job(id="c")])])
    client.stub = cast(Any, FakeStub(ListJobs=pages, ListDeadJobs=dead))
    assert [job.id async for job in client.list()] == ["a", "b"]
    assert [call[0].page_token for call in pages.calls] == ["", "p2", "p2"]
    assert [job.id async for job in client.list_dead()] == ["c"]
    assert len(dead.calls) == 2


async def test_writes_other_than_create_are_not_retried(client: JobsClient, delays: ImmediateRandom) -> None:
    cancel = FakeMethod([_unavailable()])
    rerun = FakeMethod([_answer(grpc.StatusCode.CANCELLED)])
    client.stub = cast(Any, FakeStub(CancelJob=cancel, RerunJob=rerun))
    with pytest.raises(JobQueueError):
        await client.cancel("j1")
    with pytest.raises(JobQueueError):
        await client.rerun("j1")
    assert (len(cancel.calls), len(rerun.calls)) == (1, 1)


async def test_wait_reopens_a_watch_a_stopping_service_cancelled(client: JobsClient) -> None:
    watch = FakeStream([[_answer(grpc.StatusCode.CANCELLED)], [_watched(jobs_pb2.JOB_STATUS_COMPLETED)]])
    client.stub = cast(Any, FakeStub(WatchJob=watch))
    assert (await client.wait("j1", timeout=5)).status == JobStatus.COMPLETED
    assert len(watch.calls) == 2


# --- refreshing an expired token ------------------------------------------------------------------------


def _expired() -> grpc.aio.AioRpcError:
    return _rpc_error(status_for(Unauthenticated("access token has expired; log in again")))


class Refresh:
    """A refresh callable that hands out fresh-1, fresh-2, ... (or raises ``error``), slowly, counting calls."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls = 0
        self.error = error

    async def __call__(self) -> str:
        self.calls += 1
        await asyncio.sleep(0.05)  # long enough for every concurrent call to meet the same stale token
        if self.error is not None:
            raise self.error
        return f"fresh-{self.calls}"


class TokenChecking:
    """A GetJob that answers UNAUTHENTICATED unless the call carries ``valid``, recording the tokens sent.

    Each call is answered after 0.01 s (so that calls overlap, as calls in flight
    do), or after the next of ``latencies``, while any are left.
    """

    def __init__(self, valid: str, latencies: Sequence[float] = ()) -> None:
        self.valid = valid
        self.tokens: list[str] = []
        self._latencies = iter(latencies)

    async def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
        [(_, value)] = metadata
        token = value.removeprefix("Bearer ")
        self.tokens.append(token)
        await asyncio.sleep(next(self._latencies, 0.01))
        if token != self.valid:
            raise _expired()
        return _got(jobs_pb2.JOB_STATUS_RUNNING)


@pytest.fixture
async def refreshing() -> AsyncIterator[tuple[JobsClient, Refresh]]:
    refresh = Refresh()
    async with connect_jobs("127.0.0.1:1", token="old", refresh=refresh, call_timeout=5.0) as jobs:
        yield jobs, refresh


async def test_an_expired_token_is_refreshed_once_and_the_call_repeated(
    refreshing: tuple[JobsClient, Refresh],
) -> None:
    client, refresh = refreshing
    get = FakeMethod([_expired(), _got(jobs_pb2.JOB_STATUS_RUNNING), _got(jobs_pb2.JOB_STATUS_COMPLETED)])
    client.stub = cast(Any, FakeStub(GetJob=get))
    assert (await client.get("j1")).status == JobStatus.RUNNING
    assert (await client.get("j1")).status == JobStatus.COMPLETED  # the new token is kept
    assert [call[2] for call in get.calls] == [
        (("authorization", "Bearer old"),),
        (("authorization", "Bearer fresh-1"),),
        (("authorization", "Bearer fresh-1"),),
    ]
    assert refresh.calls == 1
    assert client.metadata == (("authorization", "Bearer fresh-1"),)


async def test_a_second_unauthenticated_is_raised(refreshing: tuple[JobsClient, Refresh]) -> None:
    client, refresh = refreshing
    cancel = FakeMethod([_expired(), _expired()])
    client.stub = cast(Any, FakeStub(CancelJob=cancel))
    with pytest.raises(JobQueueError) as caught:
        await client.cancel("j1")
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert (len(cancel.calls), refresh.calls) == (2, 1)


async def test_a_watch_opened_with_an_expired_token_is_opened_again_with_a_fresh_one(
    refreshing: tuple[JobsClient, Refresh],
) -> None:
    client, refresh = refreshing
    watch = FakeStream([[_expired()], [_watched(jobs_pb2.JOB_STATUS_COMPLETED)]])
    client.stub = cast(Any, FakeStub(WatchJob=watch))
    assert [str(job.status) async for job in client.watch("j1")] == ["COMPLETED"]
    assert [call[1] for call in watch.calls] == [
        (("authorization", "Bearer old"),),
        (("authorization", "Bearer fresh-1"),),
    ]
    assert refresh.calls == 1


async def test_without_refresh_unauthenticated_is_raised_at_once(client: JobsClient) -> None:
    get = FakeMethod([_expired(), _got(jobs_pb2.JOB_STATUS_RUNNING)])
    client.stub = cast(Any, FakeStub(GetJob=get))
    with pytest.raises(JobQueueError) as caught:
        await client.get("j1")
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert len(get.calls) == 1


async def test_concurrent_calls_share_one_refresh(refreshing: tuple[JobsClient, Refresh]) -> None:
    client, refresh = refreshing
    # The first call's answer comes after the refresh is over: it needs no refresh of its own.
    get = TokenChecking(valid="fresh-1", latencies=[0.2])
    client.stub = cast(Any, FakeStub(GetJob=get))
    jobs = await asyncio.gather(*(client.get("j1") for _ in range(20)))
    assert [job.status for job in jobs] == [JobStatus.RUNNING] * 20
    assert refresh.calls == 1
    assert sorted(get.tokens) == ["fresh-1"] * 20 + ["old"] * 20


async def test_a_failed_refresh_fails_every_waiting_call_once_and_a_later_call_tries_again(
    refreshing: tuple[JobsClient, Refresh],
) -> None:
    client, refresh = refreshing
    refresh.error = JobQueueError(grpc.StatusCode.UNAUTHENTICATED, "wrong email or password")
    client.stub = cast(Any, FakeStub(GetJob=TokenChecking(valid="fresh-2")))
    outcomes = await asyncio.gather(*(client.get("j1") for _ in range(5)), return_exceptions=True)
    assert [str(outcome) for outcome in outcomes] == ["UNAUTHENTICATED: wrong email or password"] * 5
    assert refresh.calls == 1
    refresh.error = None
    assert (await client.get("j1")).status == JobStatus.RUNNING
    assert refresh.calls == 2


async def test_a_cancelled_caller_does_not_cancel_the_shared_refresh(refreshing: tuple[JobsClient, Refresh]) -> None:
    client, refresh = refreshing
    client.stub = cast(Any, FakeStub(GetJob=TokenChecking(valid="fresh-1")))
    impatient = asyncio.ensure_future(client.get("j1"))
    patient = asyncio.ensure_future(client.get("j1"))
    await asyncio.sleep(0.03)  # both have met the expired token and wait on the refresh
    impatient.cancel()
    assert (await patient).status == JobStatus.RUNNING
    assert refresh.calls == 1
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_without_a_token_the_first_call_gets_one() -> None:
    refresh = Refresh()
    async with connect_jobs("127.0.0.1:1", refresh=refresh) as client:
        get = FakeMethod([_got(jobs_pb2.JOB_STATUS_RUNNING)])
        client.stub = cast(Any, FakeStub(GetJob=get))
        await client.get("j1")
    assert get.calls[0][2] == (("authorization", "Bearer fresh-1"),)
    assert refresh.calls == 1


def test_connect_jobs_needs_a_token_or_a_refresh() -> None:
    with pytest.raises(TypeError, match="token"):
        connect_jobs("127.0.0.1:1")


async def test_login_with_logs_in_through_an_auth_client_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    logins: list[tuple[str, str, str]] = []

    class FakeAuth:
        def __init__(self, address: str) -> None:
            self.address = address
            self.closed = False

        async def __aenter__(self) -> FakeAuth:
            return self

        async def __aexit__(self, *exc: object) -> None:
            self.closed = True

        async def login(self, email: str, password: str) -> str:
            logins.append((self.address, email, password))
            return f"token-{len(logins)}"

    opened: list[FakeAuth] = []

    def fake_connect_auth(address: str, **_: Any) -> FakeAuth:
        opened.append(FakeAuth(address))
        return opened[-1]

    monkeypatch.setattr(client_module, "connect_auth", fake_connect_auth)
    refresh = login_with("ada@example.com", "pw", address="auth:5001")
    assert (await refresh(), await refresh()) == ("token-1", "token-2")
    assert logins == [("auth:5001", "ada@example.com", "pw")] * 2
    assert [auth.closed for auth in opened] == [True, True]


def test_every_public_name_exists() -> None:
    assert [name for name in client_module.__all__ if not hasattr(client_module, name)] == []
    assert {"Job", "JobStatus", "JobPriority", "login_with", "TokenRefresh"} <= set(client_module.__all__)


def test_a_job_type_carries_every_field_of_the_proto_with_whole_numbers_as_ints() -> None:
    view = set(JobType.__dataclass_fields__)
    assert view == {f.name for f in jobs_pb2.JobType.DESCRIPTOR.fields}
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"n": {"type": "integer", "maximum": 10, "multipleOf": 0.5}}})
    declared_at = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(declared_at)
    message = jobs_pb2.JobType(
        name="resize",
        summary="an image",
        payload_schema=schema,
        version=3,
        default_max_attempts=5,
        default_timeout_seconds=600,
        declared_at=stamp,
    )
    assert JobType.from_proto(message) == JobType(
        "resize",
        "an image",
        {"type": "object", "properties": {"n": {"type": "integer", "maximum": 10, "multipleOf": 0.5}}},
        version=3,
        default_max_attempts=5,
        default_timeout_seconds=600,
        declared_at=declared_at,
    )
    assert isinstance(JobType.from_proto(message).payload_schema["properties"]["n"]["maximum"], int)
    never_declared = JobType.from_proto(jobs_pb2.JobType(name="reverse_string", summary="s", version=1))
    assert never_declared.declared_at is None
    # The two fields of 2.3.0 still come first: JobType(name, summary) keeps working.
    assert JobType("a", "b").payload_schema == {}


async def test_queue_stats_come_back_as_plain_values_and_unavailable_is_retried(
    client: JobsClient, delays: ImmediateRandom
) -> None:
    start = datetime.datetime(2026, 12, 2, 14, 0, tzinfo=datetime.UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(start)
    reply = jobs_pb2.GetQueueStatsResponse(
        job_types=[jobs_pb2.JobTypeCounts(type="resize", queued=3, running=2, failed=1)],
        minutes=[jobs_pb2.MinuteCounts(start=stamp, created=5, completed=4, failed=1, cancelled=2)],
    )
    stats = FakeMethod([_unavailable(), reply])
    client.stub = cast(Any, FakeStub(GetQueueStats=stats))
    got = await client.queue_stats(15)
    assert got == client_module.QueueStats(
        job_types=(client_module.JobTypeCounts("resize", queued=3, running=2, failed=1),),
        minutes=(client_module.MinuteCounts(start, created=5, completed=4, failed=1, cancelled=2),),
    )
    assert [call[0].minutes for call in stats.calls] == [15, 15]
    client.stub = cast(Any, FakeStub(GetQueueStats=FakeMethod([jobs_pb2.GetQueueStatsResponse()])))
    assert await client.queue_stats() == client_module.QueueStats((), ())


def test_queue_stats_views_carry_every_field_of_the_proto() -> None:
    assert set(client_module.MinuteCounts.__dataclass_fields__) == {
        f.name for f in jobs_pb2.MinuteCounts.DESCRIPTOR.fields
    }
    # `type` is a builtin's name: the view calls it job_type, as JobsClient's arguments do.
    assert set(client_module.JobTypeCounts.__dataclass_fields__) == {
        "job_type" if f.name == "type" else f.name for f in jobs_pb2.JobTypeCounts.DESCRIPTOR.fields
    }

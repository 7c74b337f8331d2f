"""The worker SDK's API (jobqueue.worker): what ``@worker.job_type`` takes and refuses, what a handler is given."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from jobqueue.runtime.backoff import Backoff
from jobqueue.worker import JobContext, PermanentError, Worker
from jobqueue.worker.__main__ import load
from jobqueue.worker.declare import DeclarationRefused, declare, to_proto
from jobqueue.worker.job_types import JobType, PayloadError, whole_numbers
from jobqueue.worker.runner import Result, Runner

TEXT = {"type": "string"}


async def echo(payload: Any) -> Any:
    return payload


def crunch(payload: Any) -> Any:
    return payload


@pytest.mark.parametrize("name", ["", "Upper", "9lives", "with-dash", "spaced name", "x" * 64, None])
def test_a_malformed_name_is_refused(name: Any) -> None:
    with pytest.raises(ValueError, match="must be lowercase letters, digits and _"):
        Worker().job_type(name, schema=TEXT)(echo)


def test_a_name_defined_twice_is_refused_in_one_worker_and_across_included_ones() -> None:
    worker = Worker()
    worker.job_type("echo", schema=TEXT)(echo)
    with pytest.raises(ValueError, match="job type 'echo' is defined twice"):
        worker.job_type("echo", schema=TEXT)(crunch)
    other = Worker()
    other.job_type("echo", schema=TEXT)(echo)
    with pytest.raises(ValueError, match=r"job types defined twice: \['echo'\]"):
        worker.include(other)


@pytest.mark.parametrize(
    ("schema", "error", "match"),
    [
        ([{"type": "string"}], TypeError, "schema must be a JSON Schema"),
        ("string", TypeError, "schema must be a JSON Schema"),
        ({"type": "strng"}, ValueError, "schema is not a valid JSON Schema"),
        ({"type": "integer", "minimum": "zero"}, ValueError, "schema is not a valid JSON Schema"),
        ({"enum": [{1, 2}]}, TypeError, "schema is not JSON"),
        ({"enum": ["x" * 70_000]}, ValueError, "schema is larger than 65536 bytes"),
    ],
)
def test_a_schema_that_is_not_a_json_schema_is_refused(schema: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Worker().job_type("bad", schema=schema)(echo)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"version": 0}, "version must be a whole number from 1"),
        ({"version": 1.5}, "version must be a whole number from 1"),
        ({"timeout_seconds": 0}, "timeout_seconds must be a whole number from 1 to 3600"),
        ({"timeout_seconds": 3601}, "timeout_seconds must be a whole number from 1 to 3600"),
        ({"max_attempts": 11}, "max_attempts must be a whole number from 1 to 10"),
        ({"max_attempts": True}, "max_attempts must be a whole number from 1 to 10"),
        ({"summary": "s" * 501}, "summary must be text of at most 500 characters"),
    ],
)
def test_defaults_outside_what_the_job_service_takes_are_refused(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Worker().job_type("bad", schema=TEXT, **options)(echo)


def test_the_decorator_returns_the_handler_itself_and_tells_async_from_plain() -> None:
    worker = Worker()
    assert worker.job_type("echo", schema=TEXT)(echo) is echo
    assert worker.job_type("crunch", schema=TEXT, inline_if=lambda _: False)(crunch) is crunch
    assert worker.types["echo"].is_async
    assert not worker.types["crunch"].is_async
    with pytest.raises(TypeError):
        worker.types["other"] = worker.types["echo"]  # type: ignore[index]


def test_inline_if_is_for_plain_handlers_only() -> None:
    with pytest.raises(ValueError, match="inline_if is for plain"):
        Worker().job_type("echo", schema=TEXT, inline_if=lambda _: True)(echo)


async def with_job(payload: Any, job: JobContext) -> Any:
    return job.attempt


def three(payload: Any, job: JobContext, extra: int) -> Any:
    return payload


def keyword_only(payload: Any, *, required: int) -> Any:
    return payload


def test_a_handler_takes_the_payload_and_may_take_the_job() -> None:
    worker = Worker()
    worker.job_type("plain", schema=TEXT)(echo)
    worker.job_type("with_job", schema=TEXT)(with_job)
    assert not worker.types["plain"].takes_job
    assert worker.types["with_job"].takes_job
    for handler in (three, keyword_only, lambda: None):
        with pytest.raises(TypeError, match=r"must take \(payload\) or \(payload, job\)"):
            worker.job_type("bad", schema=TEXT)(handler)


class Point:
    """A model class as pydantic's look to the SDK: a schema to declare, and a validating constructor."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
            "required": ["x", "y"],
        }

    @classmethod
    def model_validate(cls, value: Any) -> Point:
        if value["x"] == value["y"]:
            raise ValueError("a point off the diagonal, please")
        return cls(value["x"], value["y"])


def test_a_model_class_gives_the_schema_and_the_handler_gets_the_validated_model() -> None:
    worker = Worker()
    worker.job_type("plot", schema=Point)(echo)
    plot = worker.types["plot"]
    assert plot.schema == Point.model_json_schema()
    assert to_proto(plot).payload_schema == json_format.ParseDict(
        Point.model_json_schema(), to_proto(plot).payload_schema
    )
    point = plot.parse({"x": 1.0, "y": 2.0})  # numbers arrive as doubles
    assert isinstance(point, Point)
    assert (point.x, point.y) == (1, 2)
    assert isinstance(point.x, int)
    with pytest.raises(PayloadError, match="payload: a point off the diagonal"):
        plot.parse({"x": 3, "y": 3})
    with pytest.raises(PayloadError, match=r"payload: 'y' is a required property"):
        plot.parse({"x": 3})


def test_a_class_without_model_validate_is_refused() -> None:
    class SchemaOnly:
        @classmethod
        def model_json_schema(cls) -> dict[str, Any]:
            return {"type": "object"}

    with pytest.raises(TypeError, match="has no model_validate"):
        Worker().job_type("bad", schema=SchemaOnly)(echo)


def test_a_payload_outside_the_schema_names_where() -> None:
    worker = Worker()
    worker.job_type("items", schema={"type": "object", "properties": {"items": {"type": "array", "items": TEXT}}})(echo)
    with pytest.raises(PayloadError, match=r"^payload\['items'\]\[1\]: 5 is not of type 'string'$"):
        worker.types["items"].parse({"items": ["a", 5]})


def test_whole_numbers_reach_the_handler_as_ints() -> None:
    assert whole_numbers({"a": [1.0, 2.5, {"b": -3.0}], "c": True, "d": 1e300}) == {
        "a": [1, 2.5, {"b": -3}],
        "c": True,
        "d": 1e300,  # not exact as an int anyway: left as the double it is
    }


def test_the_declaration_is_what_the_decorator_was_given() -> None:
    worker = Worker()
    worker.job_type("echo", schema=TEXT, summary="says it back", version=3, timeout_seconds=30, max_attempts=5)(echo)
    worker.job_type("crunch", schema=TEXT)(crunch)
    declared = to_proto(worker.types["echo"])
    assert (declared.name, declared.summary, declared.version) == ("echo", "says it back", 3)
    assert (declared.default_timeout_seconds, declared.default_max_attempts) == (30, 5)
    assert json_format.MessageToDict(declared.payload_schema) == TEXT
    # No defaults given: 0, the job service's own.
    assert (to_proto(worker.types["crunch"]).default_timeout_seconds, to_proto(worker.types["crunch"]).version) == (
        0,
        1,
    )


async def test_progress_is_checked_and_only_async_handlers_have_it() -> None:
    sent: list[tuple[float, str]] = []
    job = JobContext("j", "echo", 1, lambda fraction, message: sent.append((fraction, message)))
    await job.progress(0.5, "half way")
    await job.progress(1, "m" * 300)
    assert sent == [(0.5, "half way"), (1.0, "m" * 199 + "…")]
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="progress fraction must be"):
            await job.progress(bad)
    with pytest.raises(RuntimeError, match="async handlers only"):
        JobContext("j", "crunch", 1).progress(0.5)  # a plain handler cannot await: it is told when it calls


def test_a_plain_handler_must_be_importable_by_a_handler_process() -> None:
    def nested(payload: Any) -> Any:
        return payload

    worker = Worker()
    worker.job_type("nested", schema=TEXT)(nested)
    with pytest.raises(ValueError, match="must be a function defined at the top level of a module"):
        Runner(worker.types, processes=0)
    # An async handler runs here, so it may be anything callable.
    worker = Worker()
    worker.job_type("echo", schema=TEXT)(echo)
    Runner(worker.types, processes=0)


async def test_an_async_handler_gets_the_parsed_payload_and_returns_any_json_value() -> None:
    worker = Worker()
    worker.job_type("echo", schema={"type": "object"})(echo)
    result = await Runner(worker.types, processes=0).run("echo", {"n": 2.0, "tags": ["a"]})
    assert result == Result(True, {"n": 2, "tags": ["a"]})


async def test_permanent_error_is_part_of_the_public_api() -> None:
    worker = Worker()

    @worker.job_type("refuse", schema=TEXT)
    async def refuse(payload: str) -> str:
        raise PermanentError("no")

    assert await Runner(worker.types, processes=0).run("refuse", "x") == Result(False, "PermanentError: no")


APP = Worker()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("tests.unit.test_worker_sdk", "is not MODULE:ATTRIBUTE"),
        (":APP", "is not MODULE:ATTRIBUTE"),
        ("no_such_module_here:worker", "module 'no_such_module_here' cannot be imported"),
        ("tests.unit.test_worker_sdk:TEXT", "is not a jobqueue.worker.Worker"),
        ("tests.unit.test_worker_sdk:nothing", r"is not a jobqueue.worker.Worker \(it is NoneType\)"),
    ],
)
def test_the_command_line_names_a_worker_by_module_and_attribute(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load(spec)


def test_the_command_line_loads_the_worker_it_names() -> None:
    assert load("tests.unit.test_worker_sdk:APP") is APP


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), f"fake {code.name}", None)


async def test_the_declaration_is_retried_while_the_job_service_cannot_answer() -> None:
    answers: list[grpc.aio.AioRpcError | None] = [rpc_error(grpc.StatusCode.UNAVAILABLE)] * 3 + [None]
    calls: list[list[str]] = []

    async def call(types: list[Any]) -> None:
        calls.append([t.name for t in types])
        if (answer := answers.pop(0)) is not None:
            raise answer

    await declare(call, [_type("echo")], backoff=Backoff(base=0.001, cap=0.001))
    assert calls == [["echo"]] * 4


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED]
)
async def test_a_refused_declaration_stops_the_worker_with_the_job_services_words(code: grpc.StatusCode) -> None:
    async def call(types: list[Any]) -> None:
        raise rpc_error(code)

    with pytest.raises(DeclarationRefused, match=f"refused this worker's job types: {code.name}: fake {code.name}"):
        await declare(call, [_type("echo")], backoff=Backoff(base=0.001, cap=0.001))


def _type(name: str) -> JobType:
    worker = Worker()
    worker.job_type(name, schema=TEXT)(echo)
    return worker.types[name]

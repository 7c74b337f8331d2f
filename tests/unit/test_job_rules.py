"""What a valid JobService request is: page tokens, batch sizes, attempts, listings, ids, results."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2

from job_svc.model import Progress, Status
from job_svc.rules import (
    DEFAULT_PAGE_SIZE,
    MAX_BATCH,
    MAX_PAGE_BYTES,
    MAX_PAGE_SIZE,
    check_attempts,
    check_batch,
    check_listing,
    decode_page_token,
    encode_json_result,
    encode_page_token,
    page_length,
    parse_id,
)
from job_svc.servicer import report_from_proto
from jobqueue.jobs.v1 import jobs_pb2
from jobqueue.runtime.errors import InvalidArgument
from jobqueue.runtime.limits import DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS
from tests.support.fake_job_service import stored_job

AT = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
JOB_ID = uuid.UUID("0b6c7c1e-8f0a-4d3e-9b59-2f3b1c7d9a10")
#: The job types the job service knows before any worker declared one (the database installs them).
TYPES = frozenset({"reverse_string", "uppercase_text", "fibonacci_calc"})


def token(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


@pytest.mark.parametrize("filters", [[None, None], ["COMPLETED", "reverse_string"], ["dead", None]])
def test_a_page_token_gives_back_its_cursor(filters: list[str | None]) -> None:
    assert decode_page_token(encode_page_token(AT, JOB_ID, filters), filters) == (AT, JOB_ID)


def test_a_page_token_keeps_the_offset_of_its_time() -> None:
    at = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2)))
    decoded, _ = decode_page_token(encode_page_token(at, JOB_ID, []), [])
    assert decoded == at
    assert decoded.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize(
    ("issued_for", "used_for"),
    [
        ([None, None], ["QUEUED", None]),
        (["QUEUED", None], [None, None]),
        ([None, "reverse_string"], [None, "uppercase_text"]),
        (["dead", None], [None, None]),
        ([None, None], [None]),
    ],
)
def test_a_page_token_is_bound_to_the_filters_it_was_issued_for(
    issued_for: list[str | None], used_for: list[str | None]
) -> None:
    with pytest.raises(InvalidArgument, match="page_token: is not a token this service issued for these filters"):
        decode_page_token(encode_page_token(AT, JOB_ID, issued_for), used_for)


@pytest.mark.parametrize(
    "garbage",
    [
        "x",
        "!!!!",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        token("a string"),
        token({"at": AT.isoformat()}),
        token([AT.isoformat()]),
        token(["yesterday", str(JOB_ID)]),
        token([AT.isoformat(), "not-a-uuid"]),
        token([12, str(JOB_ID)]),
        token([AT.replace(tzinfo=None).isoformat(), str(JOB_ID)]),
    ],
    ids=["short", "not-base64", "not-utf8", "not-a-list", "a-dict", "no-id", "bad-time", "bad-id", "number", "naive"],
)
def test_garbage_and_naive_times_are_refused(garbage: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        decode_page_token(garbage, [])
    assert [v.field for v in refused.value.violations] == ["page_token"]


@pytest.mark.parametrize(("size", "ok"), [(0, False), (1, True), (MAX_BATCH, True), (MAX_BATCH + 1, False)])
def test_a_batch_holds_1_to_max_batch_items(size: int, ok: bool) -> None:
    if ok:
        check_batch(size, "jobs")
        return
    with pytest.raises(InvalidArgument, match=f"^requests: must hold 1 to {MAX_BATCH} reports$"):
        check_batch(size, "reports")


@pytest.mark.parametrize(("value", "expected"), [(0, DEFAULT_MAX_ATTEMPTS), (1, 1), (MAX_ATTEMPTS, MAX_ATTEMPTS)])
def test_attempts_default_when_zero(value: int, expected: int) -> None:
    assert check_attempts(value) == expected


@pytest.mark.parametrize("value", [-1, MAX_ATTEMPTS + 1])
def test_attempts_out_of_range_are_refused(value: int) -> None:
    with pytest.raises(InvalidArgument, match=f"max_attempts: must be between 1 and {MAX_ATTEMPTS}"):
        check_attempts(value)


def test_a_listing_defaults_its_page_size_and_knows_the_registrys_types() -> None:
    assert check_listing(0, None, TYPES) == DEFAULT_PAGE_SIZE
    assert check_listing(MAX_PAGE_SIZE, "fibonacci_calc", TYPES) == MAX_PAGE_SIZE
    assert check_listing(1, "always_fails", TYPES | {"always_fails"}) == 1
    with pytest.raises(InvalidArgument) as refused:
        check_listing(MAX_PAGE_SIZE + 1, "always_fails", TYPES)
    assert [v.field for v in refused.value.violations] == ["page_size", "type"]


def test_ids_are_uuids_named_by_their_field() -> None:
    assert parse_id(str(JOB_ID)) == JOB_ID
    with pytest.raises(InvalidArgument, match=r"^claim_id: must be a UUID$"):
        parse_id("nope", "claim_id")


# --- results ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"b": [1, 2.5, None, True], "a": "é"}, '{"b":[1,2.5,null,true],"a":"é"}'),
        ([], "[]"),
        (None, "null"),
        (["\\u0000 written out"], '["\\\\u0000 written out"]'),
        (["\\\\u0000"], '["\\\\\\\\u0000"]'),
    ],
)
def test_a_json_result_is_stored_as_compact_text(value: object, text: str) -> None:
    assert encode_json_result(value) == text


@pytest.mark.parametrize("value", [["a\x00b"], {"k\x00": 1}, {"k": {"deep": ["\\\x00"]}}])
def test_a_json_result_holding_nul_is_refused(value: object) -> None:
    with pytest.raises(InvalidArgument, match=r"^result_value: must not contain NUL characters in any string or key$"):
        encode_json_result(value)


def _completed(**fields: Any) -> jobs_pb2.UpdateJobRequest:
    return jobs_pb2.UpdateJobRequest(id=str(JOB_ID), status=jobs_pb2.JOB_STATUS_COMPLETED, attempt=1, **fields)


def _value(python: Any) -> struct_pb2.Value:
    return json_format.ParseDict(python, struct_pb2.Value())


@pytest.mark.parametrize(
    ("request_", "result", "json_text"),
    [
        (_completed(result="55"), "55", None),
        (_completed(result_value=_value("55")), "55", None),  # a string is stored as `result` would be
        (_completed(result_value=_value(42.0)), None, "42"),
        (_completed(result_value=_value({"n": [3.0, 0.5]})), None, '{"n":[3,0.5]}'),  # whole numbers at any depth
        (_completed(result_value=_value(2.0**60)), None, "1.152921504606847e+18"),  # past 2**53: not claimed exact
        (_completed(result_value=struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)), None, "null"),
    ],
)
def test_a_report_takes_its_result_from_result_or_result_value(
    request_: jobs_pb2.UpdateJobRequest, result: str | None, json_text: str | None
) -> None:
    report = report_from_proto(request_)
    assert (report.result, report.result_json) == (result, json_text)


@pytest.mark.parametrize(
    "request_",
    [
        _completed(result="55", result_value=_value("55")),
        _completed(result_value=struct_pb2.Value()),
        _completed(result_value=struct_pb2.Value(number_value=math.inf)),
        _completed(
            result_value=struct_pb2.Value(
                list_value=struct_pb2.ListValue(values=[struct_pb2.Value(number_value=math.nan)])
            )
        ),
    ],
    ids=["both", "no-kind", "infinity", "nan-in-a-list"],
)
def test_a_bad_result_value_is_refused_on_its_field(request_: jobs_pb2.UpdateJobRequest) -> None:
    with pytest.raises(InvalidArgument) as refused:
        report_from_proto(request_)
    assert [v.field for v in refused.value.violations] == ["result_value"]


def test_a_progress_report_carries_its_fraction_and_note() -> None:
    request = jobs_pb2.UpdateJobRequest(
        id=str(JOB_ID),
        status=jobs_pb2.JOB_STATUS_RUNNING,
        claim_id=str(JOB_ID),
        progress=jobs_pb2.JobProgress(fraction=0.5, message="half"),
    )
    assert report_from_proto(request).progress == Progress(0.5, "half")
    request.ClearField("progress")
    assert report_from_proto(request).progress is None


def test_a_page_stops_short_of_its_size_at_about_max_page_bytes() -> None:
    owner = uuid.uuid4()
    small = stored_job(owner, status=Status.COMPLETED)
    large = dataclasses.replace(small, result="x" * (MAX_PAGE_BYTES // 5))  # sent twice: 2/5 of a page
    assert page_length([small] * 11, 10) == 10
    assert page_length([small] * 3, 10) == 3
    assert page_length([large] * 11, 10) == 2
    assert page_length([small, large, large, large], 10) == 3
    assert page_length([dataclasses.replace(small, result="é" * (MAX_PAGE_BYTES // 4))] * 3, 10) == 1  # UTF-8 bytes
    huge = dataclasses.replace(small, result=None, result_json="[" + "1," * (MAX_PAGE_BYTES // 8) + "1]")
    assert page_length([huge] * 3, 10) == 1  # a JSON result as a Value takes more than its text: one at least
    assert page_length([], 10) == 0

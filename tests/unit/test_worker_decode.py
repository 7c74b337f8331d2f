"""Decoding queue messages: a usable JobDelivery or MalformedDelivery, never anything else."""

from __future__ import annotations

import math
import uuid

import pytest
from google.protobuf import struct_pb2

from jobqueue.jobs.v1 import delivery_pb2
from worker_svc.delivery import Delivery, MalformedDelivery, decode, json_value

JOB_ID = "0b6c7c1e-8f0a-4d3e-9b59-2f3b1c7d9a10"


def body(job_id: str = JOB_ID, job_type: str = "reverse_string", payload: struct_pb2.Value | None = None) -> bytes:
    message = delivery_pb2.JobDelivery(job_id=job_id, type=job_type, payload=payload)
    return message.SerializeToString()


def test_valid_string_payload() -> None:
    decoded = decode(body(payload=struct_pb2.Value(string_value="hello world")))
    assert decoded == Delivery(job_id=JOB_ID, job_type="reverse_string", payload="hello world")


def test_valid_number_payload_arrives_as_float() -> None:
    decoded = decode(body(job_type="fibonacci_calc", payload=struct_pb2.Value(number_value=10)))
    assert decoded.payload == 10.0
    assert decoded.job_type == "fibonacci_calc"


def test_job_id_is_normalised() -> None:
    raw = uuid.UUID(JOB_ID)
    assert decode(body(job_id=str(raw).upper())).job_id == JOB_ID
    assert decode(body(job_id=raw.hex)).job_id == JOB_ID


def test_unknown_type_is_not_malformed() -> None:
    # The job exists; the worker reports it FAILED rather than dead-lettering the message.
    assert decode(body(job_type="no_such_type")).job_type == "no_such_type"


def test_missing_payload_decodes_as_none() -> None:
    assert decode(body(payload=None)).payload is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"hello",
        b"\xff\xff\xff\xff",
        b"garbage message",
        b'{"job_id": "x", "type": "reverse_string", "payload": "hi"}',
        bytes(range(256)),
    ],
)
def test_garbage_and_empty_bodies_are_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedDelivery):
        decode(raw)


def test_empty_body_says_so() -> None:
    with pytest.raises(MalformedDelivery, match="empty"):
        decode(b"")


def test_job_id_must_be_a_uuid() -> None:
    with pytest.raises(MalformedDelivery, match="job_id"):
        decode(body(job_id="abc"))
    with pytest.raises(MalformedDelivery, match="job_id"):
        decode(body(job_id=""))


def test_type_must_be_present() -> None:
    with pytest.raises(MalformedDelivery, match="type"):
        decode(body(job_type=""))


def test_json_value_converts_every_kind() -> None:
    value = struct_pb2.Value()
    value.struct_value.update({"a": [1, "two", True, None], "b": {"c": 2.5}})
    assert json_value(value) == {"a": [1.0, "two", True, None], "b": {"c": 2.5}}
    assert json_value(struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)) is None
    assert json_value(struct_pb2.Value(bool_value=False)) is False


def test_json_value_keeps_non_finite_numbers_for_the_payload_rule_to_refuse() -> None:
    nan = json_value(struct_pb2.Value(number_value=float("nan")))
    assert isinstance(nan, float)
    assert math.isnan(nan)

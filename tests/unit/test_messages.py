"""The bodies of the queue's messages: what the job service encodes, the worker decodes back.

Decoding gives a usable JobDelivery or MalformedDelivery, never anything else.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pytest
from google.protobuf import struct_pb2

from jobqueue.jobs.v1 import delivery_pb2
from jobqueue.runtime.messages import (
    Delivery,
    MalformedDelivery,
    MalformedMessage,
    decode_cancellation,
    decode_delivery,
    encode_cancellation,
    encode_delivery,
    json_value,
)

JOB_ID = "0b6c7c1e-8f0a-4d3e-9b59-2f3b1c7d9a10"


def body(job_id: str = JOB_ID, job_type: str = "reverse_string", payload: struct_pb2.Value | None = None) -> bytes:
    message = delivery_pb2.JobDelivery(job_id=job_id, type=job_type, payload=payload)
    return message.SerializeToString()


def test_valid_string_payload() -> None:
    decoded = decode_delivery(body(payload=struct_pb2.Value(string_value="hello world")))
    assert decoded == Delivery(job_id=JOB_ID, job_type="reverse_string", payload="hello world")


def test_valid_number_payload_arrives_as_float() -> None:
    decoded = decode_delivery(body(job_type="fibonacci_calc", payload=struct_pb2.Value(number_value=10)))
    assert decoded.payload == 10.0
    assert decoded.job_type == "fibonacci_calc"


def test_job_id_is_normalised() -> None:
    raw = uuid.UUID(JOB_ID)
    assert decode_delivery(body(job_id=str(raw).upper())).job_id == JOB_ID
    assert decode_delivery(body(job_id=raw.hex)).job_id == JOB_ID


def test_unknown_type_is_not_malformed() -> None:
    # The job exists; the worker reports it FAILED rather than dead-lettering the message.
    assert decode_delivery(body(job_type="no_such_type")).job_type == "no_such_type"


def test_missing_payload_decodes_as_none() -> None:
    assert decode_delivery(body(payload=None)).payload is None


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
        decode_delivery(raw)


def test_empty_body_says_so() -> None:
    with pytest.raises(MalformedDelivery, match="empty"):
        decode_delivery(b"")


def test_job_id_must_be_a_uuid() -> None:
    with pytest.raises(MalformedDelivery, match="job_id"):
        decode_delivery(body(job_id="abc"))
    with pytest.raises(MalformedDelivery, match="job_id"):
        decode_delivery(body(job_id=""))


def test_type_must_be_present() -> None:
    with pytest.raises(MalformedDelivery, match="type"):
        decode_delivery(body(job_type=""))


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


@pytest.mark.parametrize(
    "payload",
    [
        "hello world",
        "",
        10.0,
        -2.5,
        True,
        False,
        None,
        [1.0, "two", [False, None]],
        {"a": [1.0, "two", True, None], "b": {"c": 2.5}, "": {}},
        [],
    ],
    ids=["string", "empty-string", "number", "negative", "true", "false", "null", "list", "object", "empty-list"],
)
def test_a_delivery_decodes_to_what_was_encoded(payload: Any) -> None:
    job_id = uuid.UUID(JOB_ID)
    decoded = decode_delivery(encode_delivery(job_id, "some_type", payload, 42))
    assert decoded == Delivery(job_id=JOB_ID, job_type="some_type", payload=payload, timeout_seconds=42)
    # True == 1 == 1.0 in Python: compare the JSON texts too, or a bool arriving as a number would pass.
    assert json.dumps(decoded.payload, sort_keys=True) == json.dumps(payload, sort_keys=True)


def test_integers_arrive_as_json_numbers() -> None:
    # JSON (and google.protobuf.Value) has one number type: an int comes back as the same float.
    decoded = decode_delivery(encode_delivery(uuid.UUID(JOB_ID), "fibonacci_calc", {"n": 10}, 30))
    assert decoded.payload == {"n": 10.0}


def test_a_delivery_without_a_timeout_gets_the_default() -> None:
    decoded = decode_delivery(encode_delivery(uuid.UUID(JOB_ID), "some_type", None, 0))
    assert decoded.timeout_seconds == Delivery.timeout_seconds > 0


def test_a_cancellation_decodes_to_its_job_id() -> None:
    assert decode_cancellation(encode_cancellation(uuid.UUID(JOB_ID))) == JOB_ID


def test_a_malformed_cancellation_is_refused() -> None:
    with pytest.raises(MalformedMessage):
        decode_cancellation(b"\xff\xff\xff\xff")

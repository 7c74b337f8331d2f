"""The bodies of the messages on RabbitMQ: JobDelivery and JobCancellation, encoded and decoded.

The job service encodes, the worker decodes; both halves live here so that
they cannot drift apart (protos/jobqueue/jobs/v1/delivery.proto is the contract).

- A JobDelivery is the body of every message on the job queue. ``decode_delivery``
  refuses a body the worker cannot act on with MalformedDelivery (the worker
  dead-letters it); an unknown job type is not malformed: the job exists, and
  the worker reports it FAILED.
- A JobCancellation is a notice on the control exchange that a RUNNING job was
  cancelled.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError

from jobqueue.jobs.v1 import delivery_pb2
from jobqueue.runtime.limits import DEFAULT_TIMEOUT_SECONDS

#: Content type of every message body (a serialized protobuf message).
CONTENT_TYPE = "application/x-protobuf"
#: Fully-qualified protobuf type of a job queue message's body, sent as the AMQP `type` property.
MESSAGE_TYPE = "jobqueue.jobs.v1.JobDelivery"
#: The same for a notice on the control exchange.
CANCELLATION_TYPE = "jobqueue.jobs.v1.JobCancellation"


class MalformedMessage(ValueError):
    """Raised when a message body is not the message it should be."""


class MalformedDelivery(MalformedMessage):
    """Raised by decode_delivery when a body is not a JobDelivery the worker can act on."""


@dataclass(frozen=True)
class Delivery:
    """A decoded JobDelivery: which job, of which type, with which payload (a JSON value)."""

    job_id: str
    job_type: str
    payload: Any
    #: How long the handler may run (messages from before timeouts existed carry 0: the default).
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS


def encode_delivery(job_id: uuid.UUID, job_type: str, payload: Any, timeout_seconds: int) -> bytes:
    """The queue message for a job: a serialized JobDelivery (``payload`` is a JSON value)."""
    value = json_format.ParseDict(payload, struct_pb2.Value())
    delivery = delivery_pb2.JobDelivery(
        job_id=str(job_id), type=job_type, payload=value, timeout_seconds=timeout_seconds
    )
    return delivery.SerializeToString()


def decode_delivery(body: bytes) -> Delivery:
    """The delivery a message body carries; raises MalformedDelivery if it is not usable."""
    if not body:
        raise MalformedDelivery("body is empty")
    try:
        message = delivery_pb2.JobDelivery.FromString(body)
    except DecodeError:
        raise MalformedDelivery("body is not a serialized JobDelivery") from None
    try:
        job_id = str(uuid.UUID(message.job_id))
    except ValueError:
        raise MalformedDelivery("job_id is not a UUID") from None
    if not message.type:
        raise MalformedDelivery("type is empty")
    return Delivery(
        job_id=job_id,
        job_type=message.type,
        payload=json_value(message.payload),
        timeout_seconds=message.timeout_seconds or Delivery.timeout_seconds,
    )


def encode_cancellation(job_id: uuid.UUID) -> bytes:
    """The control notice that ``job_id`` was cancelled: a serialized JobCancellation."""
    return delivery_pb2.JobCancellation(job_id=str(job_id)).SerializeToString()


def decode_cancellation(body: bytes) -> str:
    """The id of the job a control notice says was cancelled; raises MalformedMessage if it is not one."""
    try:
        return delivery_pb2.JobCancellation.FromString(body).job_id
    except DecodeError:
        raise MalformedMessage("body is not a serialized JobCancellation") from None


#: Integers a JSON number (a double on the wire) holds exactly.
EXACT_INTEGERS = 2**53


def exact_number(number: float) -> int | float:
    """A JSON number as it was most likely written: a whole one (within EXACT_INTEGERS) as an int.

    On the wire every number is a double (google.protobuf.Value), so 10 arrives as 10.0;
    a handler expecting a count or an index should get 10, and a store write it as 10.
    """
    return int(number) if number.is_integer() and abs(number) <= EXACT_INTEGERS else number


def json_value(value: struct_pb2.Value, number: Callable[[float], Any] = float) -> Any:
    """The JSON value a google.protobuf.Value holds (None for null or unset); ``number`` converts each number."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return number(value.number_value)
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {key: json_value(item, number) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [json_value(item, number) for item in value.list_value.values]
    return None

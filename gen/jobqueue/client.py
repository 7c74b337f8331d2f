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
    from jobqueue.client import JobQueueError, JobStatus, connect_auth, connect_jobs, login_with


    async def main() -> None:
        async with connect_auth("localhost:5001") as auth:
            try:
                await auth.register("ada@example.com", "correct horse battery", "Ada")
            except JobQueueError as error:
                if error.code != grpc.StatusCode.ALREADY_EXISTS:
                    raise

        # login_with logs in now and again whenever the token expires.
        refresh = login_with("ada@example.com", "correct horse battery", address="localhost:5001")
        async with connect_jobs("localhost:5002", refresh=refresh) as jobs:
            job = await jobs.submit_and_wait("fibonacci_calc", 10, timeout=30)
            print(job.status, job.result)  # COMPLETED 55
            if job.status == JobStatus.FAILED:
                print(job)  # the id, the attempts and the whole error
            async for job in jobs.list(job_type="fibonacci_calc"):
                print(job.id, job.status)


    asyncio.run(main())

Jobs come back as :class:`Job`, a read-only view that speaks words: ``status``
and ``priority`` are :class:`JobStatus` and :class:`JobPriority` (``IntEnum`` classes
mirroring the proto enums: ``str()`` gives ``COMPLETED``, ``repr()``
``JobStatus.COMPLETED``, and they still equal the proto numbers, so
``job.status == jobs_pb2.JOB_STATUS_COMPLETED``), the payload is a Python value,
times are aware ``datetime`` values, ``result`` and ``error`` are ``None`` when absent,
and ``job.proto`` is the ``jobqueue.jobs.v1.Job`` message the service sent.
``str(job)`` is a few lines for a person, with a failed job's error in full.

Errors: every call raises :class:`JobQueueError` when the service refuses it;
``e.code`` is the ``grpc.StatusCode``, ``e.reason`` the ``ErrorInfo`` reason and
``e.field_violations`` the ``BadRequest`` violations, e.g.
``(FieldViolation(field="payload", description="must be a string"),)``.
A payload is a string, a number, or a dict or list of JSON values. Payloads the
API could never accept (a bool on its own, an int JSON cannot carry exactly) are
refused locally with ``ValueError`` before any call.

Retries: :meth:`JobsClient.wait` retries, because polling is idempotent, and so
does :meth:`JobsClient.submit`, because every submission carries a
``request_id``: the job service answers a repeat with the job the first call
created, so a lost reply never creates a second job. The other reads (``get``,
``list``, ``list_dead``) are retried on UNAVAILABLE and on CANCELLED (what a
stopping service answers the calls it drops). Calls wait between tries with
exponential backoff and jitter (0.2 to 0.4 s, then 0.4 to 0.8 s, ...). The other
writes (cancel, rerun) are never retried: a lost reply would leave the caller
unsure whether they happened.

TLS: a service that serves TLS (every one run with ``APP_ENV=production``) is
reached with ``credentials=tls_credentials("ca.pem")`` on :func:`connect_auth`,
:func:`connect_jobs` and :func:`login_with`, where ``ca.pem`` is the certificate of
the authority that signed the service's (omit it for one the system trusts)::

    tls = tls_credentials("ca.pem")
    refresh = login_with(email, password, address="auth.example.com:5001", credentials=tls)
    async with connect_jobs("jobs.example.com:5002", refresh=refresh, credentials=tls) as jobs:
        ...

The address's host must be a name (or IP address) the service's certificate
carries. Without ``credentials`` the channel is plaintext, as `make run` serves
on loopback.

Expired tokens: a :class:`JobsClient` given ``refresh`` (an async callable that
returns a new token, such as :func:`login_with`) answers UNAUTHENTICATED by
getting a new token once and repeating the call (safe for every call: the job
service refuses an unauthenticated call before doing anything); a second
UNAUTHENTICATED is raised. Calls that fail together share one refresh.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import math
import os
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias, TypeVar, cast

import grpc
from google.protobuf import descriptor, struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from jobqueue.auth.v1 import auth_pb2, auth_pb2_grpc
from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_AUTH_ADDRESS",
    "DEFAULT_JOBS_ADDRESS",
    "FINAL_STATUSES",
    "MAX_HONOURED_RETRY_AFTER",
    "MAX_SAFE_INTEGER",
    "Attempt",
    "AttemptOutcome",
    "AuthClient",
    "FieldViolation",
    "Job",
    "JobPriority",
    "JobProgress",
    "JobQueueError",
    "JobStatus",
    "JobType",
    "JobTypeCounts",
    "JobsClient",
    "MinuteCounts",
    "Payload",
    "QueueStats",
    "TokenRefresh",
    "auth_metadata",
    "connect_auth",
    "connect_jobs",
    "is_final",
    "login_with",
    "tls_credentials",
    "to_value",
]

DEFAULT_AUTH_ADDRESS = "localhost:5001"
DEFAULT_JOBS_ADDRESS = "localhost:5002"

#: Largest integer a JSON number (an IEEE double) holds exactly; payloads beyond it are refused.
MAX_SAFE_INTEGER = 2**53
#: Most jobs BatchCreateJobs takes in one call.
BATCH_SIZE = 1000

#: What ``submit`` accepts as a payload: a string, a number, or a JSON object or array (``to_value``
#: says which values it refuses); a prepared ``google.protobuf.Value`` is passed through.
Payload = str | int | float | Mapping[str, Any] | list[Any] | tuple[Any, ...] | struct_pb2.Value
#: A payload as :class:`Job` shows it: any JSON value.
_JsonValue: TypeAlias = "str | int | float | bool | list[_JsonValue] | dict[str, _JsonValue] | None"
#: What ``connect_jobs(refresh=...)`` takes: an async callable that returns a new access token.
TokenRefresh: TypeAlias = Callable[[], Awaitable[str]]


class _ProtoEnum(enum.IntEnum):
    """An IntEnum that mirrors a proto enum: equal to the proto numbers, printed as words.

    ``str()`` and ``format()`` give the name (an IntEnum of Python 3.11+ would
    print the number), ``repr()`` ``JobStatus.COMPLETED``; a format spec for
    numbers (``f"{status:d}"``) still gives the number. A number this client does
    not know (a newer service's) is kept, named ``UNKNOWN_<n>``, rather than
    failing the call that received it: proto3 enums are open.
    """

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __format__(self, spec: str) -> str:
        if spec and spec[-1] in "bcdnoxX":
            return int.__format__(self, spec)
        return format(self.name, spec)

    @classmethod
    def _missing_(cls, value: object) -> Self | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        unknown = int.__new__(cls, value)
        unknown._name_ = f"UNKNOWN_{value}"
        unknown._value_ = value
        return unknown


class JobStatus(_ProtoEnum):
    """Where a job is in its life (``jobqueue.jobs.v1.JobStatus`` without the ``JOB_STATUS_`` prefix)."""

    #: Not a real status; as a ``list`` filter it means "any status".
    UNSPECIFIED = jobs_pb2.JOB_STATUS_UNSPECIFIED
    QUEUED = jobs_pb2.JOB_STATUS_QUEUED
    RUNNING = jobs_pb2.JOB_STATUS_RUNNING
    COMPLETED = jobs_pb2.JOB_STATUS_COMPLETED
    FAILED = jobs_pb2.JOB_STATUS_FAILED
    CANCELLED = jobs_pb2.JOB_STATUS_CANCELLED


class JobPriority(_ProtoEnum):
    """How urgent a job is (``jobqueue.jobs.v1.JobPriority`` without the ``JOB_PRIORITY_`` prefix)."""

    #: Not given: the service uses NORMAL.
    UNSPECIFIED = jobs_pb2.JOB_PRIORITY_UNSPECIFIED
    LOW = jobs_pb2.JOB_PRIORITY_LOW
    NORMAL = jobs_pb2.JOB_PRIORITY_NORMAL
    HIGH = jobs_pb2.JOB_PRIORITY_HIGH


class AttemptOutcome(_ProtoEnum):
    """How one attempt ended (``jobqueue.jobs.v1.AttemptOutcome`` without the ``ATTEMPT_OUTCOME_`` prefix)."""

    UNSPECIFIED = jobs_pb2.ATTEMPT_OUTCOME_UNSPECIFIED
    #: It has not ended: a worker runs it.
    RUNNING = jobs_pb2.ATTEMPT_OUTCOME_RUNNING
    COMPLETED = jobs_pb2.ATTEMPT_OUTCOME_COMPLETED
    #: The handler failed, or its worker stopped it at its timeout.
    FAILED = jobs_pb2.ATTEMPT_OUTCOME_FAILED
    #: The worker vanished or hung; the job service took the job back.
    LOST = jobs_pb2.ATTEMPT_OUTCOME_LOST
    CANCELLED = jobs_pb2.ATTEMPT_OUTCOME_CANCELLED


def _check_mirror(mirror: type[_ProtoEnum], proto: descriptor.EnumDescriptor, prefix: str) -> None:
    """Refuse to import if ``mirror`` and the generated enum disagree, so that the two cannot drift apart.

    The members are spelled out (rather than made from the descriptor) so that
    type checkers and editors know them; this check keeps them honest.
    """
    expected = {value.name.removeprefix(prefix): value.number for value in proto.values}
    actual = {member.name: member.value for member in mirror}
    if actual != expected:
        raise ImportError(f"jobqueue.client.{mirror.__name__} is {actual}, but {proto.full_name} is {expected}")


_check_mirror(JobStatus, jobs_pb2.JobStatus.DESCRIPTOR, "JOB_STATUS_")
_check_mirror(JobPriority, jobs_pb2.JobPriority.DESCRIPTOR, "JOB_PRIORITY_")
_check_mirror(AttemptOutcome, jobs_pb2.AttemptOutcome.DESCRIPTOR, "ATTEMPT_OUTCOME_")

#: Statuses a job never leaves.
FINAL_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

# Codes after which asking again may succeed: a service restarting, a slow reply.
# CANCELLED reaches a caller only from the server's side (a service shutting
# down drops calls it had not started); a caller's own cancellation raises
# asyncio.CancelledError instead.
_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})
# What a read is retried on. Not DEADLINE_EXCEEDED: the deadline is the
# caller's own bound on the call (call_timeout), which a retry would stretch;
# a submission retries it only because its outcome is otherwise unknown.
_READ_RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
# A wait is bounded by its timeout, so it may reopen a watch through a long restart.
_WAIT_WATCH_ATTEMPTS = 1_000
# What ends a WatchJob stream that opening it again may mend: a replica stopping (UNAVAILABLE, or
# CANCELLED from its side), or one that lost its feed of changes (ABORTED).
_STREAM_RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED})

# The client library ships alone (pip install ./gen) and so cannot import the
# services' gen/jobqueue/runtime/backoff.py; _retry_delay is the same policy written for the
# places the client retries: base * 2**n, each delay scaled by a random
# factor in [1/2, 1], so that many clients that met the same outage do not all
# come back at the same instant. A generator of its own, so that nothing a
# caller does with the global `random` (seeding it, say) makes the delays alike.
_RETRY_BASE_SECONDS = 0.2
_RANDOM = random.Random()


#: The longest RetryInfo delay a retrying call waits out by itself; a refusal asking for longer is
#: raised at once (its ``retry_after`` says when), since the caller may rather do something else.
MAX_HONOURED_RETRY_AFTER = 10.0


def _honoured(error: JobQueueError) -> bool:
    """Whether ``error`` is a refusal whose RetryInfo a retrying call waits out and tries again after."""
    return (
        error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        and error.retry_after is not None
        and error.retry_after <= MAX_HONOURED_RETRY_AFTER
    )


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

    Strings become ``string_value``; ints and floats become ``number_value``;
    dicts (string keys) and lists or tuples become JSON objects and arrays, whose
    members may also be bools and None. Refused: None as the whole payload
    (TypeError: every job has one); with ValueError, a bool as the
    whole payload (``True`` would silently become 1 where a number is meant),
    ints beyond ±2**53 and non-finite floats anywhere (JSON numbers are doubles,
    so they would arrive changed or not at all). Other types raise TypeError.
    """
    if isinstance(payload, struct_pb2.Value):
        copy = struct_pb2.Value()
        copy.CopyFrom(payload)
        return copy
    # bool is a subclass of int, so it has to be ruled out before the int case.
    if isinstance(payload, bool):
        raise ValueError("a bool is not a valid payload on its own: send it inside an object")
    if payload is None:
        raise TypeError("a job needs a payload: None is one only inside an object or array")
    return _json_value(payload)


def _json_value(item: object) -> struct_pb2.Value:
    """``item``, a JSON value, as a ``google.protobuf.Value`` (to_value's checks)."""
    if isinstance(item, Mapping):
        if not all(isinstance(key, str) for key in item):
            raise TypeError("a payload object's keys must be strings")
        value = struct_pb2.Value(struct_value=struct_pb2.Struct())
        for key, member in item.items():
            value.struct_value.fields[key].CopyFrom(_json_value(member))
        return value
    if isinstance(item, list | tuple):
        return struct_pb2.Value(list_value=struct_pb2.ListValue(values=[_json_value(member) for member in item]))
    return _scalar_value(item)


def _scalar_value(item: object) -> struct_pb2.Value:
    """``item``, a JSON scalar (None, a bool, a string or a number), as a ``google.protobuf.Value``."""
    if item is None:
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(item, bool):  # before int, of which bool is a subclass
        return struct_pb2.Value(bool_value=item)
    if isinstance(item, str):
        return struct_pb2.Value(string_value=item)
    if isinstance(item, int):
        if abs(item) > MAX_SAFE_INTEGER:
            raise ValueError(f"integer payload {item} is beyond ±2**53, which a JSON number cannot hold exactly")
        return struct_pb2.Value(number_value=float(item))
    if isinstance(item, float):
        if not math.isfinite(item):
            raise ValueError(f"payload {item} is not a finite number")
        return struct_pb2.Value(number_value=item)
    raise TypeError(f"payload must be str, int, float, dict or list, not {type(item).__name__}")


def is_final(status: JobStatus | int) -> bool:
    """Whether a job in ``status`` is finished for good (COMPLETED, FAILED or CANCELLED)."""
    return status in FINAL_STATUSES


def _from_value(value: struct_pb2.Value) -> _JsonValue:
    """``value`` as a Python value; a whole number comes back as an int (JSON does not tell 10 from 10.0)."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) <= MAX_SAFE_INTEGER else number
    if kind == "bool_value":
        return value.bool_value
    if kind == "list_value":
        return [_from_value(item) for item in value.list_value.values]
    if kind == "struct_value":
        return {key: _from_value(item) for key, item in value.struct_value.fields.items()}
    return None


_TimeField = Literal["created_at", "updated_at", "started_at", "finished_at", "next_attempt_at"]


def _time(message: jobs_pb2.Job, name: _TimeField) -> datetime.datetime | None:
    if not message.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=datetime.UTC)


@dataclass(frozen=True)
class JobProgress:
    """How far a running job has got, as its handler last reported it (``Job.progress``)."""

    #: The share of the work done, from 0 to 1.
    fraction: float
    #: A short note for a person; may be empty.
    message: str
    #: When the worker reported it.
    updated_at: datetime.datetime

    @classmethod
    def from_proto(cls, message: jobs_pb2.JobProgress) -> JobProgress:
        """The view of a ``jobqueue.jobs.v1.JobProgress`` message."""
        return cls(message.fraction, message.message, message.updated_at.ToDatetime(tzinfo=datetime.UTC))


@dataclass(frozen=True)
class Attempt:
    """One start of a job by a worker and how it ended (``Job.attempt_history``)."""

    #: 1 for the first start, counting on across re-runs.
    number: int
    #: The worker that ran it, as it named itself; empty if it did not.
    worker_id: str
    #: When the worker started it.
    started_at: datetime.datetime
    #: When it ended; ``None`` while it runs.
    ended_at: datetime.datetime | None
    #: How it ended.
    outcome: AttemptOutcome
    #: Why it did not complete; empty when it did (or runs).
    error: str

    @classmethod
    def from_proto(cls, message: jobs_pb2.JobAttempt) -> Attempt:
        """The view of a ``jobqueue.jobs.v1.JobAttempt`` message."""
        return cls(
            number=message.number,
            worker_id=message.worker_id,
            started_at=message.started_at.ToDatetime(tzinfo=datetime.UTC),
            ended_at=message.ended_at.ToDatetime(tzinfo=datetime.UTC) if message.HasField("ended_at") else None,
            outcome=AttemptOutcome(message.outcome),
            error=message.error,
        )


@dataclass(frozen=True)
class JobTypeCounts:
    """How many jobs of one type wait, run and are dead now (``QueueStats.job_types``)."""

    job_type: str
    queued: int
    running: int
    #: FAILED for good.
    failed: int


@dataclass(frozen=True)
class MinuteCounts:
    """What happened to jobs in one minute (``QueueStats.minutes``)."""

    #: The minute's start.
    start: datetime.datetime
    created: int
    completed: int
    #: Reached FAILED for good.
    failed: int
    cancelled: int


@dataclass(frozen=True)
class QueueStats:
    """The queue now, by type (ordered by type), and per minute of the recent past (oldest first)."""

    job_types: tuple[JobTypeCounts, ...]
    #: The last one is the current minute, so far.
    minutes: tuple[MinuteCounts, ...]

    @classmethod
    def from_proto(cls, message: jobs_pb2.GetQueueStatsResponse) -> QueueStats:
        """The view of a ``jobqueue.jobs.v1.GetQueueStatsResponse`` message."""
        return cls(
            job_types=tuple(JobTypeCounts(t.type, t.queued, t.running, t.failed) for t in message.job_types),
            minutes=tuple(
                MinuteCounts(m.start.ToDatetime(tzinfo=datetime.UTC), m.created, m.completed, m.failed, m.cancelled)
                for m in message.minutes
            ),
        )


@dataclass(frozen=True)
class Job:
    """A job as a person and a program read it; ``proto`` is the message the service sent.

    Every field of ``jobqueue.jobs.v1.Job`` is here, converted: enums are
    :class:`JobStatus` and :class:`JobPriority`, the payload a Python value,
    times aware ``datetime`` values (UTC), and a field the service left out
    (``result``, ``error``, the later times) is ``None``. ``str(job)`` is a
    summary of a few lines that shows ``result`` and ``error`` in full.
    """

    #: The job's id (a UUID).
    id: str
    #: The job type, e.g. ``"reverse_string"``.
    type: str
    #: Where the job is in its life.
    status: JobStatus
    #: The input, as submitted.
    payload: _JsonValue
    #: The answer as text, once the job is COMPLETED: the result itself when it is a string, else its JSON.
    result: str | None
    #: The answer as the JSON value the handler returned (str, int, float, bool, None, list or dict), once
    #: the job is COMPLETED; ``None`` before (tell a ``null`` answer by ``status``).
    result_value: _JsonValue
    #: Why the job (or its last attempt, while a retry waits) failed; the whole text the service stored.
    error: str | None
    #: How many times a worker has started the job, re-runs included.
    attempts: int
    #: How many attempts the job gets in all.
    max_attempts: int
    #: The priority it was submitted with.
    priority: JobPriority
    #: How long one attempt may run, in seconds.
    timeout_seconds: int
    #: The id of the user who submitted the job.
    owner_id: str
    #: When the job was stored.
    created_at: datetime.datetime
    #: When anything about the job last changed.
    updated_at: datetime.datetime
    #: When a worker last started it.
    started_at: datetime.datetime | None
    #: When it reached a final status.
    finished_at: datetime.datetime | None
    #: When a waiting retry is due.
    next_attempt_at: datetime.datetime | None
    #: What the handler last said about how far it got (as it was left once the job finished); ``None`` if
    #: it never said.
    progress: JobProgress | None
    #: Every attempt so far, oldest first; only from ``get(..., history=True)`` and ``watch(..., history=True)``,
    #: empty otherwise.
    attempt_history: tuple[Attempt, ...]
    #: The ``jobqueue.jobs.v1.Job`` message itself (for ``HasField``, serializing, a stub's request).
    proto: jobs_pb2.Job = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: jobs_pb2.Job) -> Job:
        """The view of ``message`` (which it keeps as ``proto``: do not change it afterwards)."""
        epoch = datetime.datetime.fromtimestamp(0, datetime.UTC)
        result = message.result if message.HasField("result") else None
        return cls(
            id=message.id,
            type=message.type,
            status=JobStatus(message.status),
            payload=_from_value(message.payload),
            result=result,
            # A service older than result_value sends only the text, which was always a string result.
            result_value=_from_value(message.result_value) if message.HasField("result_value") else result,
            error=message.error if message.HasField("error") else None,
            attempts=message.attempts,
            max_attempts=message.max_attempts,
            priority=JobPriority(message.priority),
            timeout_seconds=message.timeout_seconds,
            owner_id=message.owner_id,
            # Always set by the service; a message without one reads as the epoch, as protobuf has it.
            created_at=_time(message, "created_at") or epoch,
            updated_at=_time(message, "updated_at") or epoch,
            started_at=_time(message, "started_at"),
            finished_at=_time(message, "finished_at"),
            next_attempt_at=_time(message, "next_attempt_at"),
            progress=JobProgress.from_proto(message.progress) if message.HasField("progress") else None,
            attempt_history=tuple(Attempt.from_proto(a) for a in message.attempt_history),
            proto=message,
        )

    def __str__(self) -> str:
        """``job <id> (<type>): <STATUS>, attempt n of m``, any progress, then the result or the error, each in full."""
        lines = [f"job {self.id} ({self.type}): {self.status}, attempt {self.attempts} of {self.max_attempts}"]
        if self.next_attempt_at is not None:
            lines[0] += f", next attempt at {self.next_attempt_at.isoformat()}"
        if self.progress is not None:
            lines.append(f"progress: {self.progress.fraction:.0%} {self.progress.message}".rstrip())
        for label, text in (("result", self.result), ("error", self.error)):
            if text is not None:
                # Continuation lines (a traceback, say) indented under their label.
                lines.append(f"{label}: " + "\n  ".join(text.split("\n")))
        return "\n".join(lines)


@dataclass(frozen=True)
class JobType:
    """A job type the service accepts (from ``ListJobTypes``), as the workers that run it declared it.

    ``name`` and, for a person, ``summary`` (its payload and result); ``payload_schema``, the JSON
    Schema every payload must satisfy; ``version`` of the declaration; ``default_max_attempts`` and
    ``default_timeout_seconds``, what a job gets that asks for none (0: the service's defaults); and
    ``declared_at``, when a worker last declared it (None for a built-in type no worker declared yet).
    """

    name: str
    summary: str
    payload_schema: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    default_max_attempts: int = 0
    default_timeout_seconds: int = 0
    declared_at: datetime.datetime | None = None

    @classmethod
    def from_proto(cls, message: jobs_pb2.JobType) -> JobType:
        """The type a ``jobqueue.jobs.v1.JobType`` message describes (whole numbers in the schema as ints)."""
        schema = {key: _from_value(value) for key, value in message.payload_schema.fields.items()}
        declared_at = message.declared_at.ToDatetime(tzinfo=datetime.UTC) if message.HasField("declared_at") else None
        return cls(
            name=message.name,
            summary=message.summary,
            payload_schema=schema,
            version=message.version,
            default_max_attempts=message.default_max_attempts,
            default_timeout_seconds=message.default_timeout_seconds,
            declared_at=declared_at,
        )


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
        retry_after: float | None = None,
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
        #: ``RetryInfo.retry_delay`` in seconds: when the service says a refused call (a limit reached,
        #: RESOURCE_EXHAUSTED) may be tried again; None when it did not say.
        self.retry_after = retry_after

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
        retry_after: float | None = None
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after = retry.retry_delay.ToNanoseconds() / 1e9
        return cls(
            code,
            status.message,
            reason=reason,
            domain=domain,
            metadata=metadata,
            field_violations=violations,
            retry_after=retry_after,
        )

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


def tls_credentials(
    ca_file: str | os.PathLike[str] | None = None,
    *,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials: what ``credentials=`` of :func:`connect_auth`, :func:`connect_jobs`, :func:`login_with` takes.

    The service's certificate is verified with the PEM certificate(s) in ``ca_file``
    (None: the system's CAs), and must carry the host name of the address dialled.
    ``cert_file`` and ``key_file`` (both or neither): a client certificate to present,
    for a service that asks for one (mutual TLS). The files are read now, once.
    """
    if (cert_file is None) != (key_file is None):
        raise ValueError("give cert_file and key_file together, or neither")
    roots = None if ca_file is None else Path(ca_file).read_bytes()
    if cert_file is None or key_file is None:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=Path(key_file).read_bytes(), certificate_chain=Path(cert_file).read_bytes()
    )


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

    async def _retrying(self, method: Any, request: Any, attempts: int, codes: frozenset[grpc.StatusCode]) -> Any:
        """Call ``method``, retrying an answer with one of ``codes`` up to ``attempts`` calls in all.

        A refusal that says when to come back (RESOURCE_EXHAUSTED with RetryInfo) is retried too,
        no sooner than it says, when that is within MAX_HONOURED_RETRY_AFTER.
        """
        for attempt in range(1, attempts + 1):
            try:
                return await self._call(method, request)
            except JobQueueError as error:
                if attempt >= attempts or not (error.code in codes or _honoured(error)):
                    raise
                delay = max(_retry_delay(attempt), error.retry_after or 0.0)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

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

    async def register(self, email: str, password: str, name: str, *, attempts: int = 3) -> auth_pb2.User:
        """Create an account; ALREADY_EXISTS if the email is taken.

        A refusal for a limit (RESOURCE_EXHAUSTED with RetryInfo) did nothing, so it is retried after
        the delay it names, up to ``attempts`` calls in all (see MAX_HONOURED_RETRY_AFTER).
        """
        request = auth_pb2.RegisterRequest(email=email, password=password, name=name)
        reply: auth_pb2.RegisterResponse = await self._retrying(self.stub.Register, request, attempts, frozenset())
        return reply.user

    async def login(self, email: str, password: str, *, attempts: int = 3) -> str:
        """An access token for the job service; UNAUTHENTICATED for a wrong email or password.

        Refusals for a limit are retried as Register's are.
        """
        request = auth_pb2.LoginRequest(email=email, password=password)
        reply: auth_pb2.LoginResponse = await self._retrying(self.stub.Login, request, attempts, frozenset())
        return reply.access_token


class JobsClient(_Client):
    """One user's jobs (``jobqueue.jobs.v1.JobService``), every call authenticated with a token.

    With ``refresh``, an UNAUTHENTICATED answer (an expired token, say) gets a
    new token from it and the call is made once more; without ``token``, the
    first call gets one from it. The client belongs to the event loop it was
    made in (as its grpc.aio channel does); its calls may run concurrently in
    that loop's tasks, and calls that meet the same expired token share one refresh.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        token: str | None = None,
        refresh: TokenRefresh | None = None,
        call_timeout: float | None = 30.0,
    ) -> None:
        if token is None and refresh is None:
            raise TypeError("give a token, a refresh callable, or both")
        super().__init__(channel, call_timeout=call_timeout)
        self._token = token
        self._metadata = auth_metadata(token) if token is not None else ()
        self._refresh = refresh
        #: The refresh under way, which every call that failed with the same token awaits.
        self._renewal: asyncio.Future[None] | None = None
        self.stub = jobs_pb2_grpc.JobServiceStub(channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata sent with every call (the current token's), for calling ``stub`` directly."""
        return self._metadata

    async def _call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- see _Client._call
    ) -> _Response:
        """The call, made once more with a new token after an UNAUTHENTICATED answer, when ``refresh`` was given.

        Repeating any call (a write too) is safe there: the job service checks
        the token before it does anything else.
        """
        refresh = self._refresh
        if refresh is None:
            return await super()._call(method, request, timeout=timeout)
        if self._token is None:
            await self._renew(None, refresh)
        sent = self._token
        try:
            return await super()._call(method, request, timeout=timeout)
        except JobQueueError as error:
            if error.code != grpc.StatusCode.UNAUTHENTICATED:
                raise
        await self._renew(sent, refresh)
        return await super()._call(method, request, timeout=timeout)

    async def _renew(self, stale: str | None, refresh: TokenRefresh) -> None:
        """Replace the token ``stale`` by a new one from ``refresh``, unless another call already has.

        Calls that fail while a refresh is under way await that same refresh
        (and see its error, if it fails); a later failure starts a new one.
        """
        if self._token != stale:
            return
        if self._renewal is None:
            self._renewal = asyncio.ensure_future(self._fetch_token(refresh))
            self._renewal.add_done_callback(self._renewal_done)
        # shield: a caller that gives up (is cancelled) must not cancel the others' refresh.
        await asyncio.shield(self._renewal)

    async def _fetch_token(self, refresh: TokenRefresh) -> None:
        token = await refresh()
        self._metadata = auth_metadata(token)  # refuses a malformed token
        self._token = token

    def _renewal_done(self, renewal: asyncio.Future[None]) -> None:
        self._renewal = None
        if not renewal.cancelled():
            # Each waiter raises it; this marks it retrieved even if every waiter was cancelled.
            renewal.exception()

    async def submit(
        self,
        job_type: str,
        payload: Payload,
        *,
        priority: JobPriority | int = JobPriority.UNSPECIFIED,
        max_attempts: int = 0,
        timeout_seconds: int = 0,
        request_id: str | None = None,
        attempts: int = 3,
    ) -> Job:
        """Store a job and queue it; returns it QUEUED.

        ``priority``, ``max_attempts`` (how often a worker may try the job) and
        ``timeout_seconds`` are CreateJob's; 0 and UNSPECIFIED take the server's
        defaults. The request carries ``request_id`` (a fresh UUID unless given),
        so an UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED answer is retried, up to
        ``attempts`` calls in all, without any risk of creating the job twice; so is
        a refusal for a per-user limit (RESOURCE_EXHAUSTED ``TOO_MANY_JOBS``,
        ``TOO_MANY_HIGH_PRIORITY_JOBS``, ``TOO_MANY_UNFINISHED_JOBS``), no sooner than
        its RetryInfo says, when that is within MAX_HONOURED_RETRY_AFTER.
        """
        request = _create_request(job_type, payload, priority, max_attempts, timeout_seconds, request_id)
        reply: jobs_pb2.CreateJobResponse = await self._retrying(self.stub.CreateJob, request, attempts, _TRANSIENT)
        return Job.from_proto(reply.job)

    async def submit_many(
        self,
        jobs: Iterable[tuple[str, Payload] | jobs_pb2.CreateJobRequest],
        *,
        priority: JobPriority | int = JobPriority.UNSPECIFIED,
        max_attempts: int = 0,
        timeout_seconds: int = 0,
        attempts: int = 3,
    ) -> list[Job]:
        """Store many (job type, payload) jobs with BatchCreateJobs; returns them QUEUED, in order.

        Up to BATCH_SIZE jobs go in each call, which stores all of its jobs or
        none; with more, a later call's failure leaves the earlier calls' jobs
        stored (the error says so). Each job carries a fresh ``request_id``,
        so calls are retried as :meth:`submit` retries, never creating a job twice.
        A job given as a ``jobqueue.jobs.v1.CreateJobRequest`` (for options of its own, as a file of
        jobs has them) is sent as it is, ``priority``, ``max_attempts`` and ``timeout_seconds`` left
        aside, with a fresh ``request_id`` only if it has none.
        """
        requests = [
            _own_request(job)
            if isinstance(job, jobs_pb2.CreateJobRequest)
            else _create_request(job[0], job[1], priority, max_attempts, timeout_seconds, None)
            for job in jobs
        ]
        stored: list[Job] = []
        for start in range(0, len(requests), BATCH_SIZE):
            batch = jobs_pb2.BatchCreateJobsRequest(requests=requests[start : start + BATCH_SIZE])
            reply = await self._retrying(self.stub.BatchCreateJobs, batch, attempts, _TRANSIENT)
            stored.extend(Job.from_proto(job) for job in reply.jobs)
        return stored

    async def job_types(self, *, attempts: int = 3) -> list[JobType]:
        """Every job type the service accepts, ordered by name; retried as :meth:`get` is."""
        request = jobs_pb2.ListJobTypesRequest()
        reply: jobs_pb2.ListJobTypesResponse = await self._retrying(
            self.stub.ListJobTypes, request, attempts, _READ_RETRIED
        )
        return [JobType.from_proto(job_type) for job_type in reply.job_types]

    async def get(self, job_id: str, *, history: bool = False, attempts: int = 3) -> Job:
        """One of the caller's jobs; NOT_FOUND for an unknown id or someone else's job.

        With ``history``, its ``attempt_history`` too. UNAVAILABLE and CANCELLED answers are retried,
        up to ``attempts`` calls in all.
        """
        request = jobs_pb2.GetJobRequest(id=job_id, view=_view(history))
        reply: jobs_pb2.GetJobResponse = await self._retrying(self.stub.GetJob, request, attempts, _READ_RETRIED)
        return Job.from_proto(reply.job)

    async def watch(self, job_id: str, *, history: bool = False, attempts: int = 5) -> AsyncIterator[Job]:
        """The job now, then again each time it changes, until it is final (the last one yielded).

        ``async for job in jobs.watch(job_id)``. A stream the service ends early (a restart:
        UNAVAILABLE, ABORTED, or CANCELLED from its side) is opened again, through up to ``attempts``
        failures in a row, and a state already yielded is not yielded twice. Any other error (NOT_FOUND,
        say) is raised. With ``history``, each job has its ``attempt_history``.
        """
        request = jobs_pb2.WatchJobRequest(id=job_id, view=_view(history))
        last: jobs_pb2.Job | None = None
        failures = 0
        while True:
            try:
                async for reply in self._stream(self.stub.WatchJob, request):
                    failures = 0
                    if reply.job == last:
                        continue
                    last = reply.job
                    yield Job.from_proto(reply.job)
                    if is_final(reply.job.status):
                        return
            except JobQueueError as error:
                failures += 1
                if failures >= attempts or not (error.code in _STREAM_RETRIED or _honoured(error)):
                    raise
                await asyncio.sleep(max(_retry_delay(failures), error.retry_after or 0.0))
                continue
            # The service ended the stream without a final state: only a replica going away does that.
            failures += 1
            if failures >= attempts:
                raise JobQueueError(grpc.StatusCode.UNAVAILABLE, "the job service kept ending the watch")
            await asyncio.sleep(_retry_delay(failures))

    async def watch_jobs(
        self,
        *,
        status: JobStatus | int = JobStatus.UNSPECIFIED,
        job_type: str = "",
        all_users: bool = False,
    ) -> AsyncIterator[list[Job]]:
        """The caller's jobs as they change, a batch at a time; the first batch is empty: the watch has begun.

        ``status`` and ``job_type`` filter as :meth:`list` does; ``all_users`` (operators only) watches
        everyone's. A change committed after the first (empty) batch is never missed while the stream
        lasts; when it ends (a JobQueueError: UNAVAILABLE on a restart, ABORTED for a reader that fell
        behind) changes may have been missed, so watch again and list again. It is not reopened here.
        """
        request = jobs_pb2.WatchJobsRequest(status=_status(status), type=job_type, all_users=all_users)
        async for reply in self._stream(self.stub.WatchJobs, request):
            yield [Job.from_proto(job) for job in reply.jobs]

    async def _stream(self, method: Any, request: Any) -> AsyncIterator[Any]:
        """The replies of a server stream; an expired token before the first reply is renewed once (see _call)."""
        renewed = self._refresh is None
        while True:
            if self._token is None and self._refresh is not None:
                await self._renew(None, self._refresh)
            sent = self._token
            started = False
            try:
                # No deadline: a watch lasts as long as its caller reads it.
                async for reply in method(request, metadata=self._metadata):
                    started = True
                    yield reply
                return
            except grpc.aio.AioRpcError as error:
                failure = JobQueueError.from_rpc_error(error)
                if started or renewed or failure.code != grpc.StatusCode.UNAUTHENTICATED:
                    raise failure from error
            assert self._refresh is not None
            await self._renew(sent, self._refresh)
            renewed = True

    async def cancel(self, job_id: str) -> Job:
        """Withdraw one of the caller's jobs; FAILED_PRECONDITION if it already finished."""
        return Job.from_proto((await self._call(self.stub.CancelJob, jobs_pb2.CancelJobRequest(id=job_id))).job)

    async def rerun(self, job_id: str, *, max_attempts: int = 0) -> Job:
        """Run a FAILED job again with ``max_attempts`` more attempts (0: the server's default).

        The caller's own job, or anyone's for an operator.
        """
        request = jobs_pb2.RerunJobRequest(id=job_id, max_attempts=max_attempts)
        return Job.from_proto((await self._call(self.stub.RerunJob, request)).job)

    async def list_dead(self, *, job_type: str = "", page_size: int = 0, attempts: int = 3) -> AsyncIterator[Job]:
        """Every user's FAILED jobs, most recently failed first, page after page (operators only).

        Each page is retried as :meth:`get` is.
        """
        request = jobs_pb2.ListDeadJobsRequest(page_size=page_size, type=job_type)
        async for job in self._pages(self.stub.ListDeadJobs, request, attempts):
            yield job

    async def rerun_dead(self, *, job_type: str = "", max_attempts: int = 0) -> int:
        """Run every dead job (of ``job_type``, if given) again; how many (operators only)."""
        request = jobs_pb2.RerunDeadJobsRequest(type=job_type, max_attempts=max_attempts)
        return (await self._call(self.stub.RerunDeadJobs, request)).rerun_count

    async def queue_stats(self, minutes: int = 60, *, attempts: int = 3) -> QueueStats:
        """How the queue is doing: jobs by type now, and per minute of the last ``minutes`` (1 to 1,440) what
        was created and finished, over every user's jobs (operators only). Retried as :meth:`get` is."""
        request = jobs_pb2.GetQueueStatsRequest(minutes=minutes)
        reply: jobs_pb2.GetQueueStatsResponse = await self._retrying(
            self.stub.GetQueueStats, request, attempts, _READ_RETRIED
        )
        return QueueStats.from_proto(reply)

    # `timeout` rather than asyncio.timeout (ASYNC109): it bounds each poll's
    # gRPC deadline too, and the TimeoutError can say what status was last seen.
    async def wait(
        self,
        job_id: str,
        *,
        timeout: float = 60.0,  # noqa: ASYNC109
        poll_interval: float = 0.2,
    ) -> Job:
        """Wait until the job is COMPLETED, FAILED or CANCELLED and return it, watching it (WatchJob).

        Raises TimeoutError if it is not final after ``timeout`` seconds. A watch the service ends
        early (a restart) is opened again, as :meth:`watch` does; any other error is raised at once.
        Against a job service older than WatchJob (UNIMPLEMENTED), it polls GetJob every
        ``poll_interval`` seconds instead.
        """
        seen: list[Job] = []

        async def final() -> Job:
            async for job in self.watch(job_id, attempts=_WAIT_WATCH_ATTEMPTS):
                seen.append(job)
            return seen[-1]

        try:
            async with asyncio.timeout(timeout):
                try:
                    return await final()
                except JobQueueError as error:
                    if error.code != grpc.StatusCode.UNIMPLEMENTED:
                        raise
                return await self._poll(job_id, poll_interval)
        except TimeoutError:
            last = seen[-1].status.name if seen else "never answered"
            raise TimeoutError(f"job {job_id} is not finished after {timeout} s (last seen: {last})") from None

    async def _poll(self, job_id: str, interval: float) -> Job:
        """GetJob every ``interval`` seconds until the job is final (for a service without WatchJob)."""
        while True:
            try:
                job = await self.get(job_id, attempts=1)
            except JobQueueError as error:
                if not error.retryable:
                    raise
            else:
                if is_final(job.status):
                    return job
            await asyncio.sleep(interval)

    async def submit_and_wait(
        self,
        job_type: str,
        payload: Payload,
        timeout: float = 60.0,  # noqa: ASYNC109 -- see wait
        *,
        poll_interval: float = 0.2,
    ) -> Job:
        """Submit a job and wait for its final state by watching it (``wait``); a FAILED job is returned."""
        job = await self.submit(job_type, payload)
        return await self.wait(job.id, timeout=timeout, poll_interval=poll_interval)

    async def list(
        self,
        *,
        status: JobStatus | int = JobStatus.UNSPECIFIED,
        job_type: str = "",
        page_size: int = 0,
        attempts: int = 3,
    ) -> AsyncIterator[Job]:
        """Every one of the caller's jobs, newest first, fetching page after page as it is iterated.

        ``status`` and ``job_type`` filter (the defaults mean "any"); ``page_size``
        is per call (0 lets the server choose). Each page is retried as :meth:`get` is.
        """
        request = jobs_pb2.ListJobsRequest(page_size=page_size, status=_status(status), type=job_type)
        async for job in self._pages(self.stub.ListJobs, request, attempts):
            yield job

    async def _pages(self, method: Any, request: _PagedRequest, attempts: int) -> AsyncIterator[Job]:
        """The jobs of every page ``method`` returns for ``request``, following next_page_token."""
        while True:
            reply = await self._retrying(method, request, attempts, _READ_RETRIED)
            for job in reply.jobs:
                yield Job.from_proto(job)
            if not reply.next_page_token:
                return
            # A fresh request per page: one already sent is never changed under its caller.
            following = type(request)()
            following.CopyFrom(request)
            following.page_token = reply.next_page_token
            request = following


def _view(history: bool) -> jobs_pb2.JobView.ValueType:
    return jobs_pb2.JOB_VIEW_FULL if history else jobs_pb2.JOB_VIEW_BASIC


def _status(status: JobStatus | int) -> jobs_pb2.JobStatus.ValueType:
    return jobs_pb2.JobStatus.ValueType(int(status))


def _create_request(  # noqa: PLR0917 -- the fields of CreateJobRequest, in order
    job_type: str,
    payload: Payload,
    priority: JobPriority | int,
    max_attempts: int,
    timeout_seconds: int,
    request_id: str | None,
) -> jobs_pb2.CreateJobRequest:
    return jobs_pb2.CreateJobRequest(
        type=job_type,
        payload=to_value(payload),
        priority=jobs_pb2.JobPriority.ValueType(int(priority)),
        max_attempts=max_attempts,
        timeout_seconds=timeout_seconds,
        request_id=request_id or str(uuid.uuid4()),
    )


def _own_request(request: jobs_pb2.CreateJobRequest) -> jobs_pb2.CreateJobRequest:
    """A copy of ``request`` (never changed under its caller) with a fresh request_id if it has none."""
    copy = jobs_pb2.CreateJobRequest()
    copy.CopyFrom(request)
    copy.request_id = copy.request_id or str(uuid.uuid4())
    return copy


def login_with(
    email: str,
    password: str,
    *,
    address: str = DEFAULT_AUTH_ADDRESS,
    credentials: grpc.ChannelCredentials | None = None,
    call_timeout: float | None = 30.0,
) -> TokenRefresh:
    """A ``refresh`` for :func:`connect_jobs` that logs in with ``email`` and ``password`` each time it is called.

    Each login opens a channel to the auth service at ``address`` (as
    :func:`connect_auth` does) and closes it: tokens last an hour, so a channel
    kept open in between would only wait. The callable keeps the password for
    as long as it lives; where that is unwanted, pass a ``refresh`` of your own.
    """

    async def login() -> str:
        async with connect_auth(address, credentials=credentials, call_timeout=call_timeout) as auth:
            return await auth.login(email, password)

    return login


def connect_auth(
    address: str = DEFAULT_AUTH_ADDRESS,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    call_timeout: float | None = 30.0,
) -> AuthClient:
    """A client for the auth service at ``address`` (plaintext unless ``credentials`` are given).

    ``credentials``: :func:`tls_credentials` for a service that serves TLS (any ``grpc.ChannelCredentials``).

    Call it inside a running event loop; use it as ``async with`` (or ``await close()``).
    ``call_timeout`` is each call's deadline in seconds (None: no deadline).
    """
    return AuthClient(_channel(address, credentials), call_timeout=call_timeout)


def connect_jobs(
    address: str = DEFAULT_JOBS_ADDRESS,
    *,
    token: str | None = None,
    refresh: TokenRefresh | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    call_timeout: float | None = 30.0,
) -> JobsClient:
    """A client for the job service at ``address`` that sends ``token`` with every call.

    ``refresh``, an async callable that returns a new token (e.g.
    :func:`login_with`), is called when the service answers UNAUTHENTICATED
    (then the call is made once more with the new token) and, without
    ``token``, before the first call. Give ``token``, ``refresh``, or both.
    Otherwise the same conventions as :func:`connect_auth`.
    """
    if token is not None:
        auth_metadata(token)  # refuses a malformed token before a channel is opened
    elif refresh is None:
        raise TypeError("connect_jobs needs a token, a refresh callable, or both")
    return JobsClient(_channel(address, credentials), token=token, refresh=refresh, call_timeout=call_timeout)

"""The job service's domain values: plain dataclasses, no protobuf, no SQL."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobqueue.runtime.limits import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_SECONDS

#: Builds a job's queue message from its id, type, payload and timeout_seconds.
Encoder = Callable[[uuid.UUID, str, Any, int], bytes]


class Status(enum.StrEnum):
    """A job's status; the values are what the `jobs.status` column holds."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def final(self) -> bool:
        """Whether a job in this status can never change again."""
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


class AttemptOutcome(enum.StrEnum):
    """How one attempt of a job ended; the values are what the `job_attempts.outcome` column holds."""

    #: It has not ended: a worker runs it.
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    #: The handler failed (retryable or not), or the worker stopped it at its timeout.
    FAILED = "FAILED"
    #: No report came before its lease ran out: the relay took the job back (or another claim took it over).
    LOST = "LOST"
    #: The job was cancelled while it ran.
    CANCELLED = "CANCELLED"


class Priority(enum.IntEnum):
    """How urgent a job is; the value is the AMQP priority of its message."""

    LOW = 1
    NORMAL = 2
    HIGH = 3


@dataclass(frozen=True)
class OutboxMessage:
    """A job's queue message waiting in the outbox to be published."""

    id: int
    job_id: uuid.UUID
    #: The job's type, which names the queue it goes to (jobqueue.runtime.rabbitmq.Topology.job_queue).
    job_type: str
    body: bytes
    priority: Priority
    #: The trace context of the call that stored it (jobqueue.runtime.tracing.capture), or None.
    trace_context: str | None = None


@dataclass(frozen=True)
class NewJob:
    """A checked CreateJob request, ready to store with its queue message."""

    id: uuid.UUID
    owner_id: uuid.UUID
    type: str
    payload: Any
    #: The serialized JobDelivery the relay will publish.
    body: bytes
    priority: Priority = Priority.NORMAL
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    request_id: uuid.UUID | None = None
    #: The trace context of the CreateJob call, stored with the outbox row (jobqueue.runtime.tracing); None when off.
    trace_context: str | None = None


@dataclass(frozen=True)
class Progress:
    """How far a running job has got, as its handler last reported it."""

    #: The share of the work done, 0 to 1.
    fraction: float
    #: A short note for a person; may be empty.
    message: str = ""
    #: When the service recorded it; None on a report (the service stamps it).
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Attempt:
    """One start of a job by a worker, and how it ended (a `job_attempts` row)."""

    #: 1 for the first start, counting on across re-runs (the job's ``attempts`` after this start).
    number: int
    #: As the worker named itself; '' if it did not.
    worker_id: str
    started_at: datetime
    #: None while it runs.
    ended_at: datetime | None
    outcome: AttemptOutcome
    #: Why it did not complete (FAILED, LOST, CANCELLED); None otherwise.
    error: str | None = None


@dataclass(frozen=True)
class Job:
    """A stored job, as the jobs table holds it."""

    id: uuid.UUID
    owner_id: uuid.UUID
    type: str
    payload: Any
    status: Status
    #: The answer when it is a string (the `result` column); see also ``result_json``.
    result: str | None
    error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    priority: Priority = Priority.NORMAL
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    #: When a failed attempt's retry is due (QUEUED only); None when none waits.
    run_after: datetime | None = None
    #: The answer when it is any other JSON value: its JSON text (then ``result`` is None).
    result_json: str | None = None
    #: What the handler last said about how far it got; None if it never said (this attempt).
    progress: Progress | None = None
    #: Every attempt, oldest first, when asked for (GetJob's JOB_VIEW_FULL); empty otherwise.
    attempt_history: tuple[Attempt, ...] = ()


@dataclass(frozen=True)
class ListQuery:
    """Which of a user's jobs to list, and where the page starts."""

    owner_id: uuid.UUID
    page_size: int
    status: Status | None = None
    type: str | None = None
    #: (created_at, id) of the last job on the previous page; None for the first page.
    after: tuple[datetime, uuid.UUID] | None = None


@dataclass(frozen=True)
class Report:
    """A worker's report on a job (the domain form of UpdateJobRequest)."""

    job_id: uuid.UUID
    status: Status
    claim_id: uuid.UUID | None = None
    attempt: int = 0
    #: With COMPLETED, a string answer.
    result: str | None = None
    #: With COMPLETED, instead of ``result``: any other JSON answer, as compact JSON text.
    result_json: str | None = None
    error: str | None = None
    #: With FAILED: the failure was transient, so the job may be retried.
    retryable: bool = False
    #: With a retryable FAILED: how long the retry waits, if the job has attempts left.
    retry_delay: float = 0.0
    #: With RUNNING and the current claim: how far the handler has got (records it; claims nothing).
    progress: Progress | None = None
    #: Which worker reports ('' if it did not say); recorded with the attempt a RUNNING report starts.
    worker_id: str = ""


@dataclass(frozen=True)
class TypeCounts:
    """How many jobs of one type are QUEUED, RUNNING and FAILED (dead) now."""

    type: str
    queued: int
    running: int
    failed: int


@dataclass(frozen=True)
class MinuteCounts:
    """What happened to jobs in one minute: created, and reached each final status."""

    start: datetime
    created: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0


@dataclass(frozen=True)
class QueueStats:
    """The queue now (by type, ordered by type) and in the recent past (by minute, oldest first)."""

    job_types: tuple[TypeCounts, ...]
    minutes: tuple[MinuteCounts, ...]


@dataclass(frozen=True)
class DeclaredType:
    """A job type as its workers declare it (DeclareJobTypes) and the job_types table holds it."""

    name: str
    summary: str
    #: The JSON Schema every payload must satisfy, whole numbers as ints (servicer.json_from_proto).
    payload_schema: dict[str, Any]
    version: int
    #: Attempts and timeout of a job that asks for none; 0 means the service's default (gen/jobqueue/runtime/limits.py).
    default_max_attempts: int = 0
    default_timeout_seconds: int = 0
    #: When a worker last declared it; None for a type no worker has declared (the built-in ones, installed).
    declared_at: datetime | None = None

    def same_declaration(self, other: DeclaredType) -> bool:
        """Whether ``other`` declares exactly this (declared_at aside)."""
        return (self.summary, self.payload_schema, self.default_max_attempts, self.default_timeout_seconds) == (
            other.summary,
            other.payload_schema,
            other.default_max_attempts,
            other.default_timeout_seconds,
        )

"""The job service's use cases: create, read, list, cancel and re-run jobs, on domain values.

Requests arrive checked for shape by the servicer; what a valid value is lives
in job_svc/rules.py, how workers' reports are applied in job_svc/reports.py.
What the use cases need from the database, the relay and the broker is the
Protocols below (job_svc/store.py, relay.py and publisher.py implement them;
tests/support/fake_job_service.py fakes them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from common import db
from job_svc import metrics
from job_svc.auth import Caller
from job_svc.errors import JobFinished, JobNotFound, NotFailed, StatsTooCostly
from job_svc.limits import JobLimits
from job_svc.model import Attempt, DeclaredType, Encoder, Job, ListQuery, NewJob, Priority, QueueStats, Status
from job_svc.rules import (
    MAX_BATCH,
    RERUN_BATCH,
    check_attempts,
    check_listing,
    check_stats_minutes,
    decode_page_token,
    echoed,
    encode_page_token,
    page_length,
)
from job_svc.schemas import generic_violation
from job_svc.types import JobTypeRegistry
from job_svc.unfinished import UnfinishedCap
from jobqueue.runtime import tracing
from jobqueue.runtime.batching import Coalescer
from jobqueue.runtime.errors import FieldViolation, InvalidArgument
from jobqueue.runtime.limits import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS
from jobqueue.runtime.messages import encode_delivery

#: How many group-commit transactions of CreateJob calls may be in flight at once.
CREATE_TRANSACTIONS = 4
#: Most type names an "unknown job type" error lists (errors travel in trailers).
LISTED_TYPES = 20


class Store(Protocol):
    """The jobs table, as the use cases need it (job_svc.store.JobStore; see its methods for the contract)."""

    async def create(
        self,
        jobs: Sequence[NewJob],
        max_unfinished: int = 0,
        *,
        whole: bool = False,
        capped: Collection[uuid.UUID] | None = None,
    ) -> Sequence[tuple[Job, bool] | None]:
        """Store jobs with their queue messages, in one transaction; each job and whether it is new.

        None for a job that would give its owner more than ``max_unfinished`` unfinished jobs (0: no cap);
        with ``whole``, all are None and none is stored if one would. With ``capped``, only those owners
        are checked.
        """

    async def count_unfinished(self, owners: Sequence[uuid.UUID], limit: int) -> dict[uuid.UUID, int]:
        """Each owner's QUEUED and RUNNING jobs, counted up to ``limit``."""

    async def get(self, job_id: uuid.UUID, owner_id: uuid.UUID | None = None) -> Job | None:
        """The job (only if ``owner_id`` owns it, when given)."""

    async def cancel(self, job_id: uuid.UUID, owner_id: uuid.UUID) -> tuple[Job, Status] | None:
        """Cancel the owner's QUEUED or RUNNING job; the job and the status it had, else None."""

    async def rerun(self, job_id: uuid.UUID, grant: int, encode: Encoder, owner_id: uuid.UUID | None) -> Job | None:
        """Queue the FAILED job again with ``grant`` more attempts; None if it is not FAILED (or not the owner's)."""

    async def rerun_dead(
        self, job_type: str | None, failed_by: datetime, grant: int, limit: int, encode: Encoder
    ) -> int:
        """Queue again up to ``limit`` jobs FAILED by ``failed_by``; how many."""

    async def list_dead(
        self, page_size: int, job_type: str | None, after: tuple[datetime, uuid.UUID] | None
    ) -> Sequence[Job]:
        """A page of every owner's FAILED jobs, most recently failed first, after the cursor."""

    async def now(self) -> datetime:
        """The clock the stored timestamps come from."""

    async def attempts(self, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[Attempt, ...]]:
        """Every recorded attempt of each job, oldest first; a job with none is left out."""

    async def queue_stats(self, minutes: int) -> QueueStats:
        """The unfinished and dead jobs by type now, and per minute of the last ``minutes`` what was
        created and finished; asyncpg.QueryCanceledError if that takes too long."""

    # Last: below it, ``list`` in this class body would name the method.
    async def list(self, query: ListQuery) -> list[Job]:
        """A page of the owner's jobs, newest first, after the cursor."""


class Relay(Protocol):
    """What publishes stored queue messages (job_svc.relay.OutboxRelay)."""

    def wake(self) -> None:
        """There are new messages to publish."""


class Broker(Protocol):
    """What makes the types' queues and tells the workers about cancelled jobs (job_svc.publisher.Publisher)."""

    async def declare_queues(self, job_types: Sequence[str]) -> None:
        """Declare the queues of ``job_types``; BrokerUnavailable if the broker cannot."""

    async def announce_cancellation(self, job_id: uuid.UUID) -> None:
        """Tell every worker, best effort, that the job was cancelled."""


class Jobs:
    """Validates and carries out each JobService call on domain values, for the job ``types`` it knows."""

    def __init__(
        self,
        store: Store,
        relay: Relay,
        publisher: Broker,
        types: JobTypeRegistry,
        limits: JobLimits | None = None,
    ) -> None:
        self._store = store
        self._relay = relay
        self._publisher = publisher
        self._types = types
        self._limits = limits or JobLimits()
        self._cap = UnfinishedCap(store, self._limits.unfinished)
        # Concurrent CreateJob calls share transactions (group commit): one
        # INSERT of many rows costs the database about what one row does.
        self._creates: Coalescer[NewJob, tuple[Job, bool]] = Coalescer(
            self._store_batch, max_batch=MAX_BATCH, max_concurrent=CREATE_TRANSACTIONS
        )

    async def create(self, job: NewJob) -> Job:
        """Store a new job with its queue message (or return the one its ``request_id`` created).

        Refused (RESOURCE_EXHAUSTED) before anything is stored beyond its owner's rates, and when it
        would pass the cap on its owner's unfinished jobs (job_svc/limits.py).
        """
        self._limits.admit([job])
        stored, created = await self._creates.submit(job)
        if not created:
            self._limits.refund([job])
        return stored

    async def create_batch(self, jobs: Sequence[NewJob]) -> Sequence[Job]:
        """Store new jobs (at most MAX_BATCH: the servicer checks) in one transaction: all or, on an error, none.

        Refused as a whole, as ``create`` is, when the jobs pass a rate or would pass the cap.
        """
        self._limits.admit(jobs)
        stored = await self._cap.create(jobs, whole=True)
        if any(result is None for result in stored):
            raise self._limits.over_cap()
        done = [result for result in stored if result is not None]
        if any(created for _, created in done):
            self._relay.wake()
            metrics.created(job for job, created in done if created)
        self._limits.refund(new for new, (_, created) in zip(jobs, done, strict=True) if not created)
        return [job for job, _ in done]

    async def _store_batch(self, jobs: Sequence[NewJob]) -> Sequence[tuple[Job, bool] | BaseException]:
        """The Coalescer's runner: one transaction for the batch, or one each if the database refused it."""
        stored: Sequence[tuple[Job, bool] | BaseException | None]
        try:
            # The calls' transaction, traced as theirs: a child of the first job's CreateJob, linked to each.
            with tracing.batch_span("store CreateJob batch", (job.trace_context for job in jobs)):
                stored = await self._cap.create(jobs)
        except asyncpg.PostgresError as error:
            if len(jobs) == 1 or isinstance(error, db.TRANSIENT_ERRORS):
                raise
            # A row the database refuses must not fail the calls it shared a batch with.
            stored = await asyncio.gather(*(self._store_one(job) for job in jobs), return_exceptions=True)
        results = [self._limits.over_cap() if result is None else result for result in stored]
        new = [result[0] for result in results if not isinstance(result, BaseException) and result[1]]
        if new:
            self._relay.wake()
            metrics.created(new)
        return results

    async def _store_one(self, job: NewJob) -> tuple[Job, bool] | None:
        [stored] = await self._cap.create([job])
        return stored

    async def check_new(
        self,
        owner: uuid.UUID,
        job_type: str,
        payload: Any,
        *,
        priority: Priority = Priority.NORMAL,
        max_attempts: int = 0,
        timeout_seconds: int = 0,
        request_id: uuid.UUID | None = None,
        looked_up: bool = False,
    ) -> NewJob:
        """A new job from a CreateJob request's values, with its queue message; INVALID_ARGUMENT if bad.

        The payload must follow the rules of every payload (job_svc/schemas.py) and the type's schema;
        max_attempts and timeout_seconds left at 0 take the type's defaults, else the service's.
        ``looked_up``: ``look_up_types`` was just called with this type among others (a batch).
        """
        known = self._types.get(job_type) if looked_up else await self._types.find(job_type)
        if known is None:
            raise InvalidArgument([FieldViolation("type", f"unknown job type {echoed(job_type)}; {self._known()}")])
        violation = generic_violation(payload)
        if violation is not None:
            raise InvalidArgument([violation])
        violations = known.schema.violations(payload)
        if violations:
            raise InvalidArgument(violations)
        declared = known.declared
        max_attempts = check_attempts(max_attempts, default=declared.default_max_attempts or DEFAULT_MAX_ATTEMPTS)
        default_timeout = declared.default_timeout_seconds or DEFAULT_TIMEOUT_SECONDS
        if not 0 <= timeout_seconds <= MAX_TIMEOUT_SECONDS:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "timeout_seconds",
                        f"must be between 1 and {MAX_TIMEOUT_SECONDS} (0 means {default_timeout})",
                    )
                ]
            )
        timeout_seconds = timeout_seconds or default_timeout
        job_id = uuid.uuid4()
        return NewJob(
            id=job_id,
            owner_id=owner,
            type=job_type,
            payload=payload,
            body=encode_delivery(job_id, job_type, payload, timeout_seconds),
            priority=priority,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
            request_id=request_id,
            # Checked in the call's own task, so this is the CreateJob call's span, whichever
            # transaction the job is then stored in.
            trace_context=tracing.capture(),
        )

    async def look_up_types(self, names: Collection[str]) -> None:
        """Learn of any of ``names`` declared through another replica, in one read (see check_new's ``looked_up``)."""
        await self._types.look_up(names)

    async def get(self, owner: uuid.UUID, job_id: uuid.UUID, *, history: bool = False) -> Job:
        """One of the owner's jobs; with ``history``, its ``attempt_history`` too (one more read)."""
        job = await self._store.get(job_id, owner_id=owner)
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        return (await self.with_history([job]))[0] if history else job

    async def with_history(self, jobs: Sequence[Job]) -> list[Job]:
        """The jobs, in order, each with its ``attempt_history`` (oldest first), read in one statement."""
        if not jobs:
            return []
        history = await self._store.attempts([job.id for job in jobs])
        return [dataclasses.replace(job, attempt_history=history.get(job.id, ())) for job in jobs]

    async def queue_stats(self, minutes: int) -> QueueStats:
        """The queue now and per minute of the last ``minutes`` (1..1440; 0 means 60), over every user's jobs.

        For operators (the servicer checks). RESOURCE_EXHAUSTED if the database cannot count it quickly.
        """
        window = check_stats_minutes(minutes)
        try:
            return await self._store.queue_stats(window)
        except asyncpg.QueryCanceledError:
            raise StatsTooCostly(f"counting {window} minutes of jobs took too long; ask for fewer minutes") from None

    async def list(
        self,
        owner: uuid.UUID,
        page_size: int,
        page_token: str,
        status: Status | None,
        job_type: str | None,
    ) -> tuple[list[Job], str]:
        """A page of the owner's jobs, newest first, and the token of the next page ('' if none).

        A page of large jobs stops short of ``page_size`` at about MAX_PAGE_BYTES (job_svc/rules.py).
        """
        if job_type is not None:
            await self._types.find(job_type)  # a type declared through another replica just now is known
        size = check_listing(page_size, job_type, self._types)
        filters: list[str | None] = [status, job_type]
        after = decode_page_token(page_token, filters) if page_token else None
        query = ListQuery(
            owner_id=owner,
            page_size=size + 1,
            status=status,
            type=job_type,
            after=after,
        )
        jobs = await self._store.list(query)
        length = page_length(jobs, size)
        if length == len(jobs):
            return jobs, ""
        last = jobs[length - 1]
        return jobs[:length], encode_page_token(last.created_at, last.id, filters)

    async def cancel(self, owner: uuid.UUID, job_id: uuid.UUID) -> Job:
        """Cancel one of the owner's jobs; a RUNNING one's worker is told to stop."""
        cancelled = await self._store.cancel(job_id, owner)
        if cancelled is None:
            job = await self.get(owner, job_id)  # NOT_FOUND if it is not the owner's
            raise JobFinished(f"job {job_id} is already {job.status.value}")
        job, previous = cancelled
        metrics.cancelled(job)
        if previous is Status.RUNNING:
            await self._publisher.announce_cancellation(job_id)
        return job

    async def rerun(self, caller: Caller, job_id: uuid.UUID, max_attempts: int) -> Job:
        """Queue a FAILED job again with more attempts: the caller's own, or anyone's for an operator."""
        grant = check_attempts(max_attempts)
        job = await self._store.rerun(job_id, grant, encode_delivery, owner_id=None if caller.operator else caller.id)
        if job is None:
            found = await self._store.get(job_id, owner_id=None if caller.operator else caller.id)
            if found is None:
                raise JobNotFound(f"job {job_id} not found")
            raise NotFailed(f"job {job_id} is {found.status.value}; only a FAILED job can be re-run")
        self._relay.wake()
        return job

    async def list_dead(self, page_size: int, page_token: str, job_type: str | None) -> tuple[Sequence[Job], str]:
        """A page of every owner's FAILED jobs, most recently failed first, and the next page's token."""
        if job_type is not None:
            await self._types.find(job_type)
        size = check_listing(page_size, job_type, self._types)
        filters: list[str | None] = ["dead", job_type]
        after = decode_page_token(page_token, filters) if page_token else None
        jobs = await self._store.list_dead(size + 1, job_type, after)
        length = page_length(jobs, size)
        if length == len(jobs):
            return jobs, ""
        last = jobs[length - 1]
        assert last.finished_at is not None  # FAILED jobs are finished
        return jobs[:length], encode_page_token(last.finished_at, last.id, filters)

    async def check_type_filter(self, job_type: str | None) -> None:
        """INVALID_ARGUMENT on ``type`` unless it names a job type (or is None: any type), as ListJobs checks it."""
        if job_type is not None:
            await self._types.find(job_type)
            check_listing(0, job_type, self._types)

    async def job_types(self) -> Sequence[DeclaredType]:
        """Every job type CreateJob accepts, ordered by name, as the table holds them now."""
        await self._types.refresh()
        return self._types.declared()

    async def declare_types(self, types: Sequence[DeclaredType]) -> Sequence[DeclaredType]:
        """A worker's declaration of the types it runs; each type as now stored, in the request's order.

        The types' queues are declared too before the answer, since a worker may not create them
        itself (jobqueue.runtime.rabbitmq.worker_permissions): UNAVAILABLE while the broker is away,
        and the worker tries again.
        """
        stored = await self._types.declare(types)
        await self._publisher.declare_queues([declared.name for declared in stored])
        return stored

    def _known(self) -> str:
        names = self._types.names()
        listed = ", ".join(names[:LISTED_TYPES])
        more = f" and {len(names) - LISTED_TYPES} more (ListJobTypes lists them)" if len(names) > LISTED_TYPES else ""
        return f"expected one of: {listed}{more}"

    async def rerun_dead(self, job_type: str | None, max_attempts: int) -> int:
        """Queue again every job that was FAILED when the call began (of ``job_type``, if given); how many."""
        if job_type is not None and await self._types.find(job_type) is None:
            raise InvalidArgument([FieldViolation("type", f"unknown job type {echoed(job_type)}")])
        grant = check_attempts(max_attempts)
        failed_by = await self._store.now()
        total = 0
        while True:
            # Batches keep each transaction (and its row locks) short.
            count = await self._store.rerun_dead(job_type, failed_by, grant, RERUN_BATCH, encode_delivery)
            total += count
            if count:
                self._relay.wake()
            if count < RERUN_BATCH:
                return total

"""In-memory stand-ins for the job service's store, relay and publisher, for unit tests of its core.

``FakeStore`` follows job_svc/store.py's documented semantics statement by
statement: idempotent creates by (owner, request_id); the fences of ``start``
(QUEUED or RUNNING; a new claim counts an attempt, the same claim changes
nothing) and ``finish`` (RUNNING the reported attempt; a retryable failure
with attempts left goes back to QUEUED); ``cancel`` returning the previous
status; re-runs granting attempts on top of those used. Each call is one
"transaction": its rows share one timestamp, as PostgreSQL's now() makes them,
and the clock moves on by a millisecond between calls.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from job_svc.errors import BrokerUnavailable, TypeConflict
from job_svc.model import (
    Attempt,
    AttemptOutcome,
    DeclaredType,
    Encoder,
    Job,
    ListQuery,
    MinuteCounts,
    NewJob,
    OutboxMessage,
    QueueStats,
    Report,
    Status,
    TypeCounts,
)
from job_svc.type_store import Outcome
from job_svc.types import JobTypeRegistry
from jobqueue.worker.job_types import JobType
from worker_svc import builtins

START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class _Row:
    """A jobs row: the job plus the columns the domain value does not carry."""

    job: Job
    request_id: uuid.UUID | None = None
    claim_id: uuid.UUID | None = None
    lease_until: datetime | None = None


@dataclass
class FakeStore:
    """The jobs and job_outbox tables, in memory (see the module doc)."""

    #: Called with each new job of a create; an exception it returns fails the whole statement, as a refused row does.
    refuse: Callable[[NewJob], BaseException | None] = lambda _job: None
    clock: datetime = START
    rows: dict[uuid.UUID, _Row] = field(default_factory=dict)
    outbox: list[OutboxMessage] = field(default_factory=list)
    #: The size of each create statement, in order (one per transaction).
    creates: list[int] = field(default_factory=list)
    #: The owners each create checked against the cap, in order (empty: a plain insert).
    checked: list[set[uuid.UUID]] = field(default_factory=list)
    #: How many owners each count_unfinished call counted, in order.
    counts: list[int] = field(default_factory=list)
    #: Every outcome ``finish`` was given, in order (to see the retry delays chosen).
    finished: list[Report] = field(default_factory=list)
    #: How many jobs each rerun_dead call re-queued, in order.
    sweeps: list[int] = field(default_factory=list)
    #: The job_attempts table: each job's attempts, oldest first.
    history: dict[uuid.UUID, list[Attempt]] = field(default_factory=dict)
    _next_outbox_id: int = 1

    def _tick(self) -> datetime:
        self.clock += timedelta(milliseconds=1)
        return self.clock

    def _update(self, job_id: uuid.UUID, **changes: Any) -> Job:
        row = self.rows[job_id]
        row.job = dataclasses.replace(row.job, **changes)
        return row.job

    def _queue_message(self, job: Job, encode: Encoder) -> None:
        body = encode(job.id, job.type, job.payload, job.timeout_seconds)
        self.outbox.append(OutboxMessage(self._next_outbox_id, job.id, job.type, body, job.priority))
        self._next_outbox_id += 1

    def _end_attempt(self, job: Job, outcome: AttemptOutcome, error: str | None, now: datetime) -> None:
        """End the job's current attempt, if it is recorded and still running."""
        attempts = self.history.get(job.id, [])
        for i, attempt in enumerate(attempts):
            if attempt.number == job.attempts and attempt.ended_at is None:
                attempts[i] = dataclasses.replace(attempt, outcome=outcome, ended_at=now, error=error)

    def add(self, job: Job, *, claim_id: uuid.UUID | None = None) -> Job:
        """Put a job in the table as it is (a test's starting state)."""
        self.rows[job.id] = _Row(job, claim_id=claim_id)
        return job

    def _fits(
        self,
        jobs: Sequence[NewJob],
        max_unfinished: int,
        used: Collection[tuple[uuid.UUID, uuid.UUID | None]],
        capped: Collection[uuid.UUID] | None,
    ) -> list[bool]:
        """Which jobs fit under the cap, in order (repeats of a used request_id always do), as the store decides."""
        unfinished: dict[uuid.UUID, int] = {}
        for row in self.rows.values():
            if not row.job.status.final:
                unfinished[row.job.owner_id] = unfinished.get(row.job.owner_id, 0) + 1
        seen = set(used)
        fits: list[bool] = []
        for new in jobs:
            key = (new.owner_id, new.request_id)
            if new.request_id is not None and key in seen:
                fits.append(True)
            else:
                count = unfinished.get(new.owner_id, 0)
                fits.append(
                    not max_unfinished or (capped is not None and new.owner_id not in capped) or count < max_unfinished
                )
                unfinished[new.owner_id] = count + fits[-1]
            seen.add(key)
        return fits

    # The Store, ReportStore and OutboxStore Protocols.

    async def count_unfinished(self, owners: Sequence[uuid.UUID], limit: int) -> dict[uuid.UUID, int]:
        self.counts.append(len(owners))
        unfinished = Counter(r.job.owner_id for r in self.rows.values() if not r.job.status.final)
        return {owner: min(unfinished[owner], limit) for owner in owners}

    async def create(
        self,
        jobs: Sequence[NewJob],
        max_unfinished: int = 0,
        *,
        whole: bool = False,
        capped: Collection[uuid.UUID] | None = None,
    ) -> Sequence[tuple[Job, bool] | None]:
        self.creates.append(len(jobs))
        owners = {new.owner_id for new in jobs}
        self.checked.append(set() if not max_unfinished else owners if capped is None else owners & set(capped))
        for new in jobs:
            if (error := self.refuse(new)) is not None:
                raise error  # the statement fails: nothing of the batch is written
        now = self._tick()
        by_key = {(r.job.owner_id, r.request_id): r.job for r in self.rows.values() if r.request_id is not None}
        fits = self._fits(jobs, max_unfinished, by_key.keys(), capped)
        if whole and not all(fits):
            return [None] * len(jobs)
        stored: list[tuple[Job, bool] | None] = []
        for new, fit in zip(jobs, fits, strict=True):
            if not fit:
                stored.append(None)
                continue
            earlier = by_key.get((new.owner_id, new.request_id)) if new.request_id is not None else None
            if earlier is not None:
                stored.append((earlier, False))
                continue
            job = Job(
                id=new.id,
                owner_id=new.owner_id,
                type=new.type,
                payload=new.payload,
                status=Status.QUEUED,
                result=None,
                error=None,
                attempts=0,
                created_at=now,
                updated_at=now,
                started_at=None,
                finished_at=None,
                priority=new.priority,
                max_attempts=new.max_attempts,
                timeout_seconds=new.timeout_seconds,
            )
            self.rows[job.id] = _Row(job, request_id=new.request_id)
            if new.request_id is not None:
                by_key[new.owner_id, new.request_id] = job
            self.outbox.append(OutboxMessage(self._next_outbox_id, job.id, job.type, new.body, job.priority))
            self._next_outbox_id += 1
            stored.append((job, True))
        return stored

    async def get(self, job_id: uuid.UUID, owner_id: uuid.UUID | None = None) -> Job | None:
        row = self.rows.get(job_id)
        if row is None or (owner_id is not None and row.job.owner_id != owner_id):
            return None
        return row.job

    async def get_many(self, job_ids: Sequence[uuid.UUID]) -> Sequence[Job]:
        return [self.rows[i].job for i in set(job_ids) if i in self.rows]

    async def start(
        self,
        claims: Sequence[tuple[uuid.UUID, uuid.UUID]],
        lease_grace: float,
        worker_ids: Sequence[str] | None = None,
    ) -> Sequence[Job]:
        now = self._tick()
        started = []
        for i, (job_id, claim_id) in enumerate(claims):
            row = self.rows.get(job_id)
            if row is None or row.job.status not in (Status.QUEUED, Status.RUNNING):
                continue
            same = row.claim_id == claim_id
            if not same:
                attempts = self.history.setdefault(job_id, [])
                number = row.job.attempts + 1
                for k, earlier in enumerate(attempts):
                    if earlier.ended_at is None:
                        error = f"taken over by attempt {number}"
                        attempts[k] = dataclasses.replace(
                            earlier, outcome=AttemptOutcome.LOST, ended_at=now, error=error
                        )
                worker_id = worker_ids[i] if worker_ids is not None else ""
                attempts.append(Attempt(number, worker_id, now, None, AttemptOutcome.RUNNING))
            row.claim_id = claim_id
            row.lease_until = now + timedelta(seconds=row.job.timeout_seconds + lease_grace)
            started.append(
                self._update(
                    job_id,
                    status=Status.RUNNING,
                    attempts=row.job.attempts if same else row.job.attempts + 1,
                    started_at=row.job.started_at if same else now,
                    run_after=None,
                    updated_at=now,
                    progress=row.job.progress if same else None,
                )
            )
        return started

    async def note_progress(self, reports: Sequence[Report]) -> Sequence[Job]:
        now = self._tick()
        noted = []
        for report in reports:
            row = self.rows.get(report.job_id)
            if row is None or row.job.status is not Status.RUNNING or row.claim_id != report.claim_id:
                continue
            assert report.progress is not None
            progress = dataclasses.replace(report.progress, updated_at=now)
            noted.append(self._update(report.job_id, progress=progress, updated_at=now))
        return noted

    async def finish(self, reports: Sequence[Report]) -> Sequence[Job]:
        now = self._tick()
        self.finished.extend(reports)
        finished = []
        for report in reports:
            row = self.rows.get(report.job_id)
            if row is None or row.job.status is not Status.RUNNING or row.job.attempts != report.attempt:
                continue
            retry = report.retryable and row.job.attempts < row.job.max_attempts
            row.lease_until = None
            self._end_attempt(row.job, AttemptOutcome(report.status.value), report.error, now)
            finished.append(
                self._update(
                    report.job_id,
                    status=Status.QUEUED if retry else report.status,
                    result=report.result,
                    result_json=report.result_json,
                    error=report.error,
                    run_after=now + timedelta(seconds=report.retry_delay) if retry else None,
                    finished_at=None if retry else now,
                    updated_at=now,
                )
            )
        return finished

    async def cancel(self, job_id: uuid.UUID, owner_id: uuid.UUID) -> tuple[Job, Status] | None:
        now = self._tick()
        row = self.rows.get(job_id)
        if row is None or row.job.owner_id != owner_id or row.job.status not in (Status.QUEUED, Status.RUNNING):
            return None
        previous = row.job.status
        row.lease_until = None
        if previous is Status.RUNNING:
            self._end_attempt(row.job, AttemptOutcome.CANCELLED, "cancelled by its owner", now)
        job = self._update(
            job_id,
            status=Status.CANCELLED,
            error="cancelled by its owner",
            run_after=None,
            finished_at=now,
            updated_at=now,
        )
        return job, previous

    def _requeue(self, jobs: Sequence[Job], grant: int, encode: Encoder, now: datetime) -> list[Job]:
        requeued = []
        for job in jobs:
            self._queue_message(job, encode)
            row = self.rows[job.id]
            row.claim_id = row.lease_until = None
            requeued.append(
                self._update(
                    job.id,
                    status=Status.QUEUED,
                    max_attempts=job.attempts + grant,
                    finished_at=None,
                    run_after=None,
                    updated_at=now,
                )
            )
        return requeued

    async def rerun(self, job_id: uuid.UUID, grant: int, encode: Encoder, owner_id: uuid.UUID | None) -> Job | None:
        now = self._tick()
        job = await self.get(job_id, owner_id)
        if job is None or job.status is not Status.FAILED:
            return None
        [requeued] = self._requeue([job], grant, encode, now)
        return requeued

    async def rerun_dead(
        self, job_type: str | None, failed_by: datetime, grant: int, limit: int, encode: Encoder
    ) -> int:
        now = self._tick()
        dead = sorted(
            (
                r.job
                for r in self.rows.values()
                if r.job.status is Status.FAILED
                and r.job.finished_at is not None
                and r.job.finished_at <= failed_by
                and job_type in (None, r.job.type)
            ),
            key=lambda job: job.finished_at or now,
        )[:limit]
        self.sweeps.append(len(self._requeue(dead, grant, encode, now)))
        return len(dead)

    async def list_dead(
        self, page_size: int, job_type: str | None, after: tuple[datetime, uuid.UUID] | None
    ) -> Sequence[Job]:
        dead = [
            r.job
            for r in self.rows.values()
            if r.job.status is Status.FAILED
            and job_type in (None, r.job.type)
            and (after is None or (r.job.finished_at or START, r.job.id) < after)
        ]
        dead.sort(key=lambda job: (job.finished_at or START, job.id), reverse=True)
        return dead[:page_size]

    async def now(self) -> datetime:
        return self._tick()

    async def attempts(self, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[Attempt, ...]]:
        return {job_id: tuple(self.history[job_id]) for job_id in job_ids if self.history.get(job_id)}

    async def queue_stats(self, minutes: int) -> QueueStats:
        now = self._tick()
        by_type: dict[str, Counter[Status]] = {}
        for row in self.rows.values():
            if row.job.status in (Status.QUEUED, Status.RUNNING, Status.FAILED):
                by_type.setdefault(row.job.type, Counter())[row.job.status] += 1
        last = now.replace(second=0, microsecond=0)
        starts = [last - timedelta(minutes=minutes - 1 - i) for i in range(minutes)]
        buckets = {start: Counter[str]() for start in starts}
        for row in self.rows.values():
            created = row.job.created_at.replace(second=0, microsecond=0)
            if created in buckets:
                buckets[created]["created"] += 1
            if row.job.finished_at is not None:
                finished = row.job.finished_at.replace(second=0, microsecond=0)
                if finished in buckets:
                    buckets[finished][row.job.status.value.lower()] += 1
        return QueueStats(
            job_types=tuple(
                TypeCounts(name, c[Status.QUEUED], c[Status.RUNNING], c[Status.FAILED])
                for name, c in sorted(by_type.items())
            ),
            minutes=tuple(
                MinuteCounts(start, b["created"], b["completed"], b["failed"], b["cancelled"])
                for start, b in buckets.items()
            ),
        )

    async def expire_leases(self, limit: int) -> int:
        now = self._tick()
        expired = [
            r
            for r in self.rows.values()
            if r.job.status is Status.RUNNING and r.lease_until is not None and r.lease_until < now
        ][:limit]
        for row in expired:
            retry = row.job.attempts < row.job.max_attempts
            row.claim_id = row.lease_until = None
            error = f"attempt {row.job.attempts} timed out: no report within {row.job.timeout_seconds} s"
            self._end_attempt(row.job, AttemptOutcome.LOST, error, now)
            self._update(
                row.job.id,
                status=Status.QUEUED if retry else Status.FAILED,
                error=error,
                run_after=now if retry else None,
                finished_at=None if retry else now,
                updated_at=now,
            )
        return len(expired)

    async def enqueue_due(self, limit: int, encode: Encoder) -> int:
        now = self._tick()
        due = sorted(
            (
                r.job
                for r in self.rows.values()
                if r.job.status is Status.QUEUED and r.job.run_after is not None and r.job.run_after <= now
            ),
            key=lambda job: job.run_after or now,
        )[:limit]
        for job in due:
            self._queue_message(job, encode)
            self._update(job.id, run_after=None, updated_at=now)
        return len(due)

    @asynccontextmanager
    async def outbox_batch(self, limit: int) -> AsyncIterator[Sequence[OutboxMessage]]:
        batch = self.outbox[:limit]
        yield batch
        # Only a block that exits normally deletes its rows (the transaction commits).
        taken = {message.id for message in batch}
        self.outbox = [message for message in self.outbox if message.id not in taken]

    # Last: below it, ``list`` in this class body would name the method.
    async def list(self, query: ListQuery) -> list[Job]:
        jobs = [
            r.job
            for r in self.rows.values()
            if r.job.owner_id == query.owner_id
            and query.status in (None, r.job.status)
            and query.type in (None, r.job.type)
            and (query.after is None or (r.job.created_at, r.job.id) < query.after)
        ]
        jobs.sort(key=lambda job: (job.created_at, job.id), reverse=True)
        return jobs[: query.page_size]


def declared(job_type: JobType) -> DeclaredType:
    """A worker's job type as the job service holds it, never declared (as the built-in ones are installed)."""
    return DeclaredType(
        name=job_type.name,
        summary=job_type.summary,
        payload_schema=dict(job_type.schema),
        version=job_type.version,
        default_max_attempts=job_type.max_attempts or 0,
        default_timeout_seconds=job_type.timeout_seconds or 0,
    )


@dataclass
class FakeTypeSource:
    """The job_types table, in memory, holding the built-in types as the migration installs them."""

    types: dict[str, DeclaredType] = field(
        default_factory=lambda: {name: declared(t) for name, t in builtins.worker.types.items()}
    )
    clock: datetime = START
    #: How many times the whole table was read.
    loads: int = 0

    async def load(self) -> Sequence[DeclaredType]:
        self.loads += 1
        return [self.types[name] for name in sorted(self.types)]

    async def fingerprint(self) -> str:
        return repr(sorted((t.name, t.version, t.declared_at) for t in self.types.values()))

    async def declare(self, types: Sequence[DeclaredType]) -> Sequence[tuple[DeclaredType, Outcome]]:
        """job_svc.type_store.TypeStore.declare's version policy."""
        self.clock += timedelta(milliseconds=1)
        results: list[tuple[DeclaredType, Outcome]] = []
        changed = dict(self.types)
        for new in types:
            current = changed.get(new.name)
            if current is not None and new.version < current.version:
                results.append((current, Outcome.OLDER))
                continue
            if current is not None and new.version == current.version and not current.same_declaration(new):
                raise TypeConflict(f"job type {new.name!r} version {new.version} is already declared differently")
            outcome = Outcome.CREATED if current is None else Outcome.REPLACED
            if current is not None and new.version == current.version:
                outcome = Outcome.CONFIRMED
            changed[new.name] = dataclasses.replace(new, declared_at=self.clock)
            results.append((changed[new.name], outcome))
        self.types = changed
        return results


def type_registry(*extra: JobType) -> JobTypeRegistry:
    """A registry over a FakeTypeSource holding the built-in types and ``extra`` ones (read at the first look-up)."""
    source = FakeTypeSource()
    source.types.update((t.name, declared(t)) for t in extra)
    return JobTypeRegistry(source)


@dataclass
class FakeRelay:
    """Counts the wake-ups the use cases give it."""

    wakes: int = 0

    def wake(self) -> None:
        self.wakes += 1


@dataclass
class FakePublisher:
    """A broker that confirms everything while ``connected``; records what it was given."""

    connected: bool = True
    published: list[OutboxMessage] = field(default_factory=list)
    announced: list[uuid.UUID] = field(default_factory=list)
    queues: set[str] = field(default_factory=set)

    async def wait_connected(self) -> None:
        assert self.connected, "a test waited for a broker it never connects"

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        if not self.connected:
            raise BrokerUnavailable("not connected to RabbitMQ")
        self.published.extend(messages)

    async def declare_queues(self, job_types: Sequence[str]) -> None:
        if not self.connected:
            raise BrokerUnavailable("not connected to RabbitMQ")
        self.queues.update(job_types)

    async def announce_cancellation(self, job_id: uuid.UUID) -> None:
        self.announced.append(job_id)


def stored_job(
    owner: uuid.UUID,
    *,
    status: Status = Status.QUEUED,
    job_type: str = "reverse_string",
    attempts: int = 0,
    max_attempts: int = 3,
    finished_at: datetime | None = None,
) -> Job:
    """A job as the store would hold it, for a test's starting state."""
    final = finished_at or (START if status.final else None)
    return Job(
        id=uuid.uuid4(),
        owner_id=owner,
        type=job_type,
        payload="hello",
        status=status,
        result=None,
        error="boom" if status is Status.FAILED else None,
        attempts=attempts,
        created_at=START,
        updated_at=START,
        started_at=START if attempts else None,
        finished_at=final,
        max_attempts=max_attempts,
    )

"""The job service's rules: what a valid request is, who may see what, how reports are fenced."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import random
import uuid
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from common import db
from common.batching import Coalescer
from common.errors import FieldViolation, InvalidArgument, ServiceError
from common.job_types import JOB_TYPES, PayloadError, parse_payload
from job_svc import metrics
from job_svc.auth import Caller
from job_svc.errors import JobFinished, JobNotFound, NotFailed, NotRunning, StaleAttempt
from job_svc.model import Job, ListQuery, NewJob, Priority, Report, Status
from job_svc.publisher import Publisher, encode_delivery
from job_svc.relay import OutboxRelay
from job_svc.store import JobStore

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_TIMEOUT_SECONDS = 60
MAX_TIMEOUT_SECONDS = 3600
MAX_ATTEMPTS = 10
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: How many dead jobs RerunDeadJobs re-queues per transaction.
RERUN_BATCH = 500
#: Most jobs in one BatchCreateJobs call, and most reports in one UpdateJobs call.
MAX_BATCH = 1000
#: How many group-commit transactions of CreateJob calls may be in flight at once.
CREATE_TRANSACTIONS = 4
#: Largest result a worker may report (F(100000) has 20,899 digits; strings are at most 64 KiB).
MAX_RESULT_CHARS = 1 << 20
#: Largest error message a worker may report.
MAX_ERROR_CHARS = 8192


def parse_id(value: str, field: str = "id") -> uuid.UUID:
    """A UUID from a request field, or INVALID_ARGUMENT naming the field."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument([FieldViolation(field, "must be a UUID")]) from None


def encode_page_token(at: datetime, job_id: uuid.UUID, filters: list[str | None]) -> str:
    """An opaque token for the page after the job at (``at``, ``job_id``), bound to the list's filters."""
    data = [at.isoformat(), str(job_id), *filters]
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def decode_page_token(token: str, filters: list[str | None]) -> tuple[datetime, uuid.UUID]:
    """The cursor in ``token``; INVALID_ARGUMENT if it is garbage or was issued for other filters."""
    bad = InvalidArgument([FieldViolation("page_token", "is not a token this service issued for these filters")])
    try:
        at, job_id, *token_filters = json.loads(base64.urlsafe_b64decode(token.encode()))
        cursor = (datetime.fromisoformat(at), uuid.UUID(job_id))
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        raise bad from None
    if cursor[0].tzinfo is None or token_filters != filters:
        raise bad
    return cursor


def _check_attempts(value: int) -> int:
    """A requested number of attempts (0 meaning the default), or INVALID_ARGUMENT."""
    if not 0 <= value <= MAX_ATTEMPTS:
        raise InvalidArgument(
            [FieldViolation("max_attempts", f"must be between 1 and {MAX_ATTEMPTS} (0 means {DEFAULT_MAX_ATTEMPTS})")]
        )
    return value or DEFAULT_MAX_ATTEMPTS


def _check_listing(page_size: int, job_type: str | None) -> int:
    """The page size to fetch for a listing request, or INVALID_ARGUMENT for its bad fields."""
    violations = []
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        violations.append(FieldViolation("page_size", f"must be between 0 and {MAX_PAGE_SIZE}"))
    if job_type is not None and job_type not in JOB_TYPES:
        violations.append(FieldViolation("type", f"unknown job type {job_type!r}"))
    if violations:
        raise InvalidArgument(violations)
    return page_size or DEFAULT_PAGE_SIZE


@dataclass(frozen=True)
class RetryPolicy:
    """How long a retry waits: ``base * 2**(attempt - 1)`` seconds, at most ``cap``, less up to half as jitter."""

    base: float
    cap: float

    def delay(self, attempt: int) -> float:
        """Seconds before the attempt after ``attempt`` (the first attempt is 1)."""
        ceiling = min(self.cap, self.base * float(2 ** min(attempt - 1, 30)))
        # Jitter spreads out jobs that failed together (say, in one outage).
        return ceiling * random.uniform(0.5, 1.0)


class Jobs:
    """Validates and carries out each JobService call on domain values."""

    def __init__(
        self, store: JobStore, relay: OutboxRelay, publisher: Publisher, retry: RetryPolicy, *, lease_grace: float
    ) -> None:
        self._lease_grace = lease_grace
        self._store = store
        self._relay = relay
        self._publisher = publisher
        self._retry = retry
        # Concurrent CreateJob calls share transactions (group commit): one
        # INSERT of many rows costs the database about what one row does.
        self._creates: Coalescer[NewJob, tuple[Job, bool]] = Coalescer(
            self._store_batch, max_batch=MAX_BATCH, max_concurrent=CREATE_TRANSACTIONS
        )

    async def create(self, job: NewJob) -> Job:
        """Store a new job with its queue message (or return the one its ``request_id`` created)."""
        stored, _ = await self._creates.submit(job)
        return stored

    async def create_batch(self, jobs: Sequence[NewJob]) -> Sequence[Job]:
        """Store up to MAX_BATCH new jobs in one transaction: all of them or, on an error, none."""
        if not 1 <= len(jobs) <= MAX_BATCH:
            raise InvalidArgument([FieldViolation("requests", f"must hold 1 to {MAX_BATCH} jobs")])
        stored = await self._store.create(jobs)
        if any(created for _, created in stored):
            self._relay.wake()
            metrics.created(job for job, created in stored if created)
        return [job for job, _ in stored]

    async def _store_batch(self, jobs: Sequence[NewJob]) -> Sequence[tuple[Job, bool] | BaseException]:
        """The Coalescer's runner: one transaction for the batch, or one each if the database refused it."""
        try:
            stored: Sequence[tuple[Job, bool] | BaseException] = await self._store.create(jobs)
        except asyncpg.PostgresError as error:
            if len(jobs) == 1 or isinstance(error, db.TRANSIENT_ERRORS):
                raise
            # A row the database refuses must not fail the calls it shared a batch with.
            stored = await asyncio.gather(*(self._store_one(job) for job in jobs), return_exceptions=True)
        new = [result[0] for result in stored if not isinstance(result, BaseException) and result[1]]
        if new:
            self._relay.wake()
            metrics.created(new)
        return stored

    async def _store_one(self, job: NewJob) -> tuple[Job, bool]:
        [stored] = await self._store.create([job])
        return stored

    def check_new(
        self,
        owner: uuid.UUID,
        job_type: str,
        payload: Any,
        *,
        priority: Priority = Priority.NORMAL,
        max_attempts: int = 0,
        timeout_seconds: int = 0,
        request_id: uuid.UUID | None = None,
    ) -> NewJob:
        """A new job from a CreateJob request's values, with its queue message; INVALID_ARGUMENT if bad."""
        if job_type not in JOB_TYPES:
            known = ", ".join(sorted(JOB_TYPES))
            raise InvalidArgument(
                [
                    FieldViolation(
                        "type",
                        f"unknown job type {job_type!r}; expected one of: {known}",
                    )
                ]
            )
        if payload is None:
            raise InvalidArgument([FieldViolation("payload", "is required")])
        try:
            parse_payload(job_type, payload)
        except PayloadError as error:
            raise InvalidArgument([FieldViolation("payload", f"{error} for {job_type}")]) from None
        max_attempts = _check_attempts(max_attempts)
        if not 0 <= timeout_seconds <= MAX_TIMEOUT_SECONDS:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "timeout_seconds",
                        f"must be between 1 and {MAX_TIMEOUT_SECONDS} (0 means {DEFAULT_TIMEOUT_SECONDS})",
                    )
                ]
            )
        timeout_seconds = timeout_seconds or DEFAULT_TIMEOUT_SECONDS
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
        )

    async def get(self, owner: uuid.UUID, job_id: uuid.UUID) -> Job:
        """One of the owner's jobs."""
        job = await self._store.get(job_id, owner_id=owner)
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        return job

    async def list(
        self,
        owner: uuid.UUID,
        page_size: int,
        page_token: str,
        status: Status | None,
        job_type: str | None,
    ) -> tuple[list[Job], str]:
        """A page of the owner's jobs, newest first, and the token of the next page ('' if none)."""
        size = _check_listing(page_size, job_type)
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
        if len(jobs) <= size:
            return jobs, ""
        last = jobs[size - 1]
        return jobs[:size], encode_page_token(last.created_at, last.id, filters)

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
        grant = _check_attempts(max_attempts)
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
        size = _check_listing(page_size, job_type)
        filters: list[str | None] = ["dead", job_type]
        after = decode_page_token(page_token, filters) if page_token else None
        jobs = await self._store.list_dead(size + 1, job_type, after)
        if len(jobs) <= size:
            return jobs, ""
        last = jobs[size - 1]
        assert last.finished_at is not None  # FAILED jobs are finished
        return jobs[:size], encode_page_token(last.finished_at, last.id, filters)

    async def rerun_dead(self, job_type: str | None, max_attempts: int) -> int:
        """Queue again every job that was FAILED when the call began (of ``job_type``, if given); how many."""
        if job_type is not None and job_type not in JOB_TYPES:
            raise InvalidArgument([FieldViolation("type", f"unknown job type {job_type!r}")])
        grant = _check_attempts(max_attempts)
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

    async def report(self, report: Report) -> Job:
        """Apply a worker's report, fenced by claim and attempt."""
        [outcome] = await self.report_batch([report])
        if isinstance(outcome, ServiceError):
            raise outcome
        return outcome

    async def report_batch(self, reports: Sequence[Report]) -> Sequence[Job | ServiceError]:
        """Apply workers' reports as if one after another; for each, the job after it or why it was refused.

        Each round applies at most one report per job, all claims in one
        statement and all outcomes in another, so a batch costs a few round
        trips however many reports it holds.
        """
        if not 1 <= len(reports) <= MAX_BATCH:
            raise InvalidArgument([FieldViolation("requests", f"must hold 1 to {MAX_BATCH} reports")])
        outcomes: MutableSequence[Job | ServiceError | None] = [None] * len(reports)
        valid: MutableSequence[int] = []
        for i, report in enumerate(reports):
            try:
                _check_report(report)
            except InvalidArgument as error:
                outcomes[i] = error
            else:
                valid.append(i)
        for round_ in _rounds(valid, [reports[i].job_id for i in valid]):
            await self._apply_round([reports[i] for i in round_], round_, outcomes)
        return [outcome for outcome in outcomes if outcome is not None]

    async def _apply_round(
        self, reports: Sequence[Report], positions: Sequence[int], outcomes: MutableSequence[Job | ServiceError | None]
    ) -> None:
        """Apply reports on distinct jobs, storing each one's outcome at its position."""
        starts = [(r.job_id, r.claim_id) for r in reports if r.status is Status.RUNNING and r.claim_id is not None]
        finishes = [
            dataclasses.replace(r, retry_delay=self._retry.delay(r.attempt) if r.retryable else 0.0)
            for r in reports
            if r.status is not Status.RUNNING
        ]
        started, finished = await asyncio.gather(
            self._store.start(starts, self._lease_grace), self._store.finish(finishes)
        )
        metrics.reported(started, finished)
        applied = {job.id: job for job in (*started, *finished)}
        refused = [r.job_id for r in reports if r.job_id not in applied]
        current = {job.id: job for job in await self._store.get_many(refused)} if refused else {}
        for position, report in zip(positions, reports, strict=True):
            if report.job_id in applied:
                outcomes[position] = applied[report.job_id]
                continue
            try:
                outcomes[position] = self._explain_refusal(report, current.get(report.job_id))
            except ServiceError as error:
                outcomes[position] = error

    @staticmethod
    def _explain_refusal(report: Report, job: Job | None) -> Job:
        """Why the fenced update matched no row: or, for a repeated final report, the job as it is."""
        if job is None:
            raise JobNotFound(f"job {report.job_id} not found")
        if job.status.final:
            if job.status is report.status and job.attempts == report.attempt:
                return job  # the same report again (e.g. after a lost reply): already applied
            raise JobFinished(f"job {report.job_id} is already {job.status.value}")
        if job.status is Status.QUEUED and report.retryable and job.attempts == report.attempt:
            return job  # the same retryable failure again: the retry is already scheduled
        if job.status is Status.QUEUED:
            raise NotRunning(f"job {report.job_id} has not been started")
        raise StaleAttempt(f"attempt {report.attempt} of job {report.job_id} is stale; current is {job.attempts}")


def _rounds(positions: Sequence[int], job_ids: Sequence[uuid.UUID]) -> list[list[int]]:
    """Split positions into rounds in which each job appears once, keeping each job's reports in order."""
    rounds: list[list[int]] = []
    seen: dict[uuid.UUID, int] = {}
    for position, job_id in zip(positions, job_ids, strict=True):
        index = seen.get(job_id, -1) + 1
        seen[job_id] = index
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(position)
    return rounds


def _check_report(report: Report) -> None:
    violations = []
    if report.status is Status.RUNNING:
        if report.claim_id is None:
            violations.append(FieldViolation("claim_id", "is required with JOB_STATUS_RUNNING"))
    elif report.status in (Status.COMPLETED, Status.FAILED):
        if report.retryable and report.status is not Status.FAILED:
            violations.append(FieldViolation("retryable", "is only allowed with JOB_STATUS_FAILED"))
        if report.attempt < 1:
            violations.append(FieldViolation("attempt", "must be the attempt number RUNNING returned"))
        completed = report.status is Status.COMPLETED
        for field, value, wanted, limit in (
            ("result", report.result, completed, MAX_RESULT_CHARS),
            ("error", report.error, not completed, MAX_ERROR_CHARS),
        ):
            if (value is not None) != wanted:
                verb = "is required" if wanted else "is not allowed"
                violations.append(FieldViolation(field, f"{verb} with JOB_STATUS_{report.status.value}"))
            elif value is not None and len(value) > limit:
                violations.append(FieldViolation(field, f"must be at most {limit} characters"))
            elif value is not None and "\x00" in value:
                violations.append(FieldViolation(field, "must not contain NUL characters"))
    else:
        violations.append(FieldViolation("status", "must be RUNNING, COMPLETED or FAILED"))
    if violations:
        raise InvalidArgument(violations)

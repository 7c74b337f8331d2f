"""The job service's rules: what a valid request is, who may see what, how reports are fenced."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.errors import FieldViolation, InvalidArgument
from common.job_types import JOB_TYPES, PayloadError, parse_payload
from job_svc.broker import Publisher, encode_delivery
from job_svc.errors import JobFinished, JobNotFound, NotRunning, StaleAttempt
from job_svc.model import Job, ListQuery, Priority, Report, Status
from job_svc.relay import OutboxRelay
from job_svc.store import JobStore

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_TIMEOUT_SECONDS = 60
MAX_TIMEOUT_SECONDS = 3600
MAX_ATTEMPTS = 10
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
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


def encode_page_token(job: Job, query: ListQuery) -> str:
    """An opaque token for the page after ``job``, bound to the query's filters."""
    data = [job.created_at.isoformat(), str(job.id), query.status, query.type]
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def decode_page_token(token: str, status: Status | None, job_type: str | None) -> tuple[datetime, uuid.UUID]:
    """The cursor in ``token``; INVALID_ARGUMENT if it is garbage or was issued for other filters."""
    bad = InvalidArgument([FieldViolation("page_token", "is not a token this service issued for these filters")])
    try:
        created, job_id, token_status, token_type = json.loads(base64.urlsafe_b64decode(token.encode()))
        cursor = (datetime.fromisoformat(created), uuid.UUID(job_id))
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        raise bad from None
    if cursor[0].tzinfo is None or token_status != status or token_type != job_type:
        raise bad
    return cursor


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


class JobRules:
    """Validates and carries out each JobService call on domain values."""

    def __init__(
        self, store: JobStore, relay: OutboxRelay, publisher: Publisher, retry: RetryPolicy, *, lease_grace: float
    ) -> None:
        self._lease_grace = lease_grace
        self._store = store
        self._relay = relay
        self._publisher = publisher
        self._retry = retry

    async def create(
        self,
        owner: uuid.UUID,
        job_type: str,
        payload: Any,
        *,
        priority: Priority = Priority.NORMAL,
        max_attempts: int = 0,
        timeout_seconds: int = 0,
        request_id: uuid.UUID | None = None,
    ) -> Job:
        """Validate and store a new job with its queue message (or return the one ``request_id`` created)."""
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
        if not 0 <= max_attempts <= MAX_ATTEMPTS:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "max_attempts", f"must be between 1 and {MAX_ATTEMPTS} (0 means {DEFAULT_MAX_ATTEMPTS})"
                    )
                ]
            )
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
        body = encode_delivery(job_id, job_type, payload, timeout_seconds)
        job, created = await self._store.create(
            job_id,
            owner,
            job_type,
            payload,
            body,
            priority=priority,
            max_attempts=max_attempts or DEFAULT_MAX_ATTEMPTS,
            timeout_seconds=timeout_seconds,
            request_id=request_id,
        )
        if created:
            self._relay.wake()
        return job

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
        violations = []
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            violations.append(FieldViolation("page_size", f"must be between 0 and {MAX_PAGE_SIZE}"))
        if job_type is not None and job_type not in JOB_TYPES:
            violations.append(FieldViolation("type", f"unknown job type {job_type!r}"))
        if violations:
            raise InvalidArgument(violations)
        after = decode_page_token(page_token, status, job_type) if page_token else None
        size = page_size or DEFAULT_PAGE_SIZE
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
        return jobs[:size], encode_page_token(jobs[size - 1], query)

    async def cancel(self, owner: uuid.UUID, job_id: uuid.UUID) -> Job:
        """Cancel one of the owner's jobs; a RUNNING one's worker is told to stop."""
        cancelled = await self._store.cancel(job_id, owner)
        if cancelled is None:
            job = await self.get(owner, job_id)  # NOT_FOUND if it is not the owner's
            raise JobFinished(f"job {job_id} is already {job.status.value}")
        job, previous = cancelled
        if previous is Status.RUNNING:
            await self._publisher.announce_cancellation(job_id)
        return job

    async def report(self, report: Report) -> Job:
        """Apply a worker's report, fenced by claim and attempt."""
        _check_report(report)
        if report.status is Status.RUNNING:
            assert report.claim_id is not None  # checked above
            job = await self._store.start(report.job_id, report.claim_id, self._lease_grace)
        else:
            delay = self._retry.delay(report.attempt) if report.retryable else 0.0
            job = await self._store.finish(dataclasses.replace(report, retry_delay=delay))
        if job is not None:
            return job
        return self._explain_refusal(report, await self._store.get(report.job_id))

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

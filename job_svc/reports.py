"""Workers' reports on jobs: checked, fenced by claim and attempt, applied in rounds.

A report moves a job QUEUED -> RUNNING (a claim, carrying a fresh claim_id) or
RUNNING -> COMPLETED / FAILED (an outcome, carrying the attempt the claim
returned). A RUNNING report with progress only notes how far the current
claim has got: it claims nothing, so a stale one changes nothing. The store
applies a report only if it still fits the job (the fence); when one does
not, ``explain_refusal`` says why, or recognizes a repeat of a report already
applied (a worker retrying after a lost reply) and answers it as applied, so
reports are idempotent.

A batch is applied as if its reports came one after another: each round holds
at most one report per job, all its claims go in one statement, all its
progress in another and all its outcomes in a third, so a batch of any size
costs a few round trips. The attempt history (job_attempts) is written by those
same statements, so it costs no round trip and never disagrees with the job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import MutableSequence, Sequence
from typing import Protocol

from job_svc import metrics
from job_svc.errors import JobFinished, JobNotFound, NotRunning, StaleAttempt
from job_svc.model import Job, Progress, Report, Status
from job_svc.rules import MAX_ERROR_CHARS, MAX_PROGRESS_MESSAGE_CHARS, MAX_RESULT_CHARS, worker_id_violation
from jobqueue.runtime.backoff import Backoff
from jobqueue.runtime.errors import FieldViolation, InvalidArgument, ServiceError


class ReportStore(Protocol):
    """The fenced status changes of the jobs table (job_svc.store.JobStore; see its methods for the contract)."""

    async def start(
        self,
        claims: Sequence[tuple[uuid.UUID, uuid.UUID]],
        lease_grace: float,
        worker_ids: Sequence[str] | None = None,
    ) -> Sequence[Job]:
        """Mark each (job id, claim id) RUNNING if QUEUED or RUNNING, recording new attempts; the jobs that were."""

    async def note_progress(self, reports: Sequence[Report]) -> Sequence[Job]:
        """Record each report's progress whose job is RUNNING its claim; those jobs."""

    async def finish(self, reports: Sequence[Report]) -> Sequence[Job]:
        """Record each outcome whose job is RUNNING the reported attempt; those jobs."""

    async def get_many(self, job_ids: Sequence[uuid.UUID]) -> Sequence[Job]:
        """The jobs with these ids that exist, in no particular order."""


class Reports:
    """Applies workers' reports (UpdateJob, UpdateJobs) to the stored jobs."""

    def __init__(self, store: ReportStore, retry: Backoff, *, lease_grace: float) -> None:
        self._store = store
        self._retry = retry
        self._lease_grace = lease_grace

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
        trips however many reports it holds. The servicer checks the batch's
        size (at most MAX_BATCH).
        """
        outcomes: MutableSequence[Job | ServiceError | None] = [None] * len(reports)
        valid: MutableSequence[int] = []
        for i, report in enumerate(reports):
            try:
                check_report(report)
            except InvalidArgument as error:
                outcomes[i] = error
            else:
                valid.append(i)
        for round_ in rounds(valid, [reports[i].job_id for i in valid]):
            await self._apply_round([reports[i] for i in round_], round_, outcomes)
        return [outcome for outcome in outcomes if outcome is not None]

    async def _apply_round(
        self, reports: Sequence[Report], positions: Sequence[int], outcomes: MutableSequence[Job | ServiceError | None]
    ) -> None:
        """Apply reports on distinct jobs, storing each one's outcome at its position."""
        claims = [r for r in reports if r.status is Status.RUNNING and r.claim_id is not None and r.progress is None]
        starts = [(r.job_id, r.claim_id) for r in claims if r.claim_id is not None]
        notes = [r for r in reports if r.status is Status.RUNNING and r.progress is not None]
        finishes = [
            dataclasses.replace(r, retry_delay=self._retry.delay(r.attempt) if r.retryable else 0.0)
            for r in reports
            if r.status is not Status.RUNNING
        ]
        started, noted, finished = await asyncio.gather(
            self._store.start(starts, self._lease_grace, [r.worker_id for r in claims]),
            self._store.note_progress(notes),
            self._store.finish(finishes),
        )
        metrics.reported(started, finished)
        applied = {job.id: job for job in (*started, *noted, *finished)}
        refused = [r.job_id for r in reports if r.job_id not in applied]
        current = {job.id: job for job in await self._store.get_many(refused)} if refused else {}
        for position, report in zip(positions, reports, strict=True):
            if report.job_id in applied:
                outcomes[position] = applied[report.job_id]
                continue
            try:
                outcomes[position] = explain_refusal(report, current.get(report.job_id))
            except ServiceError as error:
                outcomes[position] = error


def rounds(positions: Sequence[int], job_ids: Sequence[uuid.UUID]) -> list[list[int]]:
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


def check_report(report: Report) -> None:
    """Raise InvalidArgument, naming every bad field, unless ``report`` is well-formed for its status."""
    violations = []
    if report.status is Status.RUNNING:
        if report.claim_id is None:
            violations.append(FieldViolation("claim_id", "is required with JOB_STATUS_RUNNING"))
        if report.progress is not None:
            violations.extend(_progress_violations(report.progress))
    elif report.status in (Status.COMPLETED, Status.FAILED):
        violations.extend(_outcome_violations(report))
    else:
        violations.append(FieldViolation("status", "must be RUNNING, COMPLETED or FAILED"))
    if (violation := worker_id_violation(report.worker_id)) is not None:
        violations.append(violation)
    if violations:
        raise InvalidArgument(violations)


def _outcome_violations(report: Report) -> list[FieldViolation]:
    violations = []
    if report.retryable and report.status is not Status.FAILED:
        violations.append(FieldViolation("retryable", "is only allowed with JOB_STATUS_FAILED"))
    if report.attempt < 1:
        violations.append(FieldViolation("attempt", "must be the attempt number RUNNING returned"))
    if report.progress is not None:
        violations.append(FieldViolation("progress", "is only allowed with JOB_STATUS_RUNNING"))
    completed = report.status is Status.COMPLETED
    # The servicer refuses both forms at once, so a report carries at most one; each counts the same.
    result_field, result = (
        ("result", report.result) if report.result_json is None else ("result_value", report.result_json)
    )
    for field, value, wanted, limit in (
        (result_field, result, completed, MAX_RESULT_CHARS),
        ("error", report.error, not completed, MAX_ERROR_CHARS),
    ):
        if (value is not None) != wanted:
            verb = "is required" if wanted else "is not allowed"
            violations.append(FieldViolation(field, f"{verb} with JOB_STATUS_{report.status.value}"))
        elif value is not None and len(value) > limit:
            violations.append(FieldViolation(field, f"must be at most {limit} characters"))
        elif value is not None and "\x00" in value:
            violations.append(FieldViolation(field, "must not contain NUL characters"))
    return violations


def _progress_violations(progress: Progress) -> list[FieldViolation]:
    violations = []
    # Written so that NaN fails it too.
    if not 0.0 <= progress.fraction <= 1.0:
        violations.append(FieldViolation("progress.fraction", "must be a number from 0 to 1"))
    if len(progress.message) > MAX_PROGRESS_MESSAGE_CHARS:
        violations.append(
            FieldViolation("progress.message", f"must be at most {MAX_PROGRESS_MESSAGE_CHARS} characters")
        )
    elif "\x00" in progress.message:
        violations.append(FieldViolation("progress.message", "must not contain NUL characters"))
    return violations


def explain_refusal(report: Report, job: Job | None) -> Job:
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
    if report.status is Status.RUNNING:  # only progress is refused while RUNNING: its claim is not the current one
        raise StaleAttempt(f"claim {report.claim_id} of job {report.job_id} is not its current attempt {job.attempts}")
    raise StaleAttempt(f"attempt {report.attempt} of job {report.job_id} is stale; current is {job.attempts}")

"""Workers' reports: fenced by claim and attempt, idempotent when repeated, applied in rounds, retried with backoff.

Progress reports are fenced by the claim alone, and record without claiming."""

from __future__ import annotations

import random
import uuid

import pytest

from common.backoff import Backoff
from common.errors import InvalidArgument, ServiceError
from job_svc.errors import JobFinished, JobNotFound, NotRunning, StaleAttempt
from job_svc.model import Job, Progress, Report, Status
from job_svc.reports import Reports, rounds
from job_svc.rules import MAX_PROGRESS_MESSAGE_CHARS, MAX_RESULT_CHARS
from tests.support.fake_job_service import FakeStore, stored_job

OWNER = uuid.uuid4()


class Ceiling(random.Random):
    """A generator whose jitter always picks the top of the range, so each delay is Backoff.ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


RETRY = Backoff(1.0, 60.0, rng=Ceiling())


def reports(store: FakeStore) -> Reports:
    return Reports(store, RETRY, lease_grace=5.0)


def claim(job: Job, claim_id: uuid.UUID | None = None) -> Report:
    return Report(job.id, Status.RUNNING, claim_id=claim_id or uuid.uuid4())


def complete(job: Job, attempt: int, result: str = "olleh") -> Report:
    return Report(job.id, Status.COMPLETED, attempt=attempt, result=result)


def note(job: Job, claim_id: uuid.UUID, fraction: float, message: str = "") -> Report:
    return Report(job.id, Status.RUNNING, claim_id=claim_id, progress=Progress(fraction, message))


def fail(job: Job, attempt: int, *, retryable: bool = False) -> Report:
    return Report(job.id, Status.FAILED, attempt=attempt, error="boom", retryable=retryable)


async def test_a_claim_starts_the_job_and_its_outcome_finishes_it() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER))
    started = await reports(store).report(claim(job))
    assert (started.status, started.attempts) == (Status.RUNNING, 1)
    done = await reports(store).report(complete(job, 1))
    assert (done.status, done.result, done.attempts) == (Status.COMPLETED, "olleh", 1)


async def test_repeating_the_current_claim_changes_nothing_and_a_new_claim_is_a_new_attempt() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER))
    first = claim(job)
    assert (await reports(store).report(first)).attempts == 1
    assert (await reports(store).report(first)).attempts == 1
    assert (await reports(store).report(claim(job))).attempts == 2


async def test_an_outcome_for_a_superseded_attempt_is_stale() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER))
    await reports(store).report(claim(job))
    await reports(store).report(claim(job))  # another worker took the job over: attempt 2
    with pytest.raises(StaleAttempt, match=r"attempt 1 of job .* is stale; current is 2"):
        await reports(store).report(complete(job, 1))
    assert (await store.get(job.id) or job).status is Status.RUNNING


async def test_an_outcome_for_a_job_not_started_is_refused() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER))
    with pytest.raises(NotRunning, match="has not been started"):
        await reports(store).report(complete(job, 1))


async def test_a_report_on_a_finished_job_is_refused() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER, status=Status.CANCELLED, attempts=1))
    with pytest.raises(JobFinished, match="is already CANCELLED"):
        await reports(store).report(claim(job))
    with pytest.raises(JobFinished, match="is already CANCELLED"):
        await reports(store).report(complete(job, 1))


async def test_a_different_outcome_for_a_finished_attempt_is_refused() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER))
    await reports(store).report(claim(job))
    await reports(store).report(complete(job, 1))
    with pytest.raises(JobFinished, match="is already COMPLETED"):
        await reports(store).report(fail(job, 1))


async def test_a_repeated_final_report_is_answered_as_applied() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER))
    await reports(store).report(claim(job))
    first = await reports(store).report(complete(job, 1))
    again = await reports(store).report(complete(job, 1))  # the worker lost the reply and retried
    assert again == first
    assert (again.status, again.attempts) == (Status.COMPLETED, 1)


async def test_a_repeated_retryable_failure_is_answered_as_applied() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER))
    await reports(store).report(claim(job))
    first = await reports(store).report(fail(job, 1, retryable=True))
    assert first.status is Status.QUEUED  # attempts left: retried later
    again = await reports(store).report(fail(job, 1, retryable=True))
    assert (again.status, again.attempts, again.run_after) == (Status.QUEUED, 1, first.run_after)


async def test_a_report_on_an_unknown_job_is_not_found() -> None:
    ghost = stored_job(OWNER)
    with pytest.raises(JobNotFound):
        await reports(FakeStore()).report(claim(ghost))


@pytest.mark.parametrize("attempt", [1, 2, 3])
async def test_a_retryable_failure_waits_the_backoff_of_its_attempt(attempt: int) -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER, attempts=attempt - 1, max_attempts=5))
    await reports(store).report(claim(job))
    retried = await reports(store).report(fail(job, attempt, retryable=True))
    [sent] = store.finished
    assert sent.retry_delay == RETRY.ceiling(attempt) == 2.0 ** (attempt - 1)
    assert retried.status is Status.QUEUED
    assert retried.run_after is not None
    assert (retried.run_after - retried.updated_at).total_seconds() == pytest.approx(sent.retry_delay)


async def test_a_permanent_failure_has_no_retry_delay_and_is_final() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER))
    await reports(store).report(claim(job))
    failed = await reports(store).report(fail(job, 1))
    assert [r.retry_delay for r in store.finished] == [0.0]
    assert (failed.status, failed.run_after) == (Status.FAILED, None)
    assert failed.finished_at is not None


async def test_a_retryable_failure_of_the_last_attempt_is_final() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER, attempts=2, max_attempts=3))
    await reports(store).report(claim(job))
    failed = await reports(store).report(fail(job, 3, retryable=True))
    assert (failed.status, failed.attempts) == (Status.FAILED, 3)


async def test_progress_under_the_current_claim_is_recorded_and_counts_no_attempt() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER))
    started = await reports(store).report(claim(job))
    claim_id = store.rows[job.id].claim_id
    assert claim_id is not None
    noted = await reports(store).report(note(job, claim_id, 0.25, "a quarter"))
    assert (noted.status, noted.attempts, noted.started_at) == (Status.RUNNING, 1, started.started_at)
    assert noted.progress == Progress(0.25, "a quarter", noted.updated_at)
    again = await reports(store).report(note(job, claim_id, 0.5))
    assert (again.attempts, again.progress) == (1, Progress(0.5, "", again.updated_at))
    assert again.updated_at > noted.updated_at


async def test_progress_of_a_claim_that_is_not_current_is_refused_and_changes_nothing() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER))
    old, new = claim(job), claim(job)
    assert old.claim_id is not None
    with pytest.raises(NotRunning):
        await reports(store).report(note(job, old.claim_id, 0.1))
    await reports(store).report(old)
    await reports(store).report(note(job, old.claim_id, 0.3, "old"))
    await reports(store).report(new)  # the job is taken over: a new attempt, its progress cleared
    before = store.rows[job.id].job
    assert (before.attempts, before.progress) == (2, None)
    with pytest.raises(StaleAttempt, match="not its current attempt 2"):
        await reports(store).report(note(job, old.claim_id, 0.9, "stale"))
    assert store.rows[job.id].job == before
    await reports(store).report(complete(job, 2))
    with pytest.raises(JobFinished):
        await reports(store).report(note(job, new.claim_id or uuid.uuid4(), 1.0))


async def test_progress_stays_as_it_was_left_when_the_job_finishes() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER))
    running = claim(job)
    assert running.claim_id is not None
    outcomes = await reports(store).report_batch(
        [running, note(job, running.claim_id, 0.75, "almost"), complete(job, 1)]
    )
    assert [o.status for o in outcomes if isinstance(o, Job)] == [Status.RUNNING] * 2 + [Status.COMPLETED]
    done = outcomes[-1]
    assert isinstance(done, Job)
    assert done.progress is not None
    assert (done.progress.fraction, done.progress.message) == (0.75, "almost")


async def test_a_json_result_is_stored_as_its_text() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER))
    await reports(store).report(claim(job))
    done = await reports(store).report(Report(job.id, Status.COMPLETED, attempt=1, result_json='{"n":1}'))
    assert (done.result, done.result_json) == (None, '{"n":1}')


def test_rounds_hold_each_job_once_and_keep_each_jobs_reports_in_order() -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert rounds([0, 1, 2, 3, 4, 5], [a, b, a, a, c, b]) == [[0, 1, 4], [2, 5], [3]]
    assert rounds([3, 7], [a, b]) == [[3, 7]]
    assert rounds([], []) == []


async def test_several_reports_for_one_job_in_one_batch_apply_in_order() -> None:
    store = FakeStore()
    job, other = store.add(stored_job(OWNER)), store.add(stored_job(OWNER))
    first_claim, second_claim = claim(job), claim(job)
    outcomes = await reports(store).report_batch(
        [first_claim, claim(other), complete(job, 1), second_claim, complete(job, 1)]
    )
    started, other_started, completed, superseded, repeated = outcomes
    assert isinstance(started, Job)
    assert (started.status, started.attempts) == (Status.RUNNING, 1)
    assert isinstance(other_started, Job)
    assert other_started.status is Status.RUNNING
    assert isinstance(completed, Job)
    assert completed.status is Status.COMPLETED
    # After the completion, a claim finds the job finished, and the same completion again is a repeat.
    assert isinstance(superseded, JobFinished)
    assert isinstance(repeated, Job)
    assert repeated.status is Status.COMPLETED


async def test_an_invalid_report_is_answered_alone_and_the_others_apply() -> None:
    store = FakeStore()
    job = store.add(stored_job(OWNER))
    no_claim = Report(job.id, Status.RUNNING)
    bad_outcome = Report(job.id, Status.COMPLETED, attempt=1, result="x", error="y")
    outcomes = await reports(store).report_batch([no_claim, claim(job), bad_outcome, complete(job, 1)])
    refused, started, bad, done = outcomes
    assert isinstance(refused, InvalidArgument)
    assert [v.field for v in refused.violations] == ["claim_id"]
    assert isinstance(bad, InvalidArgument)
    assert [v.field for v in bad.violations] == ["error"]
    assert isinstance(started, Job)
    assert started.status is Status.RUNNING
    assert isinstance(done, Job)
    assert done.status is Status.COMPLETED


@pytest.mark.parametrize(
    ("report", "fields"),
    [
        (Report(uuid.uuid4(), Status.QUEUED), ["status"]),
        (Report(uuid.uuid4(), Status.COMPLETED, attempt=0, result="x"), ["attempt"]),
        (Report(uuid.uuid4(), Status.COMPLETED, attempt=1), ["result"]),
        (Report(uuid.uuid4(), Status.COMPLETED, attempt=1, result="x", retryable=True), ["retryable"]),
        (Report(uuid.uuid4(), Status.FAILED, attempt=1), ["error"]),
        (Report(uuid.uuid4(), Status.FAILED, attempt=1, error="a\x00b"), ["error"]),
        (Report(uuid.uuid4(), Status.COMPLETED, attempt=1, result="x" * (MAX_RESULT_CHARS + 1)), ["result"]),
        (Report(uuid.uuid4(), Status.COMPLETED, attempt=1, result_json="1" * (MAX_RESULT_CHARS + 1)), ["result_value"]),
        (Report(uuid.uuid4(), Status.FAILED, attempt=1, error="e", result_json="1"), ["result_value"]),
        (Report(uuid.uuid4(), Status.COMPLETED, attempt=1, result="x", progress=Progress(1.0)), ["progress"]),
        *(
            (
                Report(uuid.uuid4(), Status.RUNNING, claim_id=uuid.uuid4(), progress=Progress(fraction)),
                ["progress.fraction"],
            )
            for fraction in (-0.1, 1.01, float("nan"), float("inf"))
        ),
        (
            Report(uuid.uuid4(), Status.RUNNING, progress=Progress(0.5, "x" * (MAX_PROGRESS_MESSAGE_CHARS + 1))),
            ["claim_id", "progress.message"],
        ),
        (
            Report(uuid.uuid4(), Status.RUNNING, claim_id=uuid.uuid4(), progress=Progress(0.5, "a\x00b")),
            ["progress.message"],
        ),
    ],
)
async def test_malformed_reports_name_their_fields(report: Report, fields: list[str]) -> None:
    [outcome] = await reports(FakeStore()).report_batch([report])
    assert isinstance(outcome, ServiceError)
    assert isinstance(outcome, InvalidArgument)
    assert [v.field for v in outcome.violations] == fields

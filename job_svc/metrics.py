"""The job service's own Prometheus metrics (its gRPC calls are counted by common.metrics)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter

from job_svc.model import Job, Status

JOBS_CREATED = Counter("jobqueue_jobs_created_total", "Jobs stored by CreateJob or BatchCreateJobs.", ["type"])
ATTEMPTS_STARTED = Counter("jobqueue_attempts_started_total", "Attempts a worker claimed (job now RUNNING).", ["type"])
OUTCOMES = Counter(
    "jobqueue_job_outcomes_total",
    "What workers and owners made of jobs: completed, failed (for good), retry_scheduled (a failed attempt "
    "with attempts left), cancelled. Jobs taken back from silent workers: jobqueue_leases_expired_total.",
    ["type", "outcome"],
)
PUBLISHED = Counter("jobqueue_outbox_published_total", "Job messages the relay published to RabbitMQ, confirmed.")
LEASES_EXPIRED = Counter(
    "jobqueue_leases_expired_total", "RUNNING jobs taken back because their worker sent no report in time."
)

_OUTCOME_OF = {Status.COMPLETED: "completed", Status.FAILED: "failed", Status.QUEUED: "retry_scheduled"}


def created(jobs: Iterable[Job]) -> None:
    """Count newly stored jobs (not the ones a repeated request_id returned)."""
    for job in jobs:
        JOBS_CREATED.labels(job.type).inc()


def reported(started: Iterable[Job], finished: Iterable[Job]) -> None:
    """Count the claims and the outcomes of one round of applied worker reports."""
    for job in started:
        ATTEMPTS_STARTED.labels(job.type).inc()
    for job in finished:
        OUTCOMES.labels(job.type, _OUTCOME_OF.get(job.status, job.status.value.lower())).inc()


def cancelled(job: Job) -> None:
    """Count a job its owner cancelled."""
    OUTCOMES.labels(job.type, "cancelled").inc()

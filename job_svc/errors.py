"""Errors the job service returns to callers; jobqueue.runtime.errors maps each category to a gRPC status."""

from __future__ import annotations

from jobqueue.runtime.errors import (
    Aborted,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)


class MissingCredentials(Unauthenticated):
    """Raised when a call has no `authorization: Bearer <token>` metadata."""

    reason = "MISSING_CREDENTIALS"


class InvalidToken(Unauthenticated):
    """Raised when the bearer token is malformed, forged, or for another issuer or audience."""

    reason = "INVALID_TOKEN"


class ExpiredToken(Unauthenticated):
    """Raised when the bearer token was valid once but has expired; log in again."""

    reason = "TOKEN_EXPIRED"


class CertificateRequired(Unauthenticated):
    """Raised when a worker's call comes without a client certificate the service verified (TLS_CLIENT_CA_FILE)."""

    reason = "CLIENT_CERTIFICATE_REQUIRED"


class WorkersOnly(PermissionDenied):
    """Raised when a user's token calls a workers' method (UpdateJob, UpdateJobs, DeclareJobTypes)."""

    reason = "WORKERS_ONLY"


class UsersOnly(PermissionDenied):
    """Raised when the worker token calls a user's method (the worker owns no jobs)."""

    reason = "USERS_ONLY"


class OperatorsOnly(PermissionDenied):
    """Raised when a user without the operator role calls an operators' method."""

    reason = "OPERATORS_ONLY"


class JobNotFound(NotFound):
    """Raised when no job has the id, or it belongs to another user (the two are indistinguishable)."""

    reason = "JOB_NOT_FOUND"


class JobFinished(FailedPrecondition):
    """Raised when a report or a cancellation concerns a job that already reached a final status."""

    reason = "JOB_FINISHED"


class StaleAttempt(FailedPrecondition):
    """Raised when a report names an attempt that is no longer the job's current one."""

    reason = "STALE_ATTEMPT"


class NotFailed(FailedPrecondition):
    """Raised when a re-run names a job that is not FAILED."""

    reason = "JOB_NOT_FAILED"


class TypeConflict(FailedPrecondition):
    """Raised when a worker declares a job type's stored version with a different schema, summary or defaults."""

    reason = "JOB_TYPE_CONFLICT"


class PayloadUncheckable(FailedPrecondition):
    """Raised when a job type's stored schema cannot check a payload (a reference that does not resolve)."""

    reason = "PAYLOAD_SCHEMA_UNRESOLVABLE"


class NotRunning(FailedPrecondition):
    """Raised when a final report arrives for a job no worker has started."""

    reason = "NOT_RUNNING"


class TooManyJobs(ResourceExhausted):
    """Raised when a user submits jobs faster than JOBS_PER_SECOND_PER_USER allows; RetryInfo says when to retry."""

    reason = "TOO_MANY_JOBS"


class TooManyHighPriorityJobs(ResourceExhausted):
    """Raised when a user submits HIGH priority jobs faster than HIGH_PRIORITY_JOBS_PER_SECOND_PER_USER allows."""

    reason = "TOO_MANY_HIGH_PRIORITY_JOBS"


class TooManyUnfinishedJobs(ResourceExhausted):
    """Raised when storing a job would give its owner more than MAX_UNFINISHED_JOBS_PER_USER QUEUED or RUNNING."""

    reason = "TOO_MANY_UNFINISHED_JOBS"


class TooManyWatches(ResourceExhausted):
    """Raised when a watch would pass MAX_WATCHES_PER_USER open for its user, or MAX_WATCHES in the process."""

    reason = "TOO_MANY_WATCHES"


class WatchFellBehind(Aborted):
    """Raised when a WatchJobs reader leaves more changed jobs unread than its buffer holds; watch and list again."""

    reason = "WATCH_FELL_BEHIND"


class WatchInterrupted(Unavailable):
    """Raised when a watch's feed of changes broke (database connection lost) or the service is stopping."""

    reason = "WATCH_INTERRUPTED"


class StatsTooCostly(ResourceExhausted):
    """Raised when GetQueueStats' counts take longer than the store allows (job_svc/store.py STATS_TIMEOUT_MS)."""

    reason = "QUEUE_STATS_TOO_COSTLY"


class BrokerUnavailable(Unavailable):
    """Raised inside the relay when RabbitMQ cannot take messages right now; the outbox keeps them."""

    reason = "BROKER_UNAVAILABLE"

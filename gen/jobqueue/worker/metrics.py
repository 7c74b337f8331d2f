"""The worker's own Prometheus metrics (served on METRICS_PORT; see jobqueue.runtime.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

JOBS = Counter(
    "jobqueue_worker_jobs_total",
    "Deliveries this worker finished with, by job type and outcome: completed, superseded (ran, but "
    "another attempt or a cancellation had settled the job), failed (the handler failed), timed_out, "
    "cancelled (stopped by its owner), not_ours (already finished or cancelled, so not run here).",
    ["type", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "jobqueue_worker_handler_seconds",
    "Time a handler ran, by job type (inline or in a handler process, not counting the wait for a free one).",
    ["type"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0),
)
MALFORMED = Counter("jobqueue_worker_malformed_messages_total", "Undecodable messages dead-lettered.")
FORGED = Counter(
    "jobqueue_worker_forged_messages_total",
    "Messages not signed by the job service (gen/jobqueue/runtime/signing.py), by kind (job: dead-lettered; control: "
    "ignored) and reason (unsigned, bad_signature).",
    ["kind", "reason"],
)
STALE_COPIES = Counter(
    "jobqueue_worker_stale_copies_dropped_total",
    "Messages dropped unclaimed because their channel closed while they waited (the broker redelivered them).",
)

"""The job service's own Prometheus metrics (its gRPC calls are counted by jobqueue.runtime.metrics).

Counters count what this process did, from its start: a restart sets them back
to zero, and each replica counts its own share (sum them; use rate()). Gauges
say how things are, database-wide and broker-wide: see Gauges below.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import asyncpg
from prometheus_client import Counter, Gauge

from common import db
from job_svc.errors import BrokerUnavailable
from job_svc.model import Job, Status
from job_svc.publisher import QueueStats

log = logging.getLogger(__name__)

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

WATCHES = Gauge("jobqueue_watches_open", "WatchJob and WatchJobs streams open on this process.")
WATCH_CHANGES = Counter(
    "jobqueue_watch_changes_total", "Job changes announced to this process while it had watchers (LISTEN/NOTIFY)."
)
WATCHES_FELL_BEHIND = Counter(
    "jobqueue_watches_fell_behind_total", "WatchJobs streams ended ABORTED because their reader fell too far behind."
)
#: Gauges: what is true now, read from the database and the broker, so a restart or a second replica
#: does not change them (every replica reports the same values: aggregate them with max(), not sum()).
JOBS = Gauge(
    "jobqueue_jobs",
    "Jobs in each status, database-wide; the same on every replica. QUEUED, RUNNING and FAILED are "
    "refreshed every JOB_COUNT_SECONDS, COMPLETED and CANCELLED every FINISHED_COUNT_SECONDS.",
    ["status"],
)
QUEUE_READY = Gauge(
    "jobqueue_queue_messages_ready",
    "Messages waiting in a RabbitMQ queue for a consumer (each job type's queue, and the dead letters' <queue>.dead).",
    ["queue"],
)
QUEUE_CONSUMERS = Gauge(
    "jobqueue_queue_consumers", "Consumers of a RabbitMQ queue (workers, on a job type's queue).", ["queue"]
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


#: The database could not, or would not, count: the gauges go empty until the next round.
_COUNT_ERRORS: tuple[type[BaseException], ...] = (*db.TRANSIENT_ERRORS, asyncpg.PostgresError)
#: What count_by_status(finished=False) counts; COMPLETED and CANCELLED change only with a full count.
_OFTEN = (Status.QUEUED, Status.RUNNING, Status.FAILED)


class JobCounts(Protocol):
    """The store's count of jobs by status (JobStore)."""

    async def count_by_status(self, *, finished: bool) -> Mapping[Status, int]:
        """How many jobs are in each status; only QUEUED, RUNNING and FAILED unless ``finished``."""
        ...


class QueueCounts(Protocol):
    """The broker's counts of the job service's queues (Publisher)."""

    async def queue_stats(self, job_types: Iterable[str]) -> Sequence[QueueStats]:
        """Ready messages and consumers of each type's queue and of the dead letters'; BrokerUnavailable if unknown."""
        ...


class Gauges:
    """Keeps the gauges above current: one cheap round every ``every`` seconds, in the background.

    Each round counts QUEUED, RUNNING and FAILED jobs from indexes and asks the
    broker for its queues' counts; COMPLETED and CANCELLED need a scan of the
    whole jobs table, so they are counted in the first round and then once every
    ``finished_every`` seconds. Nothing is counted per request or per scrape.
    While the database or the broker cannot answer, its gauges are removed rather
    than left showing old numbers.
    """

    def __init__(
        self,
        store: JobCounts,
        queues: QueueCounts,
        job_types: Callable[[], Iterable[str]],
        *,
        every: float,
        finished_every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._queues = queues
        self._job_types = job_types
        self._every = every
        self._finished_every = finished_every
        self._clock = clock
        #: When the last count of every status was taken; None: the next round takes one.
        self._counted_all_at: float | None = None
        self._failing: set[str] = set()
        #: The queues whose gauges the last round set.
        self._queue_names: set[str] = set()

    async def run(self) -> None:
        """Refresh the gauges until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self._every)

    async def refresh(self) -> None:
        """One round: the jobs by status, then the queues."""
        await self._count_jobs()
        await self._count_messages()

    async def _count_jobs(self) -> None:
        now = self._clock()
        every_status = self._counted_all_at is None or now - self._counted_all_at >= self._finished_every
        try:
            counts = await self._store.count_by_status(finished=every_status)
        except _COUNT_ERRORS as error:
            # A database that refuses the count (a statement_timeout shorter than the whole-table
            # count, say) leaves the gauges empty: it must not stop a service that still takes jobs.
            JOBS.clear()
            self._counted_all_at = None  # the cleared COMPLETED and CANCELLED come back with the next count
            self._failed("database", error)
            return
        self._recovered("database")
        for status in Status if every_status else _OFTEN:
            JOBS.labels(status.value).set(counts.get(status, 0))
        if every_status:
            self._counted_all_at = now

    async def _count_messages(self) -> None:
        try:
            queues = await self._queues.queue_stats(self._job_types())
        except BrokerUnavailable as error:
            QUEUE_READY.clear()
            QUEUE_CONSUMERS.clear()
            self._queue_names = set()
            self._failed("rabbitmq", error)
            return
        self._recovered("rabbitmq")
        for queue in queues:
            QUEUE_READY.labels(queue.queue).set(queue.ready)
            QUEUE_CONSUMERS.labels(queue.queue).set(queue.consumers)
        # A queue counted before but not now (its type is gone) takes its gauges along.
        for gone in self._queue_names - {queue.queue for queue in queues}:
            QUEUE_READY.remove(gone)
            QUEUE_CONSUMERS.remove(gone)
        self._queue_names = {queue.queue for queue in queues}

    def _failed(self, source: str, error: BaseException) -> None:
        # Once per outage: health and the relay already report it at length.
        if source not in self._failing:
            self._failing.add(source)
            log.warning("gauges not refreshed", extra={"source": source, "error": repr(error)})

    def _recovered(self, source: str) -> None:
        if source in self._failing:
            self._failing.discard(source)
            log.info("gauges refreshed again", extra={"source": source})

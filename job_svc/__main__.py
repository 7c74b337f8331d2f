"""Run the job service: ``python -m job_svc`` (``--help`` lists its settings; exit codes: jobqueue.runtime.service).

Wiring only: settings -> secrets, TLS certificates -> database, job types (read from it
in the background), publisher, outbox relay -> gRPC server (and the workers' mutual-TLS port);
on SIGTERM/SIGINT: NOT_SERVING, in-flight calls finish, the relay publishes what it
can for up to 5 s, then everything closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

import aio_pika
import asyncpg

from common import db
from job_svc import metrics as job_metrics
from job_svc.auth import Authenticator
from job_svc.jobs import Jobs
from job_svc.publisher import Publisher
from job_svc.relay import OutboxRelay
from job_svc.reports import Reports
from job_svc.servicer import JobServicer
from job_svc.settings import Settings
from job_svc.store import JobStore
from job_svc.type_store import TypeStore
from job_svc.types import JobTypeRegistry
from job_svc.watch import WatchHub
from job_svc.watch_store import ChangeFeed
from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from jobqueue.runtime import metrics, rabbitmq, service, tracing
from jobqueue.runtime.backoff import Backoff
from jobqueue.runtime.health import HealthMonitor, HealthServicer
from jobqueue.runtime.server import build_server, listen
from jobqueue.runtime.signing import Signer

log = logging.getLogger("job_svc")
SERVICE_NAME = jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
#: On stop, how long the relay may go on publishing what is left in the outbox.
DRAIN_SECONDS = 5


async def serve(settings: Settings, supervisor: service.Supervisor) -> None:
    """Serve until a stop is requested, then stop gracefully."""
    credentials = settings.server_credentials()
    worker_credentials = settings.worker_credentials() if settings.worker_certificates else None
    authenticator = Authenticator(
        keys=settings.public_keys,
        worker_tokens=settings.worker_tokens,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_seconds=settings.jwt_leeway_seconds,
        worker_certificates=settings.worker_certificates,
    )
    pool = await db.create_pool(settings.database_url, max_size=settings.db_pool_size)
    # Read from the database by its task below: the service starts (NOT_SERVING) while the database is down.
    types = JobTypeRegistry(TypeStore(pool))
    publisher = Publisher(
        settings.rabbitmq_url,
        rabbitmq.Topology(settings.rabbitmq_queue),
        Signer(authenticator.worker_tokens),
        types.names,
    )
    metrics_server = None
    try:
        store = JobStore(pool)
        relay = OutboxRelay(
            store,
            publisher,
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
        )
        health_servicer, monitor = _health(pool, publisher)
        jobs = Jobs(store, relay, publisher, types, settings.job_limits())
        reports = Reports(
            store,
            Backoff(settings.retry_base_seconds, settings.retry_max_seconds),
            lease_grace=settings.lease_grace_seconds,
        )
        watches = WatchHub(
            ChangeFeed(settings.database_url),
            store,
            max_per_user=settings.max_watches_per_user,
            max_total=settings.max_watches,
            max_pending=settings.max_watch_backlog,
        )
        server, port = build_server(
            host=settings.job_host,
            port=settings.job_port,
            service_names=[SERVICE_NAME],
            register=lambda s: jobs_pb2_grpc.add_JobServiceServicer_to_server(
                JobServicer(jobs, reports, authenticator, watches), s
            ),
            health_servicer=health_servicer,
            transient=(*db.TRANSIENT_ERRORS, aio_pika.exceptions.AMQPConnectionError),
            max_connection_age=settings.max_connection_age_seconds,
            credentials=credentials,
            own_streams=[f"/{SERVICE_NAME}/WatchJob", f"/{SERVICE_NAME}/WatchJobs"],
            own_stream_budget=settings.max_watches,
        )
        worker_port = None
        if worker_credentials is not None:
            # The same servicers on a second port that requires a client certificate: only calls made
            # through it carry one, which UpdateJob and UpdateJobs then require.
            worker_port = listen(server, settings.job_host, settings.job_worker_port, worker_credentials)
        metrics_server = metrics.serve(settings.job_host, settings.metrics_port)
        await server.start()
        # The background tasks' statements serve no one call: with tracing on, each would be a trace
        # of its own, several a second. The relay's publish spans join the jobs' traces regardless.
        with tracing.untraced():
            supervisor.spawn(publisher.run(), name="publisher")
            supervisor.spawn(types.run(), name="job types")
            supervisor.spawn(watches.run(), name="watches")
            # Give the broker a moment before the first health probe, so a normal start
            # does not log RabbitMQ as unreachable.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(publisher.wait_connected(), 2)
            relaying = supervisor.spawn(relay.run(), name="relay")
            if metrics_server is not None:
                gauges = job_metrics.Gauges(
                    store,
                    publisher,
                    types.names,
                    every=settings.job_count_seconds,
                    finished_every=settings.finished_count_seconds,
                )
                supervisor.spawn(gauges.run(), name="gauges")
            supervisor.spawn(monitor.run(), name="health")
        log.info(
            "job service listening",
            extra={
                "port": port,
                "tls": settings.tls,
                "worker_port": worker_port,
                "queue": settings.rabbitmq_queue,
            },
        )
        await supervisor.wait_for_stop()

        log.info("stopping: finishing in-flight calls")
        await monitor.shutdown()
        # Watches last as long as their readers like: end them now (their clients watch again through
        # another replica) rather than let them hold the grace period that in-flight calls need.
        await watches.close()
        await server.stop(settings.shutdown_grace_seconds)
        # Jobs accepted during the grace period are in the outbox; publish what we
        # can now, and any other relay (or this one after a restart) gets the rest.
        await supervisor.cancel(relaying)
        try:
            await asyncio.wait_for(relay.drain(), DRAIN_SECONDS)
        except Exception as error:  # noqa: BLE001 - what is left stays in the outbox for the next relay
            log.warning("outbox not drained on stop", extra={"error": repr(error)})
    finally:
        # The publisher's connection loop (and the health monitor) before the connections they use.
        await supervisor.cancel()
        await publisher.close()
        await pool.close()
        metrics.stop(metrics_server)
    log.info("job service stopped")


def _health(pool: asyncpg.Pool, publisher: Publisher) -> tuple[HealthServicer, HealthMonitor]:
    """The health service and the monitor that keeps it current."""
    health_servicer = HealthServicer()
    monitor = HealthMonitor(
        health_servicer,
        [SERVICE_NAME],
        {"postgres": lambda: db.ping(pool), "rabbitmq": publisher.probe},
        # Jobs are accepted into the outbox while the broker is down, so only
        # the database decides whether this service is ready.
        required=["postgres"],
    )
    return health_servicer, monitor


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return service.run(
        "job_svc",
        Settings,
        serve,
        description="The job service (jobqueue.jobs.v1.JobService): jobs in PostgreSQL, published to RabbitMQ.",
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())

"""Run the job service: ``python -m job_svc`` (``--help`` lists its settings)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

import aio_pika
import uvloop

from common import db, logs, metrics, rabbitmq
from common import secrets as dev_secrets
from common.backoff import Backoff
from common.health import HealthMonitor, HealthServicer
from common.job_types import JobTypes
from common.server import build_server, stop_signal
from common.settings import SettingsError, describe, load
from job_svc.auth import Authenticator
from job_svc.jobs import Jobs
from job_svc.publisher import Publisher
from job_svc.relay import OutboxRelay
from job_svc.reports import Reports
from job_svc.servicer import JobServicer
from job_svc.settings import Settings
from job_svc.store import JobStore
from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc

log = logging.getLogger("job_svc")
SERVICE_NAME = jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name


def _authenticator(settings: Settings) -> Authenticator:
    common = {"app_env": settings.app_env, "dev_dir": settings.dev_secrets_dir}
    return Authenticator(
        public_key_pem=dev_secrets.resolve(
            inline=settings.jwt_public_key,
            file=settings.jwt_public_key_file,
            dev_name=dev_secrets.PUBLIC_KEY,
            variable="JWT_PUBLIC_KEY",
            **common,
        ),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        worker_token=dev_secrets.resolve(
            inline=settings.worker_token,
            file=settings.worker_token_file,
            dev_name=dev_secrets.WORKER_TOKEN,
            variable="WORKER_TOKEN",
            **common,
        ),
    )


async def serve(settings: Settings, types: JobTypes) -> None:
    """Serve until SIGTERM/SIGINT, then stop gracefully."""
    stop = stop_signal()
    authenticator = _authenticator(settings)
    pool = await db.create_pool(settings.database_url, max_size=settings.db_pool_size)
    store = JobStore(pool)
    publisher = Publisher(settings.rabbitmq_url, rabbitmq.Topology(settings.rabbitmq_queue))
    relay = OutboxRelay(
        store,
        publisher,
        batch_size=settings.outbox_batch_size,
        poll_seconds=settings.outbox_poll_seconds,
    )
    health_servicer = HealthServicer()

    async def broker_probe() -> None:
        if not publisher.connected:
            raise ConnectionError("not connected to RabbitMQ")

    monitor = HealthMonitor(
        health_servicer,
        [SERVICE_NAME],
        {"postgres": lambda: db.ping(pool), "rabbitmq": broker_probe},
        # Jobs are accepted into the outbox while the broker is down, so only
        # the database decides whether this service is ready.
        required=["postgres"],
    )
    retry = Backoff(settings.retry_base_seconds, settings.retry_max_seconds)
    jobs = Jobs(store, relay, publisher, types)
    reports = Reports(store, retry, lease_grace=settings.lease_grace_seconds)
    server, port = build_server(
        host=settings.job_host,
        port=settings.job_port,
        service_names=[SERVICE_NAME],
        register=lambda s: jobs_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(jobs, reports, authenticator), s),
        health_servicer=health_servicer,
        transient=(*db.TRANSIENT_ERRORS, aio_pika.exceptions.AMQPConnectionError),
    )
    metrics_server = metrics.serve(settings.job_host, settings.metrics_port)
    await server.start()
    publisher_task = asyncio.create_task(publisher.run())
    # Give the broker a moment before the first health probe, so a normal start
    # does not log RabbitMQ as unreachable.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(publisher.wait_connected(), 2)
    tasks = [publisher_task, *(asyncio.create_task(t) for t in (relay.run(), monitor.run()))]
    log.info(
        "job service listening",
        extra={"port": port, "queue": settings.rabbitmq_queue, "job_type_modules": list(settings.modules())},
    )
    await stop.wait()

    log.info("stopping: finishing in-flight calls")
    await monitor.shutdown()
    await server.stop(settings.shutdown_grace_seconds)
    # Jobs accepted during the grace period are in the outbox; publish what we
    # can now, and any other relay (or this one after a restart) gets the rest.
    relay_task = tasks[1]
    relay_task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(relay.drain(), 5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await publisher.close()
    await pool.close()
    metrics.stop(metrics_server)
    log.info("job service stopped")


def main() -> int:
    """Entry point: exit status 0 after a graceful stop, 2 for a configuration error, 1 if it cannot listen."""
    if "--help" in sys.argv[1:]:
        print(f"python -m job_svc: the job service.\n\nEnvironment:\n{describe(Settings)}")
        return 0
    try:
        settings = load(Settings)
        # Before anything connects: a module that cannot be loaded stops the service here, with its name.
        types = JobTypes.load(settings.modules())
    except SettingsError as error:
        print(f"job_svc: {error}", file=sys.stderr)
        return 2
    logs.setup("job_svc", settings.log_level)
    try:
        uvloop.run(serve(settings, types))
    except SettingsError as error:
        log.error("configuration error", extra={"error": str(error)})
        return 2
    except OSError as error:  # a port to listen on is taken or invalid
        log.error("cannot start", extra={"error": str(error)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

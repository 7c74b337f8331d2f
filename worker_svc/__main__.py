"""Run the worker: ``python -m worker_svc`` (``--help`` lists its settings; exit codes: jobqueue.runtime.service).

Wiring only: settings -> worker token -> job types from JOB_TYPE_MODULES -> TLS files -> reports -> process pool ->
health server -> consumer; on SIGTERM/SIGINT: NOT_SERVING, stop consuming, finish or hand back
in-flight jobs, exit 0. It starts even while RabbitMQ or the job service is
down, reporting NOT_SERVING and retrying until they are back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from jobqueue.runtime import metrics, secrets, service
from jobqueue.runtime.health import NOT_SERVING, HealthMonitor, HealthServicer
from jobqueue.runtime.rabbitmq import Topology
from jobqueue.runtime.server import build_server
from jobqueue.runtime.signing import Verifier
from jobqueue.worker.consumer import QueueConsumer
from jobqueue.worker.delivery import DeliveryHandler
from jobqueue.worker.reports import ReportClient, open_channel
from jobqueue.worker.runner import Runner
from jobqueue.worker.settings import Settings
from worker_svc.handlers import load_job_types

log = logging.getLogger("worker_svc")

DESCRIPTION = """\
Consumes the job queue, runs each job and reports every state change to the
job service (UpdateJob). Serves grpc.health.v1 and reflection on
WORKER_HEALTH_HOST:WORKER_HEALTH_PORT; health is SERVING only while both
RabbitMQ and the job service are reachable (statuses "rabbitmq" and
"job_service" tell which is not)."""


async def serve(settings: Settings, supervisor: service.Supervisor) -> None:
    """Run until a stop is requested, then stop gracefully."""
    token = settings.token()
    # Before anything connects: a module that cannot be loaded stops the worker here, not at its first job.
    types = load_job_types(settings.modules())
    credentials = settings.server_credentials()
    job_service_credentials = settings.job_service_credentials()
    channel = open_channel(
        settings.job_service_addr, job_service_credentials, server_name=settings.job_service_tls_name
    )
    reports = ReportClient(channel, token, timeout=settings.report_timeout_seconds)
    runner = Runner(types, settings.handler_processes)
    metrics_server = None
    try:
        # Every worker token this worker holds: during a rotation its file lists the old and the new.
        handler = DeliveryHandler(reports, runner, Verifier(secrets.worker_tokens(settings)))
        consumer = QueueConsumer(
            settings.rabbitmq_url,
            Topology(settings.rabbitmq_queue),
            handler.handle,
            prefetch=settings.prefetch_count,
            on_control=handler.handle_control,
        )
        servicer = HealthServicer()
        # The servicer starts out SERVING; nothing is reachable until the first probe says so.
        await servicer.set("", NOT_SERVING)
        server, port = build_server(
            host=settings.worker_health_host,
            port=settings.worker_health_port,
            service_names=[],
            register=lambda _server: None,
            health_servicer=servicer,
            credentials=credentials,
        )
        metrics_server = metrics.serve(settings.worker_health_host, settings.metrics_port)
        monitor = HealthMonitor(servicer, [], {"rabbitmq": consumer.probe, "job_service": reports.probe})
        await server.start()
        log.info(
            "worker started",
            extra={
                "health_port": port,
                "tls": settings.tls,
                "job_service_tls": job_service_credentials is not None,
                "queue": settings.rabbitmq_queue,
                "job_service": settings.job_service_addr,
                "job_type_modules": list(settings.modules()),
            },
        )
        consumer.start(supervisor.spawn)
        # Give the broker a moment before the first health probe, so a normal
        # start does not log RabbitMQ as unreachable.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(consumer.wait_connected(), runner.start()), 2)
        monitoring = supervisor.spawn(monitor.run(), name="health")
        await supervisor.wait_for_stop()

        log.info("stopping")
        await monitor.shutdown()
        await supervisor.cancel(monitoring)
        reports.begin_stop(settings.stop_report_retry_seconds)
        await consumer.stop(settings.shutdown_grace_seconds)
        await server.stop(1)
    finally:
        await reports.close()
        await runner.close()
        metrics.stop(metrics_server)
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return service.run("worker_svc", Settings, serve, description=DESCRIPTION, argv=argv)


if __name__ == "__main__":
    sys.exit(main())

"""Run the worker: ``python -m worker_svc`` (``--help`` lists its settings; exit codes: common.service).

Wiring only: settings -> worker token -> job types from JOB_TYPE_MODULES -> TLS files -> reports -> process pool ->
health server -> the job types declared to the job service -> consumer; on SIGTERM/SIGINT: NOT_SERVING,
stop consuming, finish or hand back in-flight jobs, exit 0. It starts even while RabbitMQ or the job service is
down, reporting NOT_SERVING and retrying until they are back; it consumes nothing
before the job service has taken its job types (DeclareJobTypes), and a job service
that refuses them (a type declared differently at the same version, an invalid
schema) stops it: one line on stderr, exit 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterable, Sequence

from common import metrics, secrets, service
from common.health import NOT_SERVING, HealthMonitor, HealthServicer
from common.job_types import JobType
from common.rabbitmq import Topology
from common.server import build_server
from common.settings import SettingsError
from common.signing import Verifier
from worker_svc.consumer import QueueConsumer
from worker_svc.delivery import DeliveryHandler
from worker_svc.handlers import load_job_types
from worker_svc.reports import ReportClient, ReportRefused, open_channel
from worker_svc.runner import Runner
from worker_svc.settings import Settings

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
        try:
            if not await _declare(reports, types.values(), supervisor):
                return
        except SettingsError:
            await server.stop(None)  # before the loop closes, or its end is a traceback on stderr
            raise
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


async def _declare(reports: ReportClient, types: Iterable[JobType], supervisor: service.Supervisor) -> bool:
    """Declare the worker's job types, retrying until the job service answers; False if a stop came first.

    SettingsError (the worker refuses to start) if the job service refuses them: running jobs of a type
    the job service holds differently would run payloads the handler was not written for.
    """
    declaring = asyncio.ensure_future(reports.declare(types))
    stopping = asyncio.ensure_future(supervisor.wait_for_stop())
    await asyncio.wait({declaring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not declaring.done():
        declaring.cancel()
        return False
    try:
        declared = declaring.result()
    except ReportRefused as error:
        raise SettingsError(f"the job service refused this worker's job types (DeclareJobTypes: {error})") from None
    log.info("job types declared", extra={"job_types": {t.name: t.version for t in declared}})
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return service.run("worker_svc", Settings, serve, description=DESCRIPTION, argv=argv)


if __name__ == "__main__":
    sys.exit(main())

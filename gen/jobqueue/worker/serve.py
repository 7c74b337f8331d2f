"""Running a Worker: the wiring behind ``worker.run()``, ``python -m jobqueue.worker`` and ``python -m worker_svc``.

Wiring only: settings -> worker token -> TLS files -> reports -> process pool ->
health server -> declare the job types -> consumer; on SIGTERM/SIGINT:
NOT_SERVING, stop consuming, finish or hand back in-flight jobs, exit 0. It
starts even while RabbitMQ or the job service is down, reporting NOT_SERVING
and retrying until they are back; it consumes nothing before the job service
has taken its job types, and stops (exit 2) if it refuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from jobqueue.runtime import logs, metrics, secrets, service
from jobqueue.runtime.health import NOT_SERVING, HealthMonitor, HealthServicer
from jobqueue.runtime.rabbitmq import Topology
from jobqueue.runtime.server import build_server
from jobqueue.runtime.settings import SettingsError
from jobqueue.runtime.signing import Verifier
from jobqueue.worker.consumer import QueueConsumer
from jobqueue.worker.declare import declare
from jobqueue.worker.delivery import DeliveryHandler
from jobqueue.worker.job_types import JobType
from jobqueue.worker.reports import ReportClient, open_channel
from jobqueue.worker.runner import Runner
from jobqueue.worker.settings import Settings

log = logging.getLogger("jobqueue.worker")

DESCRIPTION = """\
Consumes the queues of its job types (JOB_TYPES: all, or some), runs each job
and reports every state change to the job service (UpdateJob). Declares the
job types it serves to the job service first (DeclareJobTypes). Serves
grpc.health.v1 and reflection on WORKER_HEALTH_HOST:WORKER_HEALTH_PORT; health
is SERVING only while both RabbitMQ and the job service are reachable
(statuses "rabbitmq" and "job_service" tell which is not)."""


async def serve(types: Mapping[str, JobType], settings: Settings, supervisor: service.Supervisor) -> None:
    """Run ``types`` until a stop is requested, then stop gracefully."""
    types = {name: types[name] for name in settings.served(types)}
    token = settings.token()
    # Before anything connects: a handler a process could not import stops the worker here, not at its first job.
    try:
        runner = Runner(types, settings.handler_processes)
    except ValueError as error:
        raise SettingsError(str(error)) from None
    credentials = settings.server_credentials()
    job_service_credentials = settings.job_service_credentials()
    channel = open_channel(
        settings.job_service_addr, job_service_credentials, server_name=settings.job_service_tls_name
    )
    worker_id = settings.identity()
    # Every line this process logs from now on names the worker, as its reports do.
    logs.add_fields(worker_id=worker_id)
    reports = ReportClient(channel, token, timeout=settings.report_timeout_seconds, worker_id=worker_id)
    metrics_server = None
    try:
        # Every worker token this worker holds: during a rotation its file lists the old and the new.
        handler = DeliveryHandler(
            reports,
            runner,
            Verifier(secrets.worker_tokens(settings)),
            progress_interval=settings.progress_interval_seconds,
        )
        consumer = QueueConsumer(
            settings.rabbitmq_url,
            Topology(settings.rabbitmq_queue),
            list(types),
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
                "job_types": sorted(types),
            },
        )
        # A stop while the job service is still away ends the wait; a refusal stops the worker, gracefully too.
        declaring = asyncio.ensure_future(declare(reports.declare, types.values()))
        stopping = asyncio.ensure_future(supervisor.wait_for_stop())
        await asyncio.wait({declaring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        declaring.cancel()
        await asyncio.wait({declaring, stopping})
        refused = None if declaring.cancelled() else declaring.exception()
        monitoring = None
        if not declaring.cancelled() and refused is None:
            monitoring = await _consume(consumer, runner, monitor, supervisor)
            await supervisor.wait_for_stop()

        log.info("stopping")
        await monitor.shutdown()
        if monitoring is not None:
            await supervisor.cancel(monitoring)
        reports.begin_stop(settings.stop_report_retry_seconds)
        await consumer.stop(settings.shutdown_grace_seconds)
        await server.stop(1)
        if refused is not None:
            raise refused
    finally:
        await reports.close()
        await runner.close()
        metrics.stop(metrics_server)
    log.info("stopped")


async def _consume(
    consumer: QueueConsumer, runner: Runner, monitor: HealthMonitor, supervisor: service.Supervisor
) -> asyncio.Task[None]:
    """Start consuming, then the health monitor (its task): the health is NOT_SERVING until then.

    The broker gets a moment first, so a normal start does not log RabbitMQ as
    unreachable; nor does the wait for the job service while the types are declared.
    """
    consumer.start(supervisor.spawn)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(consumer.wait_connected(), runner.start()), 2)
    return supervisor.spawn(monitor.run(), name="health")

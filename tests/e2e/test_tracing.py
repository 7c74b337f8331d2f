"""Traces across processes: one job's spans, from the job service and the worker, share one trace.

The real auth, job and worker services run with OpenTelemetry on (OTEL_TRACES_EXPORTER=otlp),
each exporting to an OTLP trace receiver this test runs in-process (a gRPC TraceService keeping
what it is sent). One job is submitted through the client library and waited for; then its
trace must hold, told apart by each process's resource ``service.name``: the job service's
CreateJob server span with its SQL, the relay's publish span (the outbox row kept the trace),
the worker's receive and process spans (the message's headers carried it) and its UpdateJobs
call, and the job service's handling of that call.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from jobqueue.client import connect_auth, connect_jobs
from tests.support.processes import free_port
from tests.support.system import System

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
PRODUCER = trace_pb2.Span.SPAN_KIND_PRODUCER
CONSUMER = trace_pb2.Span.SPAN_KIND_CONSUMER
INTERNAL = trace_pb2.Span.SPAN_KIND_INTERNAL


@dataclass(frozen=True)
class Received:
    """One span as a receiver sees it, with the service.name of the process that sent it."""

    service: str
    name: str
    kind: int
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    attributes: dict[str, Any]
    links: tuple[bytes, ...]


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector that keeps every span it is sent, in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Received] = []

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    links = tuple(link.span_id for link in span.links)
                    received.append(
                        Received(
                            resource.get("service.name", ""),
                            span.name,
                            span.kind,
                            span.trace_id,
                            span.span_id,
                            span.parent_span_id,
                            attributes,
                            links,
                        )
                    )
        with self._lock:
            self._spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[Received]:
        with self._lock:
            return list(self._spans)


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def receiver() -> Iterator[tuple[TraceReceiver, int]]:
    collector = TraceReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    # opentelemetry-proto ships its gRPC module untyped.
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield collector, port
    server.stop(None)


@pytest.fixture
def traced_system(
    receiver: tuple[TraceReceiver, int], service_env: dict[str, str], tmp_path: Path, purge_queues: None
) -> Iterator[System]:
    _, port = receiver
    env = {
        **service_env,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        # Exported a tenth of a second after they end, not 5 s (the SDK's default).
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    running = System(env, tmp_path)
    running.start_auth()
    running.start_jobs()
    running.start_worker()
    yield running
    codes = running.stop()
    assert all(code == 0 for code in codes.values()), f"not every service stopped cleanly: {codes}"


async def _one_job(system: System, email: str = "tracy@example.com") -> str:
    async with connect_auth(system.auth_address) as auth:
        await auth.register(email, "correct horse battery", "Tracy")
        token = await auth.login(email, "correct horse battery")
    async with connect_jobs(system.job_address, token=token) as jobs:
        job = await jobs.submit_and_wait("reverse_string", "traced", timeout=30)
    assert job.result == "decart"
    return job.id


def _find(spans: list[Received], service: str, kind: int, name: str) -> list[Received]:
    return [s for s in spans if s.service == service and s.kind == kind and name in s.name]


def _job_trace(collector: TraceReceiver, job_id: str, timeout: float = 20.0) -> tuple[Received, list[Received]]:
    """The CreateJob span and every span of its trace, once the worker's report of it has arrived."""
    deadline = time.monotonic() + timeout
    while True:
        spans = collector.spans()
        created = _find(spans, "job_svc", SERVER, "JobService/CreateJob")
        if len(created) == 1:
            trace = [s for s in spans if s.trace_id == created[0].trace_id]
            # The last span to end: the job service's handling of the COMPLETED report.
            if len(_find(trace, "job_svc", SERVER, "JobService/UpdateJobs")) >= 2:
                return created[0], trace
        if time.monotonic() > deadline:
            names = sorted({(s.service, s.name) for s in spans})
            pytest.fail(f"job {job_id}: its trace did not arrive whole within {timeout} s; received {names}")
        time.sleep(0.2)


def test_one_jobs_spans_from_every_process_share_one_trace(
    traced_system: System, receiver: tuple[TraceReceiver, int]
) -> None:
    collector, _ = receiver
    job_id = asyncio.run(_one_job(traced_system))
    created, trace = _job_trace(collector, job_id)
    by_id = {s.span_id: s for s in trace}

    def parent(span: Received) -> Received:
        assert span.parent_span_id in by_id, f"{span.name}'s parent is not in the job's trace"
        return by_id[span.parent_span_id]

    # The job service: CreateJob, its INSERT (asyncpg), and the relay's publish, in the trace the outbox row kept.
    assert created.parent_span_id == b""  # the client library does not trace: the call starts the trace
    # Its INSERT, in the transaction CreateJob calls share (group commit), traced as theirs.
    [stored] = _find(trace, "job_svc", INTERNAL, "store CreateJob batch")
    assert parent(stored) == created
    statements = [s for s in _find(trace, "job_svc", CLIENT, "") if s.attributes.get("db.system") == "postgresql"]
    assert [s for s in statements if s.parent_span_id == stored.span_id]
    [publish] = _find(trace, "job_svc", PRODUCER, "publish")
    assert parent(publish) == created
    assert publish.attributes["messaging.message.id"] == job_id
    # The worker: aio-pika's receive span from the message's headers, our process span, two reports.
    [receive] = _find(trace, "worker_svc", CONSUMER, "receive")
    assert parent(receive) == publish
    [process] = _find(trace, "worker_svc", CONSUMER, "reverse_string process")
    assert parent(process) == receive
    assert process.attributes["jobqueue.job.id"] == job_id
    batches = _find(trace, "worker_svc", INTERNAL, "UpdateJobs batch")
    assert len(batches) >= 2  # the claim (RUNNING) and the outcome (COMPLETED), each a call of its own
    calls = _find(trace, "worker_svc", CLIENT, "JobService/UpdateJobs")
    assert {parent(call).span_id for call in calls} <= {batch.span_id for batch in batches}
    assert all(parent(batch) == process for batch in batches)
    assert all(process.span_id in batch.links for batch in batches)
    # And the job service's handling of each of those calls.
    handled = _find(trace, "job_svc", SERVER, "JobService/UpdateJobs")
    assert {parent(call).span_id for call in handled} == {call.span_id for call in calls}
    # Every process exported spans under its own name, and health probes made none.
    everything = collector.spans()
    assert {"auth_svc", "job_svc", "worker_svc"} <= {s.service for s in everything}
    assert not [s for s in everything if "grpc.health" in s.name]


async def _many_jobs(system: System, count: int) -> list[str]:
    async with connect_auth(system.auth_address) as auth:
        await auth.register("many@example.com", "correct horse battery", "Many")
        token = await auth.login("many@example.com", "correct horse battery")
    async with connect_jobs(system.job_address, token=token) as jobs:
        ids = [
            job.id for job in await asyncio.gather(*(jobs.submit("reverse_string", f"job {i}") for i in range(count)))
        ]
        done = await asyncio.gather(*(jobs.wait(job_id, timeout=30) for job_id in ids))
    assert {job.result for job in done} == {f"job {i}"[::-1] for i in range(count)}
    return ids


def test_every_job_of_a_busy_worker_leads_to_the_batched_calls_that_carried_its_reports(
    traced_system: System, receiver: tuple[TraceReceiver, int]
) -> None:
    collector, _ = receiver
    count = 40
    ids = asyncio.run(_many_jobs(traced_system, count))
    deadline = time.monotonic() + 20
    while True:
        spans = collector.spans()
        processes = {s.attributes["jobqueue.job.id"]: s for s in _find(spans, "worker_svc", CONSUMER, " process")}
        batches = _find(spans, "worker_svc", INTERNAL, "UpdateJobs batch")
        reports = sum(batch.attributes["jobqueue.batch.size"] for batch in batches)
        # Every job's claim and outcome reported (the later spans may still be on their way).
        if set(processes) == set(ids) and reports >= 2 * count:
            break
        assert time.monotonic() < deadline, f"{len(processes)} of {count} jobs' process spans, {reports} reports"
        time.sleep(0.2)
    stores = _find(spans, "job_svc", INTERNAL, "store CreateJob batch")
    for job_id, process in processes.items():
        # Each job is still one trace: its process span descends from its CreateJob through the outbox.
        [created] = [s for s in _find(spans, "job_svc", SERVER, "CreateJob") if s.trace_id == process.trace_id]
        # Its INSERT went in a transaction linked to it, whichever CreateJob call's trace it is in.
        assert [store for store in stores if created.span_id in store.links]
        assert [
            s for s in _find(spans, "job_svc", PRODUCER, "publish") if s.attributes["messaging.message.id"] == job_id
        ]
        # Its reports went in calls each linked to it, in its trace or, batched with another job's, in that one's.
        carrying = [batch for batch in batches if process.span_id in batch.links]
        assert len(carrying) >= 2, f"job {job_id}: its claim and outcome are not both linked"
        assert created.trace_id == process.trace_id
    # A batch span is a child of its first report's job, and the call it made is its child.
    calls = {s.parent_span_id for s in _find(spans, "worker_svc", CLIENT, "JobService/UpdateJobs")}
    by_id = {s.span_id: s for s in spans}
    for batch in batches:
        assert batch.span_id in calls
        assert by_id[batch.parent_span_id] in processes.values()
        assert batch.parent_span_id in batch.links
    print(
        f"{len(stores)} transactions for {count} CreateJob calls, {len(batches)} UpdateJobs calls for {reports} reports"
    )


def test_a_collector_that_is_down_costs_spans_never_jobs(
    service_env: dict[str, str], tmp_path: Path, purge_queues: None
) -> None:
    nowhere = free_port()  # nothing listens there
    env = {**service_env, "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{nowhere}"}
    system = System(env, tmp_path)
    try:
        system.start_auth()
        system.start_jobs()
        system.start_worker()
        asyncio.run(_one_job(system, "untraced@example.com"))
    finally:
        began = time.monotonic()
        codes = system.stop()
    assert all(code == 0 for code in codes.values()), codes
    # Each of the three stops waited at most 2 s (tracing.SHUTDOWN_SECONDS) for the collector: 6.7 s
    # in all, measured; the SDK's own shutdown waits out the exporter's retries, 5 s or more each.
    assert time.monotonic() - began < 12
    assert system.jobs is not None
    assert "tracing on" in system.jobs.output()

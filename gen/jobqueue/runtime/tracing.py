"""Traces across the services (OpenTelemetry): off unless OTEL_TRACES_EXPORTER names an exporter.

``setup`` runs once per process (jobqueue.runtime.service.run). With no exporter
named, or OTEL_SDK_DISABLED=true, it does nothing at all: OpenTelemetry is not
even imported, no interceptor is added to any server or channel, nothing is
patched, and every function below returns at its first line, ``_tracer is
None`` (the whole cost per job when off: docs/operations.md#tracing).

When on, it installs the SDK (sampler, batching and exporter from the standard
``OTEL_*`` variables, read by the SDK itself), the maintained instrumentations of
asyncpg and aio-pika (those that are installed), and hands out the grpcio
interceptors that ``build_server`` and the worker's channel add. What those
cannot see, because it crosses a boundary of our own, is done here:

- the outbox: CreateJob stores ``capture()`` with the job's outbox row; the relay
  publishes each message in a PRODUCER span whose parent is that stored context
  (``start_publish``), and puts that span's context in the message's AMQP headers,
  where the aio-pika instrumentation of the worker reads it;
- work done in batches across jobs (CreateJob's group commit in job_svc/jobs.py, the
  worker's reports in jobqueue/worker/reports.py): each job keeps its context, and the
  batch runs inside ``batch_span``, a child of the first job's span, linked to every job's.

The trace context rides in AMQP headers, outside the signature (jobqueue.runtime.signing):
it only labels spans, never changes what a worker does, so a forged one can only
mislabel a trace, and only for whoever may publish to the queue already.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from jobqueue.runtime.settings import SettingsError

if TYPE_CHECKING:
    import grpc
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

#: gRPC services whose calls make no spans: probes every few seconds would bury the jobs' traces.
UNTRACED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")
#: The longest a stopping process waits for its last spans to be exported.
SHUTDOWN_SECONDS = 2.0
#: The longest stored trace context accepted back from the outbox (a W3C traceparent is 55
#: characters; tracestate at most 32 entries): a bigger one is dropped, not propagated.
MAX_STORED_CONTEXT = 4096

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
#: What the span helpers return when off: one shared context manager that does nothing.
_OFF: AbstractContextManager[object] = contextlib.nullcontext()


def enabled() -> bool:
    """Whether this process traces (``setup`` found an exporter)."""
    return _tracer is not None


def exporter_names(traces_exporter: str, sdk_disabled: bool) -> list[str]:
    """The exporters OTEL_TRACES_EXPORTER names (``none`` and blanks dropped); none when OTEL_SDK_DISABLED."""
    if sdk_disabled:
        return []
    return [name for name in (part.strip().lower() for part in traces_exporter.split(",")) if name and name != "none"]


def setup(service_name: str, traces_exporter: str, *, otlp_protocol: str = "grpc", sdk_disabled: bool = False) -> bool:
    """Trace this process as ``service_name`` (unless OTEL_SERVICE_NAME says otherwise); whether it now does.

    ``traces_exporter``, ``otlp_protocol``, ``sdk_disabled``: OTEL_TRACES_EXPORTER,
    OTEL_EXPORTER_OTLP_PROTOCOL and OTEL_SDK_DISABLED (jobqueue.runtime.settings); the SDK reads the
    other OTEL_* variables itself.

    SettingsError if an exporter is unknown, or OpenTelemetry is not installed
    (``pip install ./gen[worker,tracing]`` for a worker of one's own).
    """
    global _tracer, _provider  # noqa: PLW0603 - one tracer per process, set once at start
    names = exporter_names(traces_exporter, sdk_disabled)
    if not names:
        return False
    try:
        from opentelemetry import trace  # noqa: PLC0415 - imported only when tracing is on
        from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter  # noqa: PLC0415
    except ImportError as error:
        raise SettingsError(
            f"OTEL_TRACES_EXPORTER={traces_exporter!r} needs OpenTelemetry, which is not installed ({error.name}); "
            "install jobqueue-client[tracing]"
        ) from None
    exporters: list[SpanExporter] = [_exporter(name, otlp_protocol)() for name in names]
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (what the detector reads) win over the default name.
    configured = OTELResourceDetector().detect().attributes
    # shutdown_on_exit=False: ``shutdown`` below does it, bounded, from jobqueue.runtime.service.run.
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service_name, **configured}), shutdown_on_exit=False
    )
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _instrument(provider)
    _provider = provider
    _tracer = provider.get_tracer("jobqueue")
    log.info("tracing on", extra={"exporters": names})
    return True


def _exporter(name: str, otlp_protocol: str) -> Any:
    """The SpanExporter class installed under ``name`` (``otlp``: OTLP over ``otlp_protocol``), as the SDK finds it."""
    entry_name = name
    if name == "otlp":
        entry_name = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}.get(otlp_protocol, otlp_protocol)
    found = importlib.metadata.entry_points(group="opentelemetry_traces_exporter", name=entry_name)
    if not found:
        raise SettingsError(
            f"OTEL_TRACES_EXPORTER names {name!r}, but no installed package provides that exporter "
            f"({entry_name}); this image has otlp (grpc) and console"
        )
    return next(iter(found)).load()


#: The instrumentations installed when both they and their library are (a worker has no asyncpg, and
#: the client package's tracing extra brings no asyncpg instrumentation): library -> instrumentor.
INSTRUMENTATIONS = {
    "asyncpg": ("opentelemetry.instrumentation.asyncpg", "AsyncPGInstrumentor"),
    "aio_pika": ("opentelemetry.instrumentation.aio_pika", "AioPikaInstrumentor"),
}


def _instrument(provider: TracerProvider) -> None:
    """Install the instrumentations of the libraries this process has."""
    for library, (module, name) in INSTRUMENTATIONS.items():
        if not (_installed(library) and _installed(module)):
            continue
        instrumentor = getattr(importlib.import_module(module), name)
        # It checks that the library's version is one it supports, and logs and skips it otherwise.
        instrumentor().instrument(tracer_provider=provider)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is not installed either
        return False


def shutdown() -> None:
    """Export what is still buffered and stop (at the end of the process), for SHUTDOWN_SECONDS at most."""
    global _tracer, _provider  # noqa: PLW0603
    provider = _provider
    if provider is None:
        return
    _tracer = _provider = None
    # The SDK's own shutdown waits out the exporter's retries (5 s measured with the collector
    # down, up to 30 s by its defaults), which would hold up every stop while tracing is broken.
    stopping = threading.Thread(target=provider.shutdown, name="tracing shutdown", daemon=True)
    stopping.start()
    stopping.join(SHUTDOWN_SECONDS)
    if stopping.is_alive():
        log.warning("stopped without exporting the last spans: the collector did not take them in time")


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The interceptors a server adds, outermost first: a SERVER span per unary call when on; none when off."""
    if _tracer is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor  # noqa: PLC0415

    traced = aio_server_interceptor(tracer_provider=_provider, filter_=_traced_calls())  # type: ignore[no-untyped-call]
    return [_unary_only(traced)]


def _unary_only(traced: Any) -> Any:
    """``traced`` (OpenTelemetry's server interceptor) applied to unary calls, other calls passed by."""
    import grpc  # noqa: PLC0415 - the type is needed only when tracing is on

    class UnaryOnly(grpc.aio.ServerInterceptor):
        # OpenTelemetry's interceptor takes every streaming handler for an async generator; ours are
        # wrapped by StreamLimits into coroutines that write (jobqueue/runtime/stream_limits.py),
        # which it breaks ("'async for' requires an object with __aiter__"). The work a job is
        # traced through is all unary (CreateJob, UpdateJobs...); streams go untraced.
        async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
            handler = await continuation(details)
            if handler is None or handler.unary_unary is None:
                return handler

            async def found(_: grpc.HandlerCallDetails) -> Any:
                return handler

            return await traced.intercept_service(found, details)

    return UnaryOnly()


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The interceptors a channel adds: a CLIENT span per call, its context sent along; none when off."""
    if _tracer is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors  # noqa: PLC0415

    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(  # type: ignore[no-untyped-call]
        tracer_provider=_provider, filter_=_traced_calls()
    )
    return interceptors


def _traced_calls() -> Any:
    from opentelemetry.instrumentation.grpc import filters  # noqa: PLC0415

    return filters.negate(filters.any_of(*(filters.service_name(name) for name in UNTRACED_SERVICES)))


def capture() -> str | None:
    """The current trace context as text to store with an outbox row (W3C traceparent, tracestate); None when off."""
    if _tracer is None:
        return None
    from opentelemetry import propagate  # noqa: PLC0415

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier, separators=(",", ":")) if carrier else None


def current() -> Context | None:
    """The current context, to carry a job's trace into work done elsewhere (a batched report); None when off."""
    if _tracer is None:
        return None
    from opentelemetry import context  # noqa: PLC0415

    return context.get_current()


def start_publish(
    stored: str | None, destination: str, attributes: Mapping[str, str | int], headers: MutableMapping[str, Any]
) -> Span | None:
    """A PRODUCER span for publishing one outbox message, child of the ``stored`` context; None when off.

    Its own context is written into ``headers`` (the message's AMQP headers). The caller ends it
    once the broker confirmed the message (``end``). A message stored with no context (a retry, a
    re-run, or a job created while tracing was off) starts a trace of its own.
    """
    if _tracer is None:
        return None
    from opentelemetry import propagate, trace  # noqa: PLC0415
    from opentelemetry.context import Context  # noqa: PLC0415

    span = _tracer.start_span(
        f"{destination} publish",
        context=_restored(stored),
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "send",
            "messaging.destination.name": destination,
            **attributes,
        },
    )
    propagate.inject(headers, context=trace.set_span_in_context(span, Context()))
    return span


def _restored(stored: str | None) -> Context:
    """The context ``capture`` stored as text; an empty one (a new trace) if there is none or it does not parse."""
    from opentelemetry import propagate  # noqa: PLC0415
    from opentelemetry.context import Context  # noqa: PLC0415

    if stored and len(stored) <= MAX_STORED_CONTEXT:
        with contextlib.suppress(ValueError, TypeError):
            carrier = json.loads(stored)
            if isinstance(carrier, dict):
                return propagate.extract({str(k): str(v) for k, v in carrier.items()}, context=Context())
    return Context()


def end(span: Span | None, error: str | None = None) -> None:
    """End a span from ``start_publish`` (``error``: why it failed); nothing for None."""
    if span is None:
        return
    if error is not None:
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


def job_span(operation: str, job_type: str, job_id: str) -> AbstractContextManager[object]:
    """A CONSUMER span ``<job_type> <operation>`` for the block that handles one job's message; nothing when off."""
    if _tracer is None:
        return _OFF
    from opentelemetry import trace  # noqa: PLC0415

    return _tracer.start_as_current_span(
        f"{job_type} {operation}",
        kind=trace.SpanKind.CONSUMER,
        attributes={"messaging.operation.type": operation, "jobqueue.job.id": job_id, "jobqueue.job.type": job_type},
    )


def batch_span(name: str, contexts: Iterable[Context | str | None]) -> AbstractContextManager[object]:
    """A span for the block: one call or transaction carrying the work of several jobs; nothing when off.

    ``contexts``: each job's, as ``current`` gave it or as ``capture`` stored it, None where a job
    has none. The span is a child of the first (with one, the usual case at low load, the work
    simply belongs to that job's trace) and links to each one's span, so every job's trace leads
    to the call that carried its part. ``contexts`` is read only when on (pass a generator).
    """
    if _tracer is None:
        return _OFF
    from opentelemetry import trace  # noqa: PLC0415

    given = [_restored(context) if isinstance(context, str) else context for context in contexts]
    # One link per job's span (a job may have several reports in one call), by id: a SpanContext is unhashable.
    spans = (trace.get_current_span(context).get_span_context() for context in given if context is not None)
    distinct = {found.span_id: found for found in spans if found.is_valid}
    links = [trace.Link(found) for found in distinct.values()]
    parent = next((context for context in given if context is not None), None)
    return _tracer.start_as_current_span(
        name, context=parent, links=links, attributes={"jobqueue.batch.size": len(given)}
    )


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Tasks started in the block make no spans through the instrumentations (a relay's polls, probes).

    Their statements serve no one job, so each would be a trace of its own, several a second.
    """
    if _tracer is None:
        yield
        return
    from opentelemetry.instrumentation.utils import suppress_instrumentation  # noqa: PLC0415

    with suppress_instrumentation():
        yield

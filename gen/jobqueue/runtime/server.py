"""The gRPC server every service runs: error mapping, health, reflection, graceful stop.

``build_server`` returns ``(server, port)`` so tests can bind port 0 and run the
real server in-process. Given credentials (gen/jobqueue/runtime/tls.py) a listener serves TLS only;
``listen`` adds another listener to the same server (the job service's port for workers).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from time import monotonic
from typing import Any, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from jobqueue.runtime import metrics, stream_limits, tracing
from jobqueue.runtime.errors import (
    ERROR_DOMAIN,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    ServiceError,
    code_number,
    status_code,
)
from jobqueue.runtime.health import HealthServicer
from jobqueue.runtime.stream_limits import StreamCounts, StreamLimits

log = logging.getLogger(__name__)

#: Requests larger than this are refused with RESOURCE_EXHAUSTED before any handler runs.
MAX_MESSAGE_BYTES = 1 << 20
#: Calls a service handles at once; more are refused with RESOURCE_EXHAUSTED ("Concurrent RPC limit
#: exceeded!"), so that a flood or a slow dependency cannot pile up memory without bound.
MAX_CALLS_IN_PROGRESS = 1000
#: Calls that may wait in gRPC's core for the event loop to take them. gRPC's default (1,000, then random
#: refusals up to 3,000) cancelled calls of a 2,000-a-second burst with a bare CANCELLED, which a client
#: cannot tell from its own cancellation. Waiting calls cost little, and once taken, any beyond
#: MAX_CALLS_IN_PROGRESS are refused with a clear status, so this backlog only has to absorb bursts.
MAX_CALLS_WAITING = 20_000
#: After a connection's GOAWAY (max_connection_age), how long its calls in flight may still take.
CONNECTION_AGE_GRACE_SECONDS = 30
#: Streams (calls) one HTTP/2 connection may have open at once. gRPC's Python client does not wait
#: for a free stream when it meets this: it fails the call with UNAVAILABLE ("RST_STREAM ... code 7";
#: measured: 2,060 of a 3,000-call burst at a limit of 256). So the limit sits far above the calls a
#: server takes at once, where a client meets RESOURCE_EXHAUSTED first, and only stops one connection
#: from filling the whole waiting room (MAX_CALLS_WAITING).
MAX_STREAMS_PER_CONNECTION = 4096
#: A connection with no call for this long is closed (the client reconnects when it next calls), so
#: connections opened and left idle do not pile up.
MAX_CONNECTION_IDLE_SECONDS = 600
#: The server pings a connection that has been quiet this long, and closes it if no answer comes
#: within KEEPALIVE_TIMEOUT_SECONDS: a client that vanished (host gone, cable cut) frees its calls.
KEEPALIVE_SECONDS = 60
KEEPALIVE_TIMEOUT_SECONDS = 20
#: The most often a client may ping us without a call in flight; one that pings more often is sent
#: GOAWAY after MAX_PING_STRIKES such pings (gRPC's default policy, stated here as ours).
MIN_CLIENT_PING_INTERVAL_SECONDS = 300
MAX_PING_STRIKES = 2


def connection_options(max_connection_age: float) -> list[tuple[str, int]]:
    """The HTTP/2 limits every server sets: streams per connection, idle and age limits, keepalive."""
    options = [
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        ("grpc.max_connection_idle_ms", MAX_CONNECTION_IDLE_SECONDS * 1000),
        ("grpc.keepalive_time_ms", KEEPALIVE_SECONDS * 1000),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_SECONDS * 1000),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_SECONDS * 1000),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
    ]
    if max_connection_age > 0:
        options += [
            ("grpc.max_connection_age_ms", int(max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", CONNECTION_AGE_GRACE_SECONDS * 1000),
        ]
    return options


def stream_refusal() -> grpc.Status:
    """What a Watch or reflection stream beyond its budget gets (gen/jobqueue/runtime/stream_limits.py)."""
    return _rich_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "too many open streams from this address or in all; retry later",
        [
            error_details_pb2.ErrorInfo(reason=stream_limits.REASON, domain=ERROR_DOMAIN),
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=stream_limits.RETRY_AFTER_SECONDS)),
        ],
    )


def _rich_status(code: grpc.StatusCode, message: str, details: Sequence[Any]) -> grpc.Status:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    proto = status_pb2.Status(code=code_number(code), message=message, details=packed)
    status: grpc.Status = rpc_status.to_status(proto)
    return status


def status_for(error: ServiceError) -> grpc.Status:
    """The status (code, message, ErrorInfo and BadRequest details) a caller receives for ``error``."""
    details: list[Any] = [error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)]
    if isinstance(error, ResourceExhausted):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(0, round(error.retry_after * 1e9)))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    if isinstance(error, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
    return _rich_status(status_code(error), error.message, details)


def parse_request(parse: Callable[[bytes], Any], body: bytes) -> Any:
    """The request message in ``body``; INVALID_ARGUMENT if it is not one (bad wire format, UTF-8 or nesting)."""
    try:
        return parse(body)
    except DecodeError:
        violation = FieldViolation("request", "is not a valid message of the method's request type")
        raise InvalidArgument([violation]) from None


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns what a unary or server-streaming handler raises into a status; nothing else ever reaches a caller.

    ServiceError -> its category's status with details; an exception listed in
    ``transient`` (a dropped database connection, say) -> UNAVAILABLE, so
    clients know to retry; anything else -> INTERNAL with no trace, logged here.
    Every such call's status code and handling time (a stream's: how long it stayed open) go to the gRPC
    metrics.
    """

    #: During an outage every call fails alike: log the first, then at most one line per this many seconds.
    OUTAGE_LOG_INTERVAL = 5.0

    def __init__(self, transient: tuple[type[BaseException], ...] = ()) -> None:
        self._transient = transient
        self._quiet_until = 0.0
        self._unlogged = 0
        self._recorders: dict[str, Callable[[str, float], None]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or (handler.unary_unary is None and handler.unary_stream is None):
            return handler
        method = handler_call_details.method
        record = self._recorders.get(method)
        if record is None:
            record = self._recorders[method] = metrics.rpc_recorder(method)

        parse = handler.request_deserializer
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._guarded_stream(method, handler.unary_stream, parse, record),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_unary is None:
            return handler

        # The stubs type handlers as synchronous; on a grpc.aio server they are coroutines.
        inner = cast(Callable[[Any, Any], Awaitable[Any]], handler.unary_unary)

        async def guarded(body: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = monotonic()
            code = grpc.StatusCode.OK
            try:
                try:
                    # Parsed here, not by gRPC: gRPC answers a body that is not the method's message
                    # with UNKNOWN and the parser's exception text, and logs its traceback.
                    return await inner(body if parse is None else parse_request(parse, body), context)
                except grpc.aio.AbortError:
                    code = context.code()  # a handler aborted with a status of its own
                    raise
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED  # the caller went away, or the server is stopping
                    raise
                except Exception as error:  # noqa: BLE001 - every failure becomes a status; _status logs the unknown
                    status = self._status(method, error)
                code = status.code
                return await context.abort(status.code, status.details, status.trailing_metadata)
            finally:
                record(code.name, monotonic() - started)

        return grpc.unary_unary_rpc_method_handler(guarded, response_serializer=handler.response_serializer)

    def _guarded_stream(
        self,
        method: str,
        inner: Callable[[Any, Any], Any],
        parse: Callable[[bytes], Any] | None,
        record: Callable[[str, float], None],
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]:
        """A server-streaming handler whose failures become statuses, as ``guarded`` does for a unary one."""

        async def guarded(body: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            started = monotonic()
            code = grpc.StatusCode.OK
            try:
                try:
                    # A handler either writes with context.write and returns (the stream limits'
                    # wrapper, our health Watch), or is an async generator of responses.
                    result = inner(body if parse is None else parse_request(parse, body), context)
                    if inspect.isasyncgen(result):
                        async for response in cast(AsyncIterator[Any], result):
                            await context.write(response)
                    else:
                        await result
                    return
                except grpc.aio.AbortError:
                    code = context.code()
                    raise
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                except Exception as error:  # noqa: BLE001 - as in guarded
                    status = self._status(method, error)
                code = status.code
                await context.abort(status.code, status.details, status.trailing_metadata)
            finally:
                record(code.name, monotonic() - started)

        return guarded

    def _status(self, method: str, error: Exception) -> grpc.Status:
        """The status a handler's exception is answered with (logged when it is not one we expect)."""
        if isinstance(error, ServiceError):
            if isinstance(error, ResourceExhausted):
                metrics.LIMIT_REFUSALS.labels(error.reason).inc()
            return status_for(error)
        if isinstance(error, self._transient):
            self._log_unavailable(method, error)
            return _rich_status(
                grpc.StatusCode.UNAVAILABLE,
                "a dependency is unavailable; retry later",
                [error_details_pb2.ErrorInfo(reason="DEPENDENCY_UNAVAILABLE", domain=ERROR_DOMAIN)],
            )
        log.error("unhandled error", exc_info=error, extra={"method": method})
        return _rich_status(grpc.StatusCode.INTERNAL, "internal error", [])

    def _log_unavailable(self, method: str, error: BaseException) -> None:
        now = monotonic()
        if now < self._quiet_until:
            self._unlogged += 1
            return
        log.warning(
            "dependency unavailable",
            extra={"method": method, "error": repr(error), "similar_calls_not_logged": self._unlogged},
        )
        self._quiet_until = now + self.OUTAGE_LOG_INTERVAL
        self._unlogged = 0


def build_server(
    *,
    host: str,
    port: int,
    service_names: Sequence[str],
    register: Callable[[grpc.aio.Server], None],
    health_servicer: HealthServicer,
    transient: tuple[type[BaseException], ...] = (),
    max_connection_age: float = 0,
    stream_counts: StreamCounts | None = None,
    credentials: grpc.ServerCredentials | None = None,
    own_streams: Collection[str] = (),
    own_stream_budget: int = 0,
) -> tuple[grpc.aio.Server, int]:
    """Create (not start) a server with the given servicers plus health and reflection.

    ``register`` adds the service's own servicers. ``max_connection_age`` (seconds, 0 for none):
    connections older than that are sent GOAWAY, their calls in flight get
    CONNECTION_AGE_GRACE_SECONDS more, and the client reconnects, resolving the server's name
    again, which is how clients of replicas behind one name find new ones. ``stream_counts``: the
    bounds on open Watch and reflection streams (gen/jobqueue/runtime/stream_limits.py; tests pass their own).
    ``credentials``: TLS (gen/jobqueue/runtime/tls.py), else plaintext. ``own_streams``: full method
    names of the service's own server streams (the job service's watches), which it bounds itself, per
    caller, once it knows who calls; they are left out of the anonymous streams' budget, so that no one
    without credentials can crowd them out, and the server's call limit is raised by ``own_stream_budget``,
    the most of them it lets be open at once.
    Returns the server and the port actually bound (useful with ``port=0``).
    """
    streams = stream_counts or StreamCounts(
        total=stream_limits.MAX_STREAMS,
        per_address=stream_limits.MAX_STREAMS_PER_ADDRESS,
        per_connection=stream_limits.MAX_STREAMS_PER_CONNECTION,
    )
    server = grpc.aio.server(
        # Tracing's outermost (none when off), so that a call's span covers the whole of its handling.
        interceptors=[
            *tracing.server_interceptors(),
            ErrorInterceptor(transient),
            StreamLimits(streams, stream_refusal(), exempt=own_streams),
        ],
        # The streams anyone may hold open (health Watch, reflection) have a budget of their own,
        # on top of the calls that do the work: holding them cannot take those calls' slots. So do
        # the service's own streams.
        maximum_concurrent_rpcs=MAX_CALLS_IN_PROGRESS + streams.total + own_stream_budget,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            ("grpc.server.max_pending_requests", MAX_CALLS_WAITING),
            ("grpc.server.max_pending_requests_hard_limit", MAX_CALLS_WAITING),
            *connection_options(max_connection_age),
        ],
    )
    register(server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    return server, listen(server, host, port, credentials)


def listen(server: grpc.aio.Server, host: str, port: int, credentials: grpc.ServerCredentials | None) -> int:
    """Add a listener on ``host:port`` (TLS with ``credentials``, else plaintext); returns the port bound."""
    address = f"{host}:{port}"
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc's way of saying the address is taken or invalid
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen on {address}: is another process using the port?")
    return bound


def stop_signal() -> asyncio.Event:
    """An event set on the first SIGTERM or SIGINT, for a service's graceful stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


# code_pb2 is imported for its side effect of registering google.rpc types with
# the descriptor pool, which grpcurl needs to print error details.
_ = code_pb2

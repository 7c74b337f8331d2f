"""Prometheus metrics: every service's gRPC calls, and the endpoint that serves them.

Each service serves ``/metrics`` over HTTP on METRICS_PORT (0 turns it off)
from a thread of prometheus_client's, so a scrape never waits for the event
loop. The gRPC metrics follow the names of go-grpc-prometheus, which existing
dashboards expect; each service adds its own ``jobqueue_*`` metrics in the
module that does the counting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

import prometheus_client

log = logging.getLogger(__name__)

# No `<name>_created` timestamp series beside every counter: they double what a scrape carries for nothing.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

#: Handling times above a second are outliers for this service; finer buckets where calls really fall.
_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

RPC_HANDLED = prometheus_client.Counter(
    "grpc_server_handled_total",
    "gRPC calls completed by the server, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_SECONDS = prometheus_client.Histogram(
    "grpc_server_handling_seconds",
    "Time the server spent on a gRPC call, from the handler's start to its answer.",
    ["grpc_service", "grpc_method"],
    buckets=_SECONDS_BUCKETS,
)

LIMIT_REFUSALS = prometheus_client.Counter(
    "jobqueue_limit_refusals_total",
    "Calls refused with RESOURCE_EXHAUSTED because a limit was reached, by the reason the caller is given "
    "(TOO_MANY_ATTEMPTS, HASHING_BUSY, TOO_MANY_STREAMS, ...; docs/security.md).",
    ["reason"],
)


def rpc_recorder(full_method: str) -> Callable[[str, float], None]:
    """For ``/package.Service/Method``: a function recording one call's status code name and seconds."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    seconds = RPC_SECONDS.labels(service, method)

    def record(code: str, elapsed: float) -> None:
        RPC_HANDLED.labels(service, method, code).inc()
        seconds.observe(elapsed)

    return record


def serve(host: str, port: int) -> WSGIServer | None:
    """Serve ``/metrics`` on ``host:port`` in a background thread; None when ``port`` is 0 (metrics off)."""
    if port == 0:
        return None
    try:
        server, _ = prometheus_client.start_http_server(port, addr=host)
    except OSError as error:
        raise OSError(f"cannot serve metrics on {host}:{port}: {error.strerror}") from None
    log.info("serving metrics", extra={"port": port, "path": "/metrics"})
    return server


def stop(server: WSGIServer | None) -> None:
    """Stop serving metrics (a no-op when they were off)."""
    if server is not None:
        server.shutdown()
        server.server_close()

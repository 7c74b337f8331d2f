"""Asking a server whether it is SERVING (grpc.health.v1 Health/Check): the one client of every service's health.

The worker's probe of the job service, the scripts and tests that wait for a
service, and the images' HEALTHCHECK all ask through here:

    python -m jobqueue.runtime.health_check HOST:PORT
    python -m jobqueue.runtime.health_check PORT_VARIABLE DEFAULT_PORT

The second form asks 127.0.0.1 on the port the service's own setting names
(falling back to its default), so the probe follows an overridden port. Exit
status 0 while the server answers SERVING, 1 otherwise (the status or error on
stderr). Only grpc and the health messages are imported, so a probe run every
few seconds in a container stays cheap.

Run with the service's environment, the probe follows its TLS too: with
TLS_CERT_FILE set it asks over TLS and verifies the certificate against
TLS_CERT_FILE itself (it trusts exactly the service's own certificate; gRPC
accepts a trusted leaf as the anchor) or TLS_CA_FILE when set, expecting the
first name the certificate carries, since it dials 127.0.0.1, not that name.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

__all__ = [
    "CHECK_METHOD",
    "SERVING",
    "HealthCheck",
    "NotServing",
    "Tls",
    "check",
    "main",
    "status_name",
    "status_of",
    "tls_of",
]

#: How to reach a TLS server: its credentials and channel options (the name its certificate carries).
Tls = tuple[grpc.ChannelCredentials, tuple[tuple[str, str], ...]]

#: The full method name (grpc_health's stubs do not declare HealthStub.Check for the type checker).
CHECK_METHOD = "/grpc.health.v1.Health/Check"
SERVING = health_pb2.HealthCheckResponse.SERVING
#: How long the command-line probe waits for an answer (Docker's HEALTHCHECK --timeout is 5 s).
PROBE_TIMEOUT = 3.0


class NotServing(ConnectionError):
    """Raised by HealthCheck.require_serving when the server answers with a status other than SERVING."""


def status_name(status: int) -> str:
    """The name of a health status (e.g. NOT_SERVING)."""
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


class HealthCheck:
    """Health/Check on an asyncio channel (the caller owns the channel), each call bounded by ``timeout`` seconds.

    The bound is the call's gRPC deadline, which travels to the server, rather than an asyncio.timeout.
    """

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float) -> None:
        self._timeout = timeout
        self._call = channel.unary_unary(
            CHECK_METHOD,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )

    async def status(self, service: str = "") -> int:
        """The status the server reports for ``service`` ("" = the server as a whole); raises grpc.aio.AioRpcError."""
        reply: health_pb2.HealthCheckResponse = await self._call(
            health_pb2.HealthCheckRequest(service=service), timeout=self._timeout
        )
        return reply.status

    async def serving(self, service: str = "") -> bool:
        """Whether the server answers SERVING; False too when it cannot be asked."""
        try:
            return await self.status(service) == SERVING
        except grpc.aio.AioRpcError:
            return False

    async def require_serving(self, service: str = "") -> None:
        """Return if the server answers SERVING; raise NotServing, or grpc.aio.AioRpcError if it cannot be asked."""
        status = await self.status(service)
        if status != SERVING:
            raise NotServing(f"{service or 'the server'} is {status_name(status)}")


def tls_of(environ: Mapping[str, str]) -> Tls | None:
    """How to reach a service run with ``environ`` (None: plaintext, without TLS_CERT_FILE); OSError, ValueError.

    The certificate is verified with TLS_CA_FILE, by default TLS_CERT_FILE itself (trusting exactly
    that certificate), and must carry the first name it names.
    """
    cert_file = environ.get("TLS_CERT_FILE")
    if not cert_file:
        return None
    # Only now: a plaintext probe never pays for parsing certificates.
    from jobqueue.runtime.tls import server_name  # noqa: PLC0415

    chain = Path(cert_file).read_bytes()
    roots = Path(environ.get("TLS_CA_FILE") or cert_file).read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=roots), (
        ("grpc.ssl_target_name_override", server_name(chain)),
    )


def check(address: str, service: str = "", *, timeout: float = PROBE_TIMEOUT, tls: Tls | None = None) -> int:
    """The status the server at ``address`` (host:port) reports for ``service``, blocking; raises grpc.RpcError.

    ``tls``: ask over TLS (``tls_of``), else plaintext.
    """
    with grpc.insecure_channel(address) if tls is None else grpc.secure_channel(address, *tls) as channel:
        call = channel.unary_unary(
            CHECK_METHOD,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        reply: health_pb2.HealthCheckResponse = call(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return reply.status


def status_of(address: str, service: str = "", *, timeout: float = PROBE_TIMEOUT, tls: Tls | None = None) -> int | None:
    """Like check, but None when the server cannot be asked (nothing listens, no answer in time)."""
    try:
        return check(address, service, timeout=timeout, tls=tls)
    except grpc.RpcError:
        return None


def _address(argv: Sequence[str]) -> str:
    if len(argv) == 1 and ":" in argv[0]:
        return argv[0]
    if len(argv) == 2 and argv[1].isdigit():
        variable, default = argv
        return f"127.0.0.1:{os.environ.get(variable) or default}"
    raise SystemExit(
        f"usage: python -m jobqueue.runtime.health_check HOST:PORT | PORT_VARIABLE DEFAULT_PORT (got {list(argv)})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command-line probe (see the module doc): 0 if SERVING, else 1."""
    address = _address(sys.argv[1:] if argv is None else argv)
    try:
        tls = tls_of(os.environ)
    except (OSError, ValueError) as error:
        print(f"health: cannot read the service's certificate: {error}", file=sys.stderr)
        return 1
    try:
        status = check(address, tls=tls)
    except grpc.RpcError as error:
        # Every RpcError grpc raises is also a grpc.Call, but the type stubs do not say so.
        code = getattr(error, "code", lambda: None)()
        hint = " over TLS; is TLS_CA_FILE the CA of TLS_CERT_FILE?" if tls else ""
        print(f"health: {address} cannot be asked ({code.name if code else error!r}){hint}", file=sys.stderr)
        return 1
    if status != SERVING:
        print(f"health: {address} is {status_name(status)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

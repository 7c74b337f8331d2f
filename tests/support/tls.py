"""Certificates for the tests, and TLS-terminating proxies the tests own in front of RabbitMQ and PostgreSQL.

The shared broker and database on this machine speak plaintext. A ``TlsProxy``
listens on 127.0.0.1 with a certificate of the test's own CA, ends TLS, and
forwards the plaintext to the real server, so a service configured with
``amqps://`` or ``sslmode=verify-full`` really negotiates and verifies TLS.
PostgreSQL does not start with a TLS handshake: its client first sends an
SSLRequest (8 bytes: length 8, code 80877103), which the proxy answers ``S``
before the handshake, as a PostgreSQL server with TLS does.

``production_env`` is what APP_ENV=production asks for beyond the secrets, for
a test about one of the other refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.support.proxy import TcpProxy

if TYPE_CHECKING:
    # scripts/ is not a package: mypy (given scripts/certs.py) knows the file as the top-level module
    # `certs`, and importing it as `scripts.certs` would make it see one file under two names.
    from certs import Authority
else:
    from scripts.certs import Authority

__all__ = ["Authority", "Certificates", "TlsProxy", "make_certificates", "production_env"]

#: The code of PostgreSQL's SSLRequest (protocol 1234.5679).
SSL_REQUEST = struct.pack("!ii", 8, 80877103)
#: A password that is no default anywhere; the test database trusts local connections, so any is accepted.
PRODUCTION_PASSWORD = "not-a-default-3kQ9"
#: Settings that satisfy every production refusal but the secrets', for tests of settings alone (the files are
#: only named: loading settings reads none).
PRODUCTION_SETTINGS = {
    "APP_ENV": "production",
    "TLS_CERT_FILE": "server.pem",
    "TLS_KEY_FILE": "server.key",
    "JOB_SERVICE_CA_FILE": "ca.pem",
    "DATABASE_URL": f"postgresql://jobqueue:{PRODUCTION_PASSWORD}@db.example:5432/jobqueue",
    "RABBITMQ_URL": f"amqps://jobqueue:{PRODUCTION_PASSWORD}@mq.example:5671/?cafile=ca.pem",
}


@dataclass(frozen=True)
class Certificates:
    """Files of one test CA: a server certificate for localhost and 127.0.0.1, and a worker's client certificate."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def worker_cert(self) -> Path:
        return self.directory / "worker.pem"

    @property
    def worker_key(self) -> Path:
        return self.directory / "worker.key"

    def server_env(self) -> dict[str, str]:
        """The settings of a gRPC listener serving this CA's server certificate."""
        return {
            "TLS_CERT_FILE": str(self.server_cert),
            "TLS_KEY_FILE": str(self.server_key),
            "TLS_CA_FILE": str(self.ca),
        }

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context with the server certificate (for a proxy)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        return context


def make_certificates(directory: Path, *, names: tuple[str, ...] = ("localhost",)) -> Certificates:
    """A new CA in ``directory`` (made if missing), its server certificate for ``names`` and 127.0.0.1, a worker's."""
    directory.mkdir(parents=True, exist_ok=True)
    authority = Authority.in_directory(directory)
    authority.server(names, ["127.0.0.1"]).write(directory, "server")
    authority.client("worker").write(directory, "worker")
    return Certificates(directory)


@pytest.fixture(scope="module", name="tls_certificates")
def tls_certificates_fixture(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA of the test module's own, its server certificate for localhost and 127.0.0.1, and a worker's."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with its user and password replaced."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:{password}@{host}").geturl()


def production_env(certs: Certificates, *, database_url: str, rabbitmq_url: str) -> dict[str, str]:
    """APP_ENV=production with TLS on every listener and to the job service, and credentials of its own."""
    return {
        "APP_ENV": "production",
        **certs.server_env(),
        "JOB_SERVICE_CA_FILE": str(certs.ca),
        "DATABASE_URL": with_credentials(database_url, "postgres", PRODUCTION_PASSWORD),
        "RABBITMQ_URL": with_credentials(rabbitmq_url, "jobqueue", PRODUCTION_PASSWORD),
    }


class TlsProxy(TcpProxy):
    """Ends TLS on 127.0.0.1:<port> and forwards the plaintext to ``target`` (``postgres``: after its SSLRequest)."""

    def __init__(self, target_host: str, target_port: int, context: ssl.SSLContext, *, postgres: bool = False) -> None:
        super().__init__(target_host, target_port)
        self._context = context
        self._postgres = postgres
        #: Connections whose TLS handshake completed (the services' own connections, once verified).
        self.handshakes = 0

    def start(self) -> int:
        """Start listening on a free port; returns it."""
        self._thread.start()
        # PostgreSQL negotiates TLS inside its protocol; everything else starts with the handshake.
        tls = None if self._postgres else self._context
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=tls), self._loop
        ).result()
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._postgres:
            try:
                request = await reader.readexactly(len(SSL_REQUEST))
                if request != SSL_REQUEST:
                    writer.transport.abort()  # a client asking for plaintext: this proxy serves TLS only
                    return
                writer.write(b"S")
                await writer.drain()
                await writer.start_tls(self._context)
            except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
                writer.transport.abort()  # the client refused our certificate, or went away
                return
        self.handshakes += 1
        # Stopping the proxy cancels this task; asyncio's stream callback would log that as an error.
        with contextlib.suppress(asyncio.CancelledError):
            await self._handle(reader, writer)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, RuntimeError):
            # TLS cannot half-close: when one side ends, so does the connection (PostgreSQL's client waits
            # for the server to close after its Terminate message).
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()

"""TLS for the gRPC servers and their clients: PEM files read once, at start.

Every service's gRPC listener (auth, jobs, the worker's health server) serves
TLS when given ``TLS_CERT_FILE`` and ``TLS_KEY_FILE`` (both or neither), and
plaintext otherwise; ``APP_ENV=production`` refuses to start without them.
The files are read when the service starts and never again: a renewed
certificate takes a restart (each service drains its calls on SIGTERM).

Workers may also be told apart by a client certificate (mutual TLS). gRPC's
Python server either requires a verified client certificate on a port or never
asks for one (``require_client_auth=False`` does not even request it), so the
job service takes worker certificates on a port of its own, which requires
them; ``peer_certified`` then tells whether a call came with one.

Clients build their credentials here too (the worker's channel to the job
service, the health probe); ``jobqueue.client`` users call
``jobqueue.client.tls_credentials``, which does the same for callers without
this repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from jobqueue.runtime.settings import ServiceSettings, SettingsError, setting

__all__ = ["TlsServerSettings", "channel_credentials", "check_pair", "peer_certified", "read_pem", "server_name"]

#: The auth_context key gRPC sets only for a peer that presented a certificate it verified.
PEER_CERTIFICATE = "x509_pem_cert"


@dataclass(frozen=True)
class TlsServerSettings(ServiceSettings):
    """The settings of a service whose gRPC listener serves TLS when given a certificate."""

    tls_cert_file: str = setting(
        "",
        "PEM certificate (chain, leaf first) of the gRPC listener; with TLS_KEY_FILE it serves TLS only,"
        " without both plaintext (refused when APP_ENV=production). Read at start: a new one needs a restart",
    )
    tls_key_file: str = setting("", "PEM private key of TLS_CERT_FILE")
    tls_ca_file: str = setting(
        "",
        "PEM certificate(s) the health probe (jobqueue.runtime.health_check, the HEALTHCHECK) verifies"
        " this service's certificate with; default: TLS_CERT_FILE itself, so it trusts exactly that certificate",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise SettingsError("set TLS_CERT_FILE and TLS_KEY_FILE together, or neither (plaintext)")
        if self.production and not self.tls_cert_file:
            raise SettingsError(
                "TLS_CERT_FILE and TLS_KEY_FILE must be set when APP_ENV=production: the listener would"
                " carry passwords and tokens in clear text (python -m scripts.certs makes a local CA)"
            )

    @property
    def tls(self) -> bool:
        """Whether the gRPC listener serves TLS."""
        return bool(self.tls_cert_file)

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """The listener's credentials (None: plaintext); SettingsError for a file that is unreadable or does not fit."""
        if not self.tls:
            return None
        return _server_credentials(self.tls_cert_file, self.tls_key_file, client_ca_file="")

    def mutual_credentials(self, client_ca_file: str, variable: str) -> grpc.ServerCredentials:
        """Credentials of a listener that requires a client certificate signed by the CA in ``client_ca_file``."""
        if not self.tls:
            raise SettingsError(f"{variable} needs TLS_CERT_FILE and TLS_KEY_FILE (mutual TLS is TLS first)")
        return _server_credentials(self.tls_cert_file, self.tls_key_file, client_ca_file=client_ca_file, ca=variable)


def _server_credentials(cert_file: str, key_file: str, *, client_ca_file: str, ca: str = "") -> grpc.ServerCredentials:
    chain = read_pem(cert_file, "TLS_CERT_FILE")
    key = read_pem(key_file, "TLS_KEY_FILE")
    check_pair(chain, key)
    if not client_ca_file:
        return grpc.ssl_server_credentials([(key, chain)])
    roots = read_pem(client_ca_file, ca)
    certificates(roots, ca)
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=roots, require_client_auth=True)


def read_pem(path: str, variable: str) -> bytes:
    """The bytes of the PEM file ``variable`` names; SettingsError naming both if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise SettingsError(f"{variable}={path!r} cannot be read: {error.strerror}") from None


def certificates(pem: bytes, variable: str) -> list[x509.Certificate]:
    """The PEM certificates in ``pem``; SettingsError naming ``variable`` if there are none or one does not parse."""
    try:
        found = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise SettingsError(f"{variable} holds no PEM certificate, or one that does not parse") from None
    return found


def check_pair(chain: bytes, key: bytes) -> None:
    """Raise SettingsError unless ``key`` is the private key of the first certificate in ``chain``.

    gRPC would otherwise fail at its first handshake, with an error naming neither file.
    """
    leaf = certificates(chain, "TLS_CERT_FILE")[0]
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise SettingsError("TLS_KEY_FILE holds no unencrypted PEM private key") from None
    encoding, form = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(encoding, form) != leaf.public_key().public_bytes(encoding, form):
        raise SettingsError("TLS_KEY_FILE is not the key of the (first) certificate in TLS_CERT_FILE")


def server_name(chain: bytes) -> str:
    """A name the first certificate in ``chain`` is valid for: its first DNS name, else IP address, else CN."""
    leaf = certificates(chain, "TLS_CERT_FILE")[0]
    try:
        alternatives = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        alternatives = x509.SubjectAlternativeName([])
    for kind in (x509.DNSName, x509.IPAddress):
        names: list[Any] = alternatives.get_values_for_type(kind)
        if names:
            return str(names[0])
    common = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(common[0].value) if common else ""


@dataclass(frozen=True)
class ClientFiles:
    """What a client of a TLS server reads: the CA to verify it with, and an optional certificate of its own."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    #: Verify the server with the system's CAs (when ``ca_file`` is empty).
    system_roots: bool = False


def channel_credentials(files: ClientFiles, variables: ClientFiles) -> grpc.ChannelCredentials | None:
    """Credentials for a channel (None: plaintext); ``variables`` names each field's setting for errors."""
    if bool(files.cert_file) != bool(files.key_file):
        raise SettingsError(f"set {variables.cert_file} and {variables.key_file} together, or neither")
    if not (files.ca_file or files.system_roots):
        if files.cert_file:
            raise SettingsError(f"{variables.cert_file} needs TLS: set {variables.ca_file}")
        return None
    roots = None
    if files.ca_file:
        roots = read_pem(files.ca_file, variables.ca_file)
        certificates(roots, variables.ca_file)
    if not files.cert_file:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    chain = read_pem(files.cert_file, variables.cert_file)
    key = read_pem(files.key_file, variables.key_file)
    try:
        check_pair(chain, key)
    except SettingsError as error:
        message = str(error).replace("TLS_KEY_FILE", variables.key_file).replace("TLS_CERT_FILE", variables.cert_file)
        raise SettingsError(message) from None
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)


def peer_certified(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    """Whether the caller presented a client certificate gRPC verified (only a mutual-TLS port asks for one)."""
    return bool(context.auth_context().get(PEER_CERTIFICATE))

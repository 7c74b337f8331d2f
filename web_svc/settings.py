"""The dashboard's configuration, read once from the environment at start (``python -m web_svc --help``)."""

from __future__ import annotations

import secrets as _random
from dataclasses import dataclass
from pathlib import Path

import grpc

from jobqueue.runtime import secrets
from jobqueue.runtime.settings import ServiceSettings, SettingsError, setting
from jobqueue.runtime.tls import ClientFiles, channel_credentials, check_pair, read_pem

#: The shortest SESSION_SECRET accepted: it signs the login form's CSRF cookie.
MIN_SECRET_LENGTH = 32
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class WebSettings(ServiceSettings):
    """Everything the dashboard reads from its environment; invalid combinations raise SettingsError."""

    web_host: str = setting("0.0.0.0", "address the HTTP server listens on")
    web_port: int = setting(5080, "port the HTTP server listens on", port=True)
    auth_service_addr: str = setting("127.0.0.1:5001", "the auth service (host:port), for Login")
    job_service_addr: str = setting("127.0.0.1:5002", "the job service (host:port, or a gRPC target of replicas)")
    backend_ca_file: str = setting(
        "",
        "PEM certificate of the CA that signed the auth and job services' certificates: the dashboard then talks"
        " TLS to both and verifies them (APP_ENV=production needs this or BACKEND_TLS)",
    )
    backend_tls: bool = setting(
        False, "true: TLS to the auth and job services, verified with the system's CAs (when BACKEND_CA_FILE is empty)"
    )
    web_tls_cert_file: str = setting(
        "",
        "PEM certificate (chain) the dashboard serves HTTPS with, with WEB_TLS_KEY_FILE; without both, plain HTTP"
        " (APP_ENV=production then needs COOKIE_SECURE=true: a TLS proxy in front)",
    )
    web_tls_key_file: str = setting("", "PEM private key of WEB_TLS_CERT_FILE")
    cookie_secure: bool = setting(
        False,
        "mark the cookies Secure (sent over HTTPS only): set it when a TLS proxy fronts the dashboard; always on"
        " with WEB_TLS_CERT_FILE",
    )
    session_secret: str = setting(
        "",
        "key that signs the login form's CSRF cookie (inline; prefer SESSION_SECRET_FILE); empty: a random one per"
        " start (a login form opened before a restart must then be reloaded)",
        secret=True,
    )
    session_secret_file: str = setting("", "path of a file holding SESSION_SECRET")
    session_idle_seconds: int = setting(1800, "a session unused this long is forgotten (it ends at its token's expiry)")
    max_sessions: int = setting(10_000, "sessions kept at most; beyond, the least recently used is forgotten")
    streams_per_session: int = setting(4, "live-update streams one session may hold open at once")
    streams_per_address: int = setting(16, "live-update streams one client address may hold open at once")
    max_streams: int = setting(1000, "live-update streams open at once in all (each holds a watch on the job service)")
    trust_x_forwarded_for: bool = setting(
        False,
        "true behind a proxy that appends the client's address to X-Forwarded-For: the limits per address then"
        " count the last address there, not the proxy's (never set it without such a proxy: clients could pick)",
    )
    logins_per_minute_per_address: int = setting(
        20, "login attempts one browser address may make a minute (the auth service sees only the dashboard's)"
    )
    page_size: int = setting(20, "jobs per page")
    api_docs_file: str = setting(
        str(ROOT / "docs" / "api.md"), "the API reference the dashboard serves read-only at /docs/api"
    )

    def validate(self) -> None:
        """The dashboard's own checks."""
        if bool(self.web_tls_cert_file) != bool(self.web_tls_key_file):
            raise SettingsError("set WEB_TLS_CERT_FILE and WEB_TLS_KEY_FILE together, or neither (plain HTTP)")
        for name in (
            "session_idle_seconds",
            "max_sessions",
            "streams_per_session",
            "streams_per_address",
            "max_streams",
            "logins_per_minute_per_address",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name.upper()}={getattr(self, name)} must be at least 1")
        if not 1 <= self.page_size <= 500:
            raise SettingsError(f"PAGE_SIZE={self.page_size} must be between 1 and 500 (ListJobs' limit)")
        if self.production and not (self.web_tls_cert_file or self.cookie_secure):
            raise SettingsError(
                "APP_ENV=production needs WEB_TLS_CERT_FILE and WEB_TLS_KEY_FILE, or COOKIE_SECURE=true behind a TLS"
                " proxy: the session cookie must never travel in clear text"
            )
        if self.production and not (self.backend_ca_file or self.backend_tls):
            raise SettingsError(
                "APP_ENV=production needs BACKEND_CA_FILE or BACKEND_TLS=true: passwords and tokens go to the services"
            )

    @property
    def https(self) -> bool:
        """Whether the dashboard itself serves HTTPS."""
        return bool(self.web_tls_cert_file)

    @property
    def secure_cookies(self) -> bool:
        """Whether the cookies carry the Secure attribute."""
        return self.https or self.cookie_secure

    def backend_credentials(self) -> grpc.ChannelCredentials | None:
        """The credentials of the channels to auth and jobs (None: plaintext); reads the CA file, SettingsError."""
        return channel_credentials(
            ClientFiles(self.backend_ca_file, system_roots=self.backend_tls),
            ClientFiles("BACKEND_CA_FILE", "", ""),
        )

    def tls_files(self) -> tuple[bytes, bytes] | None:
        """The HTTPS certificate chain and key, checked to match (None: plain HTTP); SettingsError."""
        if not self.https:
            return None
        chain = read_pem(self.web_tls_cert_file, "WEB_TLS_CERT_FILE")
        key = read_pem(self.web_tls_key_file, "WEB_TLS_KEY_FILE")
        check_pair(chain, key)
        return chain, key

    def signing_secret(self) -> bytes:
        """SESSION_SECRET's bytes, else its file's, else a random key for this run only."""
        if self.session_secret:
            value = self.session_secret.encode()
        elif self.session_secret_file:
            value = secrets.read(self.session_secret_file, "SESSION_SECRET_FILE").strip()
        else:
            return _random.token_bytes(32)
        if len(value) < MIN_SECRET_LENGTH:
            raise SettingsError(f"SESSION_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        return value

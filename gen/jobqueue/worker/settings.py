"""A worker's configuration, read once from the environment at start (``python -m jobqueue.worker --help`` lists it)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from jobqueue.runtime import rabbitmq, secrets
from jobqueue.runtime.settings import SettingsError, setting
from jobqueue.runtime.tls import ClientFiles, TlsServerSettings, channel_credentials

#: Longest WORKER_ID the job service accepts (UpdateJobRequest.worker_id).
MAX_WORKER_ID_CHARS = 200


@dataclass(frozen=True)
class Settings(TlsServerSettings):
    """Every setting of a worker, with its default and meaning."""

    rabbitmq_url: str = setting(
        "amqp://guest:guest@127.0.0.1:5672/",
        "the RabbitMQ broker to consume from; amqps://...?cafile=CA.pem verifies its certificate; "
        "APP_ENV=production needs a user (not guest) and password of its own",
        credentials=True,
    )
    rabbitmq_queue: str = setting(
        "job_queue",
        "the job queue's name: each job type's jobs wait in <queue>.type.<type>; rejected messages go to <queue>.dead",
    )
    job_types: str = setting(
        "",
        "the job types this worker serves, comma-separated (fibonacci_calc or reverse_string,uppercase_text): "
        "it consumes only their queues, so a pool of workers can be given a type of its own; empty: all of its types",
    )
    prefetch_count: int = setting(
        100, "how many unacknowledged messages this worker holds at once, from all of its job types' queues"
    )
    job_service_addr: str = setting(
        "127.0.0.1:5002",
        "the job service, which takes UpdateJob reports: host:port, or a gRPC target naming several replicas "
        "(dns:///job-service:5002, ipv4:10.0.0.1:5002,10.0.0.2:5002), which share the calls round robin; "
        "with client certificates, the job service's JOB_WORKER_PORT",
    )
    job_service_ca_file: str = setting(
        "",
        "PEM certificate of the CA that signed the job service's certificate: the worker then talks TLS to it "
        "and verifies it (APP_ENV=production needs this or JOB_SERVICE_TLS)",
    )
    job_service_tls: bool = setting(
        False, "true: TLS to the job service, verified with the system's CAs (when JOB_SERVICE_CA_FILE is empty)"
    )
    job_service_tls_name: str = setting(
        "",
        "the name the job service's certificate must carry, when not the host in JOB_SERVICE_ADDR (an ipv4: list)",
    )
    worker_tls_cert_file: str = setting(
        "",
        "PEM client certificate this worker presents to the job service (mutual TLS; its TLS_CLIENT_CA_FILE must "
        "have signed it), with WORKER_TLS_KEY_FILE",
    )
    worker_tls_key_file: str = setting("", "PEM private key of WORKER_TLS_CERT_FILE")
    worker_token: str = setting(
        "", "the worker token sent to the job service (inline; prefer WORKER_TOKEN_FILE)", secret=True
    )
    worker_token_file: str = setting(
        "",
        "path of a file holding the worker token; during a rotation it may hold several, one per line, "
        "and the worker sends the last (the newest)",
    )
    worker_health_host: str = setting("0.0.0.0", "interface of the health/reflection gRPC server")
    worker_health_port: int = setting(5003, "port of the health/reflection gRPC server", port=True)
    metrics_port: int = setting(
        0, "port of the Prometheus /metrics endpoint (on WORKER_HEALTH_HOST); 0: off", port=True
    )
    # One process by default: fibonacci_calc, the only heavy built-in handler, takes a few
    # milliseconds even at the largest n, so one process keeps up with what one event loop can feed
    # it, and on the 2-core machine the product is sized for the other core stays with the event
    # loop (AMQP and gRPC). Throughput grows by running more worker copies, each with its own
    # handler processes.
    handler_processes: int = setting(
        1,
        "processes for the plain (CPU-bound, not async) handlers, one job each at a time; 1 leaves a core to "
        "the event loop: scale with more worker copies instead",
    )
    progress_interval_seconds: float = setting(
        1.0,
        "the fewest seconds between two progress reports of one job (job.progress): those in between are "
        "coalesced, the latest winning",
    )
    worker_id: str = setting(
        "",
        "how this worker names itself to the job service, in every report (each attempt of a job shows it: "
        "GetJob's JOB_VIEW_FULL) and in its log lines: at most 200 printable characters; "
        "empty: <hostname>/<pid>, which tells copies apart even on one host",
    )
    report_timeout_seconds: float = setting(5.0, "deadline of each UpdateJob call")
    shutdown_grace_seconds: float = setting(
        30.0, "on SIGTERM, how long in-flight jobs may take to finish before they are handed back unacknowledged"
    )
    stop_report_retry_seconds: float = setting(
        10.0,
        "on SIGTERM, how long an undeliverable report is retried before its message is handed back "
        "(keep it below SHUTDOWN_GRACE_SECONDS)",
    )

    def validate(self) -> None:
        """The worker's own checks (APP_ENV, LOG_LEVEL and ports are checked for every service)."""
        for name in ("prefetch_count", "handler_processes"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name.upper()} must be at least 1")
        for name in (
            "report_timeout_seconds",
            "shutdown_grace_seconds",
            "stop_report_retry_seconds",
            "progress_interval_seconds",
        ):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name.upper()} must be a positive number of seconds")
        if self.production and not (self.job_service_ca_file or self.job_service_tls):
            raise SettingsError(
                "JOB_SERVICE_CA_FILE (or JOB_SERVICE_TLS=true) must be set when APP_ENV=production: the worker "
                "token would travel to the job service in clear text"
            )
        if bool(self.worker_tls_cert_file) != bool(self.worker_tls_key_file):
            raise SettingsError("set WORKER_TLS_CERT_FILE and WORKER_TLS_KEY_FILE together, or neither")
        if self.worker_tls_cert_file and not (self.job_service_ca_file or self.job_service_tls):
            raise SettingsError("WORKER_TLS_CERT_FILE needs TLS to the job service: set JOB_SERVICE_CA_FILE")
        rabbitmq.check_url(self.rabbitmq_url, "RABBITMQ_URL", production=self.production)
        # The job service refuses a report whose worker_id breaks these rules: better said once, at start.
        if len(self.worker_id) > MAX_WORKER_ID_CHARS or not self.worker_id.isprintable():
            raise SettingsError(f"WORKER_ID must be at most {MAX_WORKER_ID_CHARS} printable characters")

    def identity(self) -> str:
        """The worker id to report and log: WORKER_ID, else <hostname>/<pid> (cut to fit the job service's limit)."""
        return self.worker_id or f"{socket.gethostname()}/{os.getpid()}"[-MAX_WORKER_ID_CHARS:]

    def served(self, names: Iterable[str]) -> list[str]:
        """Which of the worker's job types ``names`` it serves (JOB_TYPES; all of them if empty), sorted.

        Raises SettingsError if it has none, or for a name in JOB_TYPES it does not have, which
        would otherwise leave that type's jobs waiting with no one told.
        """
        known = set(names)
        if not known:
            raise SettingsError("the worker has no job types: decorate a handler with @worker.job_type(...)")
        chosen = {name.strip() for name in self.job_types.split(",")} - {""}
        if unknown := sorted(chosen - known):
            raise SettingsError(
                f"JOB_TYPES names job types this worker does not have: {', '.join(unknown)} "
                f"(it has {', '.join(sorted(known))})"
            )
        return sorted(chosen or known)

    def job_service_credentials(self) -> grpc.ChannelCredentials | None:
        """The credentials of the channel to the job service (None: plaintext); reads the files, SettingsError."""
        return channel_credentials(
            ClientFiles(
                self.job_service_ca_file, self.worker_tls_cert_file, self.worker_tls_key_file, self.job_service_tls
            ),
            ClientFiles("JOB_SERVICE_CA_FILE", "WORKER_TLS_CERT_FILE", "WORKER_TLS_KEY_FILE"),
        )

    def token(self) -> bytes:
        """The worker token to present: the last one given (the newest, during a rotation), else the dev secret.

        Raises SettingsError for a token that cannot travel as gRPC metadata, or,
        with APP_ENV=production, one too short to resist guessing.
        """
        return secrets.worker_tokens(self)[-1]

"""Configuration of the job service, read once at start from the environment."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.rates import Rate
from job_svc.auth import REREAD_SECONDS
from job_svc.limits import JobLimits
from job_svc.rules import MAX_BATCH
from jobqueue.runtime import rabbitmq, secrets
from jobqueue.runtime.settings import SettingsError, setting
from jobqueue.runtime.tls import TlsServerSettings

#: The most clock skew JWT_LEEWAY_SECONDS may allow: more would keep an expired token alive for minutes.
MAX_LEEWAY_SECONDS = 300


@dataclass(frozen=True)
class Settings(TlsServerSettings):
    """Every setting of the job service; `python -m job_svc --help` lists them."""

    job_host: str = setting("0.0.0.0", "Interface the gRPC server listens on.")
    job_port: int = setting(5002, "Port of the gRPC server (JobService, health, reflection).", port=True)
    tls_client_ca_file: str = setting(
        "",
        "PEM certificate of the CA that signs the workers' client certificates. When set (with TLS_CERT_FILE),"
        " the service also listens on JOB_WORKER_PORT, where a client certificate it signed is required, and"
        " UpdateJob and UpdateJobs are refused (UNAUTHENTICATED) on any connection without one.",
    )
    job_worker_port: int = setting(
        5012,
        "With TLS_CLIENT_CA_FILE: the port (on JOB_HOST) for workers, mutual TLS only; point the workers'"
        " JOB_SERVICE_ADDR here. Unused without TLS_CLIENT_CA_FILE.",
        port=True,
    )
    metrics_port: int = setting(0, "Port of the Prometheus /metrics endpoint (on JOB_HOST); 0 turns it off.", port=True)
    job_count_seconds: float = setting(
        15.0, "With METRICS_PORT on: how often the QUEUED, RUNNING and FAILED job counts and the queue gauges are read."
    )
    finished_count_seconds: float = setting(
        300.0, "With METRICS_PORT on: how often COMPLETED and CANCELLED jobs are counted (a scan of the jobs table)."
    )
    database_url: str = setting(
        "postgresql://jobqueue_jobs@127.0.0.1:5432/jobqueue",
        "PostgreSQL holding jobs, as the job service's own role (migrations/roles.py);"
        " ?sslmode=verify-full&sslrootcert=CA.pem verifies its certificate. APP_ENV=production needs a password"
        " (not a default one).",
        credentials=True,
    )
    db_pool_size: int = setting(10, "Most PostgreSQL connections held at once.")
    rabbitmq_url: str = setting(
        "amqp://guest:guest@127.0.0.1:5672/",
        "RabbitMQ the relay publishes jobs to; amqps://...?cafile=CA.pem verifies its certificate."
        " APP_ENV=production needs a user (not guest) and password of its own.",
        credentials=True,
    )
    rabbitmq_queue: str = setting("job_queue", "Queue the workers consume (dead letters go to <queue>.dead).")
    outbox_batch_size: int = setting(500, "Most outbox rows the relay publishes in one round.")
    outbox_poll_seconds: float = setting(1.0, "How often the relay looks for rows nobody woke it for.")
    retry_base_seconds: float = setting(1.0, "Wait before the 2nd attempt of a failed job; doubles each time.")
    retry_max_seconds: float = setting(300.0, "Longest wait between attempts.")
    lease_grace_seconds: float = setting(
        10.0, "How long past a job's timeout a silent worker keeps it before it is taken back and retried."
    )
    shutdown_grace_seconds: float = setting(10.0, "On SIGTERM, how long in-flight calls may take to finish.")
    max_connection_age_seconds: float = setting(
        300.0,
        "A client connection older than this is asked to reconnect (HTTP/2 GOAWAY; its calls in flight get 30 s"
        " more), so clients that reach the replicas through one name (dns:///...) find replicas added since;"
        " 0 keeps connections for ever.",
    )
    jwt_public_key: str = setting("", "PEM public key verifying access tokens (or JWT_PUBLIC_KEY_FILE).")
    jwt_public_key_file: str = setting(
        "",
        "File holding the PEM public key, or several one after another (all trusted, each known by its JWK"
        " thumbprint, the `kid` auth writes into its tokens); read again like JWT_PUBLIC_KEYS_DIR.",
    )
    jwt_public_keys_dir: str = setting(
        "",
        "Directory of PEM public key files, one key per file, all trusted (instead of JWT_PUBLIC_KEY or its file);"
        f" read again every {REREAD_SECONDS:g} s and when a token names a key not seen yet, so keys are added and"
        " retired without a restart.",
    )
    jwt_leeway_seconds: int = setting(
        30,
        f"Clock skew allowed between the auth and job hosts (0..{MAX_LEEWAY_SECONDS}): a token is accepted this"
        " long before its `iat`/`nbf` and after its `exp`.",
    )
    jwt_issuer: str = setting("jobqueue-auth", "Required `iss` claim of access tokens.")
    jwt_audience: str = setting("jobqueue", "Required `aud` claim of access tokens.")
    worker_token: str = setting("", "Secret the workers present to call UpdateJob (or WORKER_TOKEN_FILE).", secret=True)
    worker_token_file: str = setting(
        "",
        "File holding the worker token, or several, one per line (any is accepted, so a new one can be added"
        f" before the workers switch to it); read again every {REREAD_SECONDS:g} s.",
    )
    jobs_per_second_per_user: int = setting(
        200,
        "Jobs one user may submit a second, in CreateJob and BatchCreateJobs (a batch of N counts N), per job"
        " service process; beyond: RESOURCE_EXHAUSTED with RetryInfo. 0 turns the limit off.",
    )
    job_burst_per_user: int = setting(
        4000,
        f"Jobs one user may submit at once, above JOBS_PER_SECOND_PER_USER (at least {MAX_BATCH}, a full"
        " BatchCreateJobs).",
    )
    high_priority_jobs_per_second_per_user: int = setting(
        10,
        "HIGH priority jobs one user may submit a second (on top of, and counted in, JOBS_PER_SECOND_PER_USER),"
        " per process. 0 turns the limit off.",
    )
    high_priority_burst_per_user: int = setting(
        100, "HIGH priority jobs one user may submit at once; a batch holding more is refused (INVALID_ARGUMENT)."
    )
    max_unfinished_jobs_per_user: int = setting(
        10000,
        "Most QUEUED and RUNNING jobs one user may have: checked on a per-process estimate far from it and"
        " exactly, in PostgreSQL, near it (docs/security.md has the arithmetic across replicas);"
        " beyond: RESOURCE_EXHAUSTED with RetryInfo. 0 turns the cap off.",
    )
    max_watches_per_user: int = setting(
        20,
        "WatchJob and WatchJobs streams one user may hold open at once, per job service process; beyond:"
        " RESOURCE_EXHAUSTED with RetryInfo.",
    )
    max_watches: int = setting(
        2000,
        "WatchJob and WatchJobs streams all users together may hold open at once, per job service process;"
        " beyond: RESOURCE_EXHAUSTED. They are counted apart from the calls that do the work (MAX_CALLS_IN_PROGRESS).",
    )
    max_watch_backlog: int = setting(
        1000,
        "Changed jobs a WatchJobs reader may leave unread (its latest state each) before its stream ends ABORTED"
        " (WATCH_FELL_BEHIND); the memory one slow reader may hold.",
    )
    job_service_replicas: int = setting(
        2,
        "How many job-service processes share the database, at most: the cap on unfinished jobs leaves room for"
        " what the others may accept, so it is exact up to this many (more room also means more exact checks).",
    )

    def validate(self) -> None:
        """The job service's own checks (APP_ENV, LOG_LEVEL and ports are checked for every service)."""
        for name in ("job_count_seconds", "finished_count_seconds"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name.upper()} must be a positive number of seconds")
        if not self.max_connection_age_seconds >= 0:
            raise SettingsError("MAX_CONNECTION_AGE_SECONDS must be 0 (no limit) or a number of seconds")
        if not 0 <= self.jwt_leeway_seconds <= MAX_LEEWAY_SECONDS:
            raise SettingsError(
                f"JWT_LEEWAY_SECONDS={self.jwt_leeway_seconds} must be between 0 and {MAX_LEEWAY_SECONDS}"
            )
        if self.jwt_public_keys_dir and (self.jwt_public_key or self.jwt_public_key_file):
            # Keys from two places would make retiring one a matter of remembering both.
            raise SettingsError("set JWT_PUBLIC_KEYS_DIR or JWT_PUBLIC_KEY(_FILE), not both")
        for name in (
            "jobs_per_second_per_user",
            "high_priority_jobs_per_second_per_user",
            "max_unfinished_jobs_per_user",
        ):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name.upper()}={getattr(self, name)} must be 0 (off) or more")
        for name in ("job_service_replicas", "max_watches_per_user", "max_watches", "max_watch_backlog"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name.upper()}={getattr(self, name)} must be at least 1")
        if self.jobs_per_second_per_user and self.job_burst_per_user < MAX_BATCH:
            # A smaller burst would refuse every full BatchCreateJobs, however slowly it was sent.
            raise SettingsError(f"JOB_BURST_PER_USER={self.job_burst_per_user} must be at least {MAX_BATCH}")
        if self.high_priority_jobs_per_second_per_user and self.high_priority_burst_per_user < 1:
            raise SettingsError(f"HIGH_PRIORITY_BURST_PER_USER={self.high_priority_burst_per_user} must be at least 1")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise SettingsError("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE (mutual TLS is TLS first)")
        rabbitmq.check_url(self.rabbitmq_url, "RABBITMQ_URL", production=self.production)

    @property
    def worker_certificates(self) -> bool:
        """Whether workers must present a client certificate (TLS_CLIENT_CA_FILE), on JOB_WORKER_PORT."""
        return bool(self.tls_client_ca_file)

    def worker_credentials(self) -> grpc.ServerCredentials:
        """The credentials of the workers' port: this service's certificate, and theirs required."""
        return self.mutual_credentials(self.tls_client_ca_file, "TLS_CLIENT_CA_FILE")

    def job_limits(self) -> JobLimits:
        """The per-user limits on CreateJob and BatchCreateJobs these settings give."""
        rate, high = self.jobs_per_second_per_user, self.high_priority_jobs_per_second_per_user
        return JobLimits(
            rate=Rate(rate, 1, burst=self.job_burst_per_user) if rate else None,
            high_rate=Rate(high, 1, burst=self.high_priority_burst_per_user) if high else None,
            max_unfinished=self.max_unfinished_jobs_per_user,
            other_replicas=self.job_service_replicas - 1,
        )

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """The keys that verify access tokens, by key id; called at start and again while the service runs.

        From JWT_PUBLIC_KEY (else its file), or every file in JWT_PUBLIC_KEYS_DIR,
        else (outside production) the dev key. Raises SettingsError, naming the
        file, for one that cannot be read or holds anything but Ed25519 public
        keys, and when no key is found at all.
        """
        if self.production and not (self.jwt_public_key or self.jwt_public_key_file or self.jwt_public_keys_dir):
            raise SettingsError(
                "JWT_PUBLIC_KEY, JWT_PUBLIC_KEY_FILE or JWT_PUBLIC_KEYS_DIR must be set when APP_ENV=production"
            )
        if not self.jwt_public_keys_dir:
            return secrets.public_keys(
                secrets.of(self, "JWT_PUBLIC_KEY", secrets.PUBLIC_KEY), secrets.origin(self, "JWT_PUBLIC_KEY")
            )
        keys: dict[str, Ed25519PublicKey] = {}
        for path in secrets.key_files(self.jwt_public_keys_dir, "JWT_PUBLIC_KEYS_DIR"):
            source = f"{path} (in JWT_PUBLIC_KEYS_DIR)"
            keys.update(secrets.public_keys(secrets.read(path, "JWT_PUBLIC_KEYS_DIR file"), source))
        if not keys:
            raise SettingsError(f"JWT_PUBLIC_KEYS_DIR={self.jwt_public_keys_dir!r} holds no key file")
        return keys

    def worker_tokens(self) -> frozenset[bytes]:
        """The worker tokens UpdateJob callers may present (any of them); called at start and again while running.

        From WORKER_TOKEN, else its file (one per line), else (outside production)
        the dev secret; SettingsError for a token a worker could not send, or, in
        production, one shorter than secrets.MIN_PRODUCTION_TOKEN_LENGTH.
        """
        return frozenset(secrets.worker_tokens(self))

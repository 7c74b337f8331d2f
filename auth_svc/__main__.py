"""Run the auth service: ``python -m auth_svc`` (``--help`` lists its settings; exit codes: jobqueue.runtime.service).

Wiring only: settings -> signing key, TLS certificate -> database -> accounts -> gRPC server; on
SIGTERM/SIGINT: NOT_SERVING, in-flight calls finish, the pool closes, exit 0.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from auth_svc.accounts import Accounts
from auth_svc.passwords import PasswordHasher
from auth_svc.servicer import SERVICE_NAME, AuthServicer
from auth_svc.settings import AuthSettings
from auth_svc.store import UserStore
from auth_svc.tokens import TokenIssuer, load_private_key
from common import db
from jobqueue.auth.v1 import auth_pb2_grpc
from jobqueue.runtime import metrics, service, tracing
from jobqueue.runtime.health import HealthMonitor, HealthServicer
from jobqueue.runtime.server import build_server

log = logging.getLogger("auth_svc")

#: Seconds in-flight calls get to finish once a stop is requested.
STOP_GRACE = 5.0


def token_issuer(settings: AuthSettings) -> TokenIssuer:
    """The token issuer with the configured signing key; raises SettingsError without a usable key."""
    return TokenIssuer(
        load_private_key(settings.private_key_pem()),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=settings.token_ttl_seconds,
    )


async def serve(settings: AuthSettings, supervisor: service.Supervisor) -> None:
    """Serve until a stop is requested, then stop gracefully."""
    issuer = token_issuer(settings)
    # Read before anything connects, so a missing or mismatched file stops the start with its name.
    credentials = settings.server_credentials()
    # The job service logs the kids it trusts: matching them is how an operator checks a key rotation.
    log.info("signing tokens", extra={"kid": issuer.key_id})
    if settings.uses_dev_key:
        log.warning(
            "signing tokens with the generated development key; set JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE",
            extra={"dev_secrets_dir": settings.dev_secrets_dir},
        )
    pool = await db.create_pool(settings.database_url, max_size=settings.db_pool_size)
    metrics_server = None
    try:
        hasher = await PasswordHasher.create(
            settings.bcrypt_rounds,
            threads=settings.bcrypt_threads or os.cpu_count() or 1,
            waiting=settings.bcrypt_waiting,
        )
        accounts = Accounts(UserStore(pool), hasher, issuer, settings.attempt_limits())
        health_servicer = HealthServicer()
        monitor = HealthMonitor(health_servicer, [SERVICE_NAME], {"postgres": lambda: db.ping(pool)})
        server, port = build_server(
            host=settings.auth_host,
            port=settings.auth_port,
            service_names=[SERVICE_NAME],
            register=lambda server: auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(accounts), server),
            health_servicer=health_servicer,
            transient=db.TRANSIENT_ERRORS,
            credentials=credentials,
        )
        metrics_server = metrics.serve(settings.auth_host, settings.metrics_port)
        await server.start()
        log.info("auth service listening", extra={"host": settings.auth_host, "port": port, "tls": settings.tls})
        with tracing.untraced():  # its pings would each be a trace of their own
            monitoring = supervisor.spawn(monitor.run(), name="health")
        await supervisor.wait_for_stop()

        log.info("stopping")
        await monitor.shutdown()
        await supervisor.cancel(monitoring)
        await server.stop(grace=STOP_GRACE)
    finally:
        metrics.stop(metrics_server)
        await pool.close()
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return service.run(
        "auth_svc",
        AuthSettings,
        serve,
        description="The auth service (jobqueue.auth.v1.AuthService): Register and Login over gRPC.",
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())

"""Run the auth service: ``python -m auth_svc`` (``--help`` lists its settings).

Exit codes: 0 after a graceful stop (SIGTERM/SIGINT), 2 when the configuration
is refused (nothing is started then).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

import uvloop

from auth_svc.accounts import Accounts
from auth_svc.passwords import PasswordHasher
from auth_svc.servicer import SERVICE_NAME, AuthServicer
from auth_svc.settings import AuthSettings
from auth_svc.store import UserStore
from auth_svc.tokens import TokenIssuer, load_private_key
from common import db, logs, metrics
from common.health import HealthMonitor, HealthServicer
from common.server import build_server, stop_signal
from common.settings import SettingsError, describe, load
from jobqueue.auth.v1 import auth_pb2_grpc

log = logging.getLogger("auth_svc")

EXIT_BAD_CONFIG = 2
#: Seconds in-flight calls get to finish once a stop is requested.
STOP_GRACE = 5.0


def parse_args(argv: list[str] | None) -> None:
    """Handle ``--help``; the service takes no arguments, only environment variables."""
    parser = argparse.ArgumentParser(
        prog="python -m auth_svc",
        description="The auth service (jobqueue.auth.v1.AuthService): Register and Login over gRPC.",
        epilog=f"settings (environment variables):\n{describe(AuthSettings)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)


def token_issuer(settings: AuthSettings) -> TokenIssuer:
    """The token issuer with the configured signing key; raises SettingsError without a usable key."""
    return TokenIssuer(
        load_private_key(settings.private_key_pem()),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=settings.token_ttl_seconds,
    )


async def serve(settings: AuthSettings, issuer: TokenIssuer) -> int:
    """Serve until SIGTERM/SIGINT, then stop gracefully; returns the exit code."""
    # Installed first so a signal during start-up still ends in a graceful stop.
    stop = stop_signal()
    pool = await db.create_pool(settings.database_url, max_size=settings.db_pool_size)
    try:
        accounts = Accounts(UserStore(pool), await PasswordHasher.create(settings.bcrypt_rounds), issuer)
        health_servicer = HealthServicer()
        monitor = HealthMonitor(health_servicer, [SERVICE_NAME], {"postgres": lambda: db.ping(pool)})
        server, port = build_server(
            host=settings.auth_host,
            port=settings.auth_port,
            service_names=[SERVICE_NAME],
            register=lambda server: auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(accounts), server),
            health_servicer=health_servicer,
            transient=db.TRANSIENT_ERRORS,
        )
        metrics_server = metrics.serve(settings.auth_host, settings.metrics_port)
        await server.start()
        log.info("auth service listening", extra={"host": settings.auth_host, "port": port})
        monitor_task = asyncio.create_task(monitor.run())
        await stop.wait()
        log.info("stopping")
        await monitor.shutdown()
        monitor_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor_task
        await server.stop(grace=STOP_GRACE)
        metrics.stop(metrics_server)
    finally:
        await pool.close()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Read the settings, refuse a bad configuration, then serve."""
    parse_args(argv)
    logs.setup("auth_svc")
    try:
        settings = load(AuthSettings)
        issuer = token_issuer(settings)
    except SettingsError as error:
        log.error("cannot start: %s", error)
        return EXIT_BAD_CONFIG
    logs.setup("auth_svc", settings.log_level)
    if settings.uses_dev_key:
        log.warning(
            "signing tokens with the generated development key; set JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE",
            extra={"dev_secrets_dir": settings.dev_secrets_dir},
        )
    try:
        return uvloop.run(serve(settings, issuer))
    except OSError as error:  # a port to listen on is taken or invalid
        log.error("cannot start", extra={"error": str(error)})
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""Run the web dashboard: ``python -m web_svc`` (``--help`` lists its settings; exit codes: jobqueue.runtime.service).

Wiring only: settings -> TLS files, CSRF secret -> channels to auth and jobs -> HTTP server; on
SIGTERM/SIGINT: event streams are cancelled, requests in flight finish, the channels close, exit 0.
"""

from __future__ import annotations

import logging
import ssl
import sys
from collections.abc import Sequence

from aiohttp import web

from jobqueue.runtime import service
from web_svc.app import build_app
from web_svc.backend import Backend
from web_svc.settings import WebSettings

log = logging.getLogger("web_svc")

#: Seconds requests in flight get to finish once a stop is requested.
STOP_GRACE = 5.0


def _ssl_context(settings: WebSettings) -> ssl.SSLContext | None:
    if not settings.https:
        return None
    settings.tls_files()  # refuses a missing or mismatched file with its name, before anything starts
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.web_tls_cert_file, settings.web_tls_key_file)
    return context


async def serve(settings: WebSettings, supervisor: service.Supervisor) -> None:
    """Serve until a stop is requested, then stop gracefully."""
    # Read before anything listens, so a bad file or secret stops the start with its name.
    tls = _ssl_context(settings)
    credentials = settings.backend_credentials()
    secret = settings.signing_secret()
    backend = Backend(settings.auth_service_addr, settings.job_service_addr, credentials)
    try:
        app = build_app(settings, backend, secret=secret)
        # handler_cancellation: a browser that closes an event stream ends its handler (and its watch) at once,
        # so its place among the stream limits is free again when the next page opens one.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_GRACE, handler_cancellation=True)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.web_host, settings.web_port, ssl_context=tls)
            await site.start()
            scheme = "https" if tls else "http"
            port = runner.addresses[0][1] if runner.addresses else settings.web_port
            log.info(
                "web dashboard listening",
                extra={"host": settings.web_host, "port": port, "url": f"{scheme}://{settings.web_host}:{port}/"},
            )
            await supervisor.wait_for_stop()
            log.info("stopping")
        finally:
            await runner.cleanup()
    finally:
        await backend.close()
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return service.run(
        "web_svc",
        WebSettings,
        serve,
        description="The web dashboard: your jobs, live, and the operators' view, over the gRPC API.",
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())

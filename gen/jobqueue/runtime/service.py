"""One way to run a service: command line, settings, logs, signals, background tasks and exit codes.

Every ``python -m <svc>`` is ``sys.exit(run(name, Settings, serve, ...))``, where
``serve(settings, supervisor)`` is the service's wiring: adapters, server,
``await supervisor.wait_for_stop()``, then the service's own graceful stop,
with its cleanup in ``finally``.

Exit codes, the same for every service:

- 0: stopped gracefully after SIGTERM or SIGINT (or printed ``--help``);
- 1: failed while running: a port it cannot listen on, or a background task that crashed;
- 2: refused to start: an unexpected argument (with the usage), or a configuration error (one
  line on stderr, ``<svc>: <what is wrong>``, before anything was started).

A background task the service starts with ``supervisor.spawn`` is expected to run until the stop
cancels it. If it raises, or returns while the service is still running, the supervisor logs it
with its traceback and requests the same graceful stop a SIGTERM would, and the service exits 1.
This is asyncio.TaskGroup's promise (no task outlives the service, no failure goes unseen) with one
difference: a TaskGroup cancels its body the moment a task fails, whereas a service must still
say NOT_SERVING and let in-flight calls finish.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import uvloop

from jobqueue.runtime import logs, tracing
from jobqueue.runtime.server import stop_signal
from jobqueue.runtime.settings import ServiceSettings, SettingsError, describe, load

__all__ = ["EXIT_BAD_CONFIG", "EXIT_FAILED", "EXIT_OK", "Supervisor", "run"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2

S = TypeVar("S", bound=ServiceSettings)


class Supervisor:
    """A running service's stop request and its background tasks; ``run`` makes one per service."""

    def __init__(self) -> None:
        # Installed before the service starts anything, so a signal during start-up still ends in
        # a graceful stop.
        self._stop = stop_signal()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Whether a background task crashed (or ended on its own); the service then exits 1.
        self.failed = False

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested (by a signal, ``request_stop`` or a crashed task)."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Ask the service to stop gracefully, as SIGTERM does."""
        self._stop.set()

    async def wait_for_stop(self) -> None:
        """Return once a stop was requested."""
        await self._stop.wait()

    def spawn(self, coroutine: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Run ``coroutine`` in the background until the stop cancels it; its crash stops the service."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        # Retrieving the exception here also spares asyncio's "exception was never retrieved".
        error = task.exception()
        if error is None and self.stopping:
            return  # it finished its part of the stop (a health monitor after shutdown, say)
        self.failed = True
        if error is None:
            log.error("background task ended while the service was running; stopping", extra={"task": task.get_name()})
        else:
            log.error("background task crashed; stopping", exc_info=error, extra={"task": task.get_name()})
        self._stop.set()

    async def cancel(self, *tasks: asyncio.Task[None]) -> None:
        """Cancel ``tasks`` (every background task still running, if none is given) and wait until they end."""
        targets = set(tasks) if tasks else set(self._tasks)
        for task in targets:
            task.cancel()
        if targets:
            await asyncio.wait(targets)


async def _supervise(serve: Callable[[S, Supervisor], Awaitable[None]], settings: S) -> int:
    supervisor = Supervisor()
    try:
        await serve(settings, supervisor)
    finally:
        # Whatever way serve() left, no background task outlives it.
        await supervisor.cancel()
    return EXIT_FAILED if supervisor.failed else EXIT_OK


def run(
    name: str,
    settings_type: type[S],
    serve: Callable[[S, Supervisor], Awaitable[None]],
    *,
    description: str,
    argv: Sequence[str] | None = None,
    prog: str | None = None,
) -> int:
    """Run the service ``name`` (e.g. "job_svc") and return its exit code.

    ``argv`` (default: the process's) takes nothing but ``--help``; the settings come from the
    environment; ``prog`` is the command its usage names (``python -m <name>`` unless given).
    ``serve`` may raise SettingsError before it starts anything, for a configuration error it
    can only find then (a secret's file that cannot be read, say), or later for one that
    stops it (a worker whose job types the job service refuses).
    """
    parser = argparse.ArgumentParser(
        prog=prog or f"python -m {name}",
        description=description,
        epilog=f"settings (environment variables; the service takes no arguments):\n{describe(settings_type)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    try:
        parser.parse_args(argv)
    except SystemExit as done:  # --help (0), or an argument it does not take (2, after the usage)
        return EXIT_OK if done.code in (0, None) else EXIT_BAD_CONFIG
    try:
        settings = load(settings_type)
    except SettingsError as error:
        return _refuse(name, error)
    logs.setup(name, settings.log_level)
    log.info("starting", extra={"settings": settings.masked()})
    try:
        # Before anything connects or listens: the instrumentations patch asyncpg and aio-pika, and
        # the servers and channels built later take their interceptors from it.
        tracing.setup(
            name,
            settings.otel_traces_exporter,
            otlp_protocol=settings.otel_exporter_otlp_protocol,
            sdk_disabled=settings.otel_sdk_disabled,
        )
        return uvloop.run(_supervise(serve, settings))
    except SettingsError as error:
        return _refuse(name, error)
    except OSError as error:  # a port to listen on is taken or invalid
        log.error("cannot start", extra={"error": str(error)})
        return EXIT_FAILED
    except Exception:
        log.exception("stopped by an unexpected error")
        return EXIT_FAILED
    finally:
        # The spans of the last jobs and of the stop itself are still in the batch processor's buffer.
        tracing.shutdown()


def _refuse(name: str, error: SettingsError) -> int:
    # Plain text, like argparse's own errors: it is read by whoever just started the service.
    print(f"{name}: {error}", file=sys.stderr)
    return EXIT_BAD_CONFIG

"""Demo job types, to try what the built-in ones finish too fast to show: ``DEMO_JOB_TYPES=true make run``.

``sleep`` sleeps its payload's seconds (0 to MAX_SLEEP_SECONDS) in a handler
process: a job still running when you cancel it (the worker kills that process
and starts another) or when its ``timeout_seconds`` run out. While it sleeps it
holds one of its worker's HANDLER_PROCESSES, as a heavy fibonacci_calc would.

``fail`` fails its first N attempts (payload N, 0 to MAX_FAILURES) by raising
DemoFailure, then succeeds. With max_attempts above N you see the retries and
their backoff; with max_attempts at most N, a dead job (FAILED, its message in
``<queue>.dead``, its error naming the exception and this file's line), which a
RerunJob granting more attempts then completes: attempts keep counting across
re-runs, and so does the attempt number ``fail`` is given.

This is a JOB_TYPE_MODULES module like any other (see common.job_types): the
workers that load it declare its types, schemas included, to the job service.
DEMO_JOB_TYPES=true (the worker's setting) adds it to their JOB_TYPE_MODULES;
``modules`` refuses it, by either route, when APP_ENV=production: these types
exist to waste a worker's time.
"""

from __future__ import annotations

import math
import time
from typing import Any

from common.job_types import JobType, PayloadError
from common.limits import MAX_ATTEMPTS
from common.settings import SettingsError

#: This module's name, as JOB_TYPE_MODULES lists it.
MODULE = __name__
#: The longest a sleep job may sleep.
MAX_SLEEP_SECONDS = 600
#: The most attempts a fail job may fail: more than any job can be given would never succeed.
MAX_FAILURES = MAX_ATTEMPTS


class DemoFailure(RuntimeError):
    """Raised by the ``fail`` handler on each attempt it was told to fail."""


def seconds(payload: Any) -> float:
    """A number of seconds, 0 to MAX_SLEEP_SECONDS."""
    if (
        isinstance(payload, bool)
        or not isinstance(payload, int | float)
        or not math.isfinite(payload)
        or not 0 <= payload <= MAX_SLEEP_SECONDS
    ):
        raise PayloadError(f"must be a number of seconds, 0 to {MAX_SLEEP_SECONDS}")
    return float(payload)


def failures(payload: Any) -> int:
    """A whole number of attempts to fail, 0 to MAX_FAILURES (JSON numbers arrive as floats)."""
    if isinstance(payload, bool) or not isinstance(payload, int | float) or not float(payload).is_integer():
        raise PayloadError(f"must be a whole number of attempts to fail, 0 to {MAX_FAILURES}")
    count = int(payload)
    if not 0 <= count <= MAX_FAILURES:
        raise PayloadError(f"must be a whole number of attempts to fail, 0 to {MAX_FAILURES}")
    return count


def sleep(duration: float) -> str:
    """Sleep ``duration`` seconds."""
    time.sleep(duration)
    return f"slept {duration:g} s"


def fail(count: int, attempt: int) -> str:
    """Raise DemoFailure on attempts 1 to ``count``; succeed on any later one."""
    if attempt <= count:
        raise DemoFailure(f"attempt {attempt} fails on purpose (the first {count} do)")
    return f"succeeded on attempt {attempt}, after {count} failure{'' if count == 1 else 's'}"


JOB_TYPES = [
    # cpu_bound: the sleep happens in a handler process, which is what makes it stoppable.
    JobType(
        "sleep",
        seconds,
        f"a number of seconds, 0 to {MAX_SLEEP_SECONDS}; the handler sleeps that long (cancel it meanwhile)",
        handler=sleep,
        cpu_bound=True,
        schema={"type": "number", "minimum": 0, "maximum": MAX_SLEEP_SECONDS},
    ),
    JobType(
        "fail",
        failures,
        f"a whole number N, 0 to {MAX_FAILURES}; the first N attempts fail, the next one succeeds",
        handler=fail,
        takes_attempt=True,
        schema={"type": "integer", "minimum": 0, "maximum": MAX_FAILURES},
    ),
]


def modules(names: tuple[str, ...], *, demo: bool, production: bool) -> tuple[str, ...]:
    """The JOB_TYPE_MODULES a service loads: ``names``, with this module added if ``demo``.

    SettingsError if that would load the demo types in production.
    """
    if demo and MODULE not in names:
        names = (*names, MODULE)
    if production and MODULE in names:
        raise SettingsError(
            f"DEMO_JOB_TYPES: the demo job types ({MODULE}) are refused when APP_ENV=production; "
            "unset DEMO_JOB_TYPES and take it out of JOB_TYPE_MODULES"
        )
    return names

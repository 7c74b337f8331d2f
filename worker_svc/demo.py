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

They are defined with the worker SDK like any user's types; ``python -m
worker_svc`` runs them with DEMO_JOB_TYPES=true, which is refused when
APP_ENV=production (worker_svc/settings.py): these types exist to waste a
worker's time.
"""

from __future__ import annotations

import time

from jobqueue.runtime.limits import MAX_ATTEMPTS
from jobqueue.worker import JobContext, Worker

#: The longest a sleep job may sleep.
MAX_SLEEP_SECONDS = 600
#: The most attempts a fail job may fail: more than any job can be given would never succeed.
MAX_FAILURES = MAX_ATTEMPTS

worker = Worker()


class DemoFailure(RuntimeError):
    """Raised by the ``fail`` handler on each attempt it was told to fail."""


# Plain, so it sleeps in a handler process, which is what makes it stoppable at once.
@worker.job_type(
    "sleep",
    schema={"type": "number", "minimum": 0, "maximum": MAX_SLEEP_SECONDS},
    summary=f"a number of seconds, 0 to {MAX_SLEEP_SECONDS}; the handler sleeps that long (cancel it meanwhile)",
)
def sleep(duration: float) -> str:
    """Sleep ``duration`` seconds."""
    time.sleep(duration)
    return f"slept {duration:g} s"


@worker.job_type(
    "fail",
    schema={"type": "integer", "minimum": 0, "maximum": MAX_FAILURES},
    summary=f"a whole number N, 0 to {MAX_FAILURES}; the first N attempts fail, the next one succeeds",
)
async def fail(count: int, job: JobContext) -> str:
    """Raise DemoFailure on attempts 1 to ``count``; succeed on any later one."""
    if job.attempt <= count:
        raise DemoFailure(f"attempt {job.attempt} fails on purpose (the first {count} do)")
    return f"succeeded on attempt {job.attempt}, after {count} failure{'' if count == 1 else 's'}"

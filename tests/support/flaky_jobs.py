"""A worker of test job types: ``python -m jobqueue.worker tests.support.flaky_jobs:worker`` (``WORKER_APP``).

It runs the built-in types too, so a test system of these workers takes every
kind of job; it declares them all to the job service as it starts, like any
other worker.

``always_fails`` takes a string payload (checked at CreateJob like any other)
and its handler raises AlwaysFails every time. The worker treats a handler's
exception as a transient failure, so such a job is retried until it has had
its max_attempts, then it is FAILED (with ERROR) and its message goes to ``<queue>.dead``.

``sleeps`` takes a number of seconds (0 … 3600) and its handler sleeps that
long: a job that is still running when a test cancels it or its timeout ends.
Both are plain functions, so they run in a handler process: one that had not
imported this module would fail with another error than AlwaysFails.
"""

from __future__ import annotations

import time

from jobqueue.worker import Worker
from worker_svc import builtins

#: What runs them: WORKER_APP=APP (tests/support/system.py, scripts/run_system.py).
APP = f"{__name__}:worker"

worker = Worker()
worker.include(builtins.worker)


class AlwaysFails(RuntimeError):
    """Raised by the always_fails handler, every time."""


@worker.job_type("always_fails", schema=builtins.TEXT, summary="a string; the handler always raises, then FAILED")
def always_fails(payload: str) -> str:
    """Fail, whatever the payload."""
    raise AlwaysFails("always_fails never succeeds")


#: The error a job of this type ends with (jobqueue.worker.runner.describe): the exception, and the line
#: that raised it, the fourth of always_fails, counting its decorator (tests/integration/test_worker_runner.py
#: checks it).
ERROR = (
    "AlwaysFails: always_fails never succeeds\n"
    f"  tests/support/flaky_jobs.py:{always_fails.__code__.co_firstlineno + 3} in always_fails"
)


@worker.job_type(
    "sleeps",
    schema={"type": "number", "minimum": 0, "maximum": 3600},
    summary="a number of seconds; the handler sleeps that long",
)
def sleeps(duration: float) -> str:
    """Sleep ``duration`` seconds."""
    time.sleep(duration)
    return f"slept {duration:g} s"

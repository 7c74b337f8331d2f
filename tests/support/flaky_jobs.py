"""Job types for tests, added to the real services with ``JOB_TYPE_MODULES=tests.support.flaky_jobs``.

The worker declares them to the job service as it starts, like any other types.

``always_fails`` takes a string payload (checked at CreateJob like any other)
and its handler raises AlwaysFails every time. The worker treats a handler's
exception as a transient failure, so such a job is retried until it has had
its max_attempts, then it is FAILED (with ERROR) and its message goes to ``<queue>.dead``.

``sleeps`` takes a number of seconds (0 … 3600) and its handler sleeps that
long: a job that is still running when a test cancels it or its timeout ends.
"""

from __future__ import annotations

import time
from typing import Any

from common.job_types import TEXT_SCHEMA, JobType, PayloadError, text


class AlwaysFails(RuntimeError):
    """Raised by the always_fails handler, every time."""


def always_fails(payload: str) -> str:
    """Fail, whatever the payload."""
    raise AlwaysFails("always_fails never succeeds")


#: The error a job of this type ends with (worker_svc.runner.describe): the exception, and the line
#: that raised it, the third of always_fails (tests/integration/test_worker_runner.py checks it).
ERROR = (
    "AlwaysFails: always_fails never succeeds\n"
    f"  tests/support/flaky_jobs.py:{always_fails.__code__.co_firstlineno + 2} in always_fails"
)


def seconds(payload: Any) -> float:
    """A number of seconds, 0 … 3600."""
    if isinstance(payload, bool) or not isinstance(payload, int | float) or not 0 <= payload <= 3600:
        raise PayloadError("must be a number of seconds, 0 to 3600")
    return float(payload)


def sleeps(duration: float) -> str:
    """Sleep ``duration`` seconds."""
    time.sleep(duration)
    return f"slept {duration:g} s"


JOB_TYPES = [
    # cpu_bound, so the handler runs in the worker's process pool: a pool process
    # that had not loaded this module would fail with KeyError, not AlwaysFails.
    JobType(
        "always_fails",
        text,
        "a string; the handler always raises, so the job is retried, then FAILED",
        handler=always_fails,
        cpu_bound=True,
        schema=TEXT_SCHEMA,
    ),
    JobType(
        "sleeps",
        seconds,
        "a number of seconds; the handler sleeps that long",
        handler=sleeps,
        cpu_bound=True,
        schema={"type": "number", "minimum": 0, "maximum": 3600},
    ),
]

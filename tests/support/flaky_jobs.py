"""Job types for tests, added to the real services with ``JOB_TYPE_MODULES=tests.support.flaky_jobs``.

``always_fails`` takes a string payload (checked at CreateJob like any other)
and its handler raises AlwaysFails every time. The worker treats a handler's
exception as a transient failure, so such a job is retried until it has had
its max_attempts, then it is FAILED and its message goes to ``<queue>.dead``.
"""

from __future__ import annotations

from common.job_types import JobType, text

#: The error a job of this type ends with: the worker reports the exception's class, not its message.
ERROR = "internal worker error (AlwaysFails)"


class AlwaysFails(RuntimeError):
    """Raised by the always_fails handler, every time."""


def always_fails(payload: str) -> str:
    """Fail, whatever the payload."""
    raise AlwaysFails(f"always_fails never succeeds (payload {payload[:20]!r})")


JOB_TYPES = [
    # cpu_bound, so the handler runs in the worker's process pool: a pool process
    # that had not loaded this module would fail with KeyError, not AlwaysFails.
    JobType(
        "always_fails",
        text,
        "a string; the handler always raises, so the job is retried, then FAILED",
        handler=always_fails,
        cpu_bound=True,
    ),
]

"""A worker of one job type for tests of declared types: ``WORKER_APP=tests.support.declared_jobs:worker``.

``tally`` takes an object ``{"items": [{"name": ..., "count": ...}, ...]}`` and
answers the sum of the counts. Its schema nests objects in an array, so a bad
payload's violations have paths like ``payload.items[2].count``; its defaults
(5 attempts, 120 s) differ from the service's, so a test sees them applied. The
worker runs the built-in types too, as every worker declaring them would.
"""

from __future__ import annotations

from typing import Any

from jobqueue.worker import Worker
from worker_svc import builtins

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "maxItems": 100,
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 20}, "count": {"type": "integer", "minimum": 0}},
                "required": ["name", "count"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["items"],
}
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_TIMEOUT_SECONDS = 120

worker = Worker()
worker.include(builtins.worker)


@worker.job_type(
    "tally",
    schema=SCHEMA,
    summary="an object {items: [{name, count}]}; the result is the sum of the counts",
    max_attempts=DEFAULT_MAX_ATTEMPTS,
    timeout_seconds=DEFAULT_TIMEOUT_SECONDS,
)
async def tally(payload: dict[str, Any]) -> str:
    """The sum of the counts, as text (as the job service's tests read it)."""
    return str(sum(item["count"] for item in payload["items"]))

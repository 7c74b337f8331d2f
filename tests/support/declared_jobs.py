"""A job type for tests of declared types: ``JOB_TYPE_MODULES=tests.support.declared_jobs`` on a worker.

``tally`` takes an object ``{"items": [{"name": ..., "count": ...}, ...]}`` and
answers the sum of the counts. Its schema nests objects in an array, so a bad
payload's violations have paths like ``payload.items[2].count``; its defaults
(5 attempts, 120 s) differ from the service's, so a test sees them applied.
"""

from __future__ import annotations

from typing import Any

from common.job_types import JobType, PayloadError

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


def counts(payload: Any) -> list[int]:
    """The counts of a payload the schema accepted."""
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise PayloadError("must be an object with items")
    return [int(item["count"]) for item in payload["items"]]


def tally(values: list[int]) -> str:
    """The sum of the counts."""
    return str(sum(values))


JOB_TYPES = [
    JobType(
        "tally",
        counts,
        "an object {items: [{name, count}]}; the result is the sum of the counts",
        handler=tally,
        schema=SCHEMA,
        default_max_attempts=DEFAULT_MAX_ATTEMPTS,
        default_timeout_seconds=DEFAULT_TIMEOUT_SECONDS,
    )
]

"""A small user's worker, written with the worker SDK only: ``python -m jobqueue.worker tests.support.sdk_app:worker``.

``count_words`` is I/O-bound (async): it "looks up" each word, waiting
``seconds_per_word``, says how far it got after each, and answers with an
object. ``sum_squares`` is CPU-bound (a plain function, so it runs in a handler
process) and answers with a number. ``conflicting`` is another worker that
declares count_words again, at the same version, with another schema: the job
service refuses it. ``nested`` is a worker whose plain handler no handler
process could import: it is refused before anything starts.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jobqueue.worker import JobContext, Worker

worker = Worker()

WORDS = {
    "type": "object",
    "properties": {
        "words": {"type": "array", "items": {"type": "string", "maxLength": 100}, "maxItems": 100},
        "seconds_per_word": {"type": "number", "minimum": 0, "maximum": 5},
    },
    "required": ["words"],
    "additionalProperties": False,
}


@worker.job_type(
    "count_words",
    schema=WORDS,
    summary="an object {words: [...], seconds_per_word}; the result is {count, longest}",
    timeout_seconds=120,
    max_attempts=2,
)
async def count_words(payload: dict[str, Any], job: JobContext) -> dict[str, Any]:
    """Count the words, one "look-up" at a time, saying how far it got."""
    words = payload["words"]
    for done, word in enumerate(words, 1):
        await asyncio.sleep(payload.get("seconds_per_word", 0))
        await job.progress(done / len(words), f"looked up {word!r}")
    return {"count": len(words), "longest": max(words, key=len, default=None)}


@worker.job_type("sum_squares", schema={"type": "integer", "minimum": 1, "maximum": 1_000_000}, version=2)
def sum_squares(n: int) -> int:
    """1² + 2² + ... + n²."""
    return sum(i * i for i in range(1, n + 1))


conflicting = Worker()


@conflicting.job_type("count_words", schema={"type": "array"}, summary="the same version, declared otherwise")
async def count_differently(payload: list[Any]) -> int:
    return len(payload)


def _make_nested() -> Worker:
    """A worker whose plain handler is defined inside a function: no handler process could import it."""
    nested_worker = Worker()

    @nested_worker.job_type("nested", schema={})
    def nested(payload: Any) -> Any:
        return payload

    return nested_worker


nested = _make_nested()

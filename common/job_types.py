"""The job types the system accepts, and the rule each one's payload must follow.

This table is the one list of job types: the job service validates CreateJob
against it and the worker has one handler per entry (worker_svc/handlers.py;
a test checks the two agree). A payload is a JSON value (google.protobuf.Value
on the wire); a rule turns it into the handler's typed input or says why not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Largest string payload, in bytes once UTF-8 encoded.
MAX_TEXT_BYTES = 65_536
#: Largest n for fibonacci_calc: F(100000) has 20,899 digits and takes milliseconds.
MAX_FIBONACCI_N = 100_000


class PayloadError(ValueError):
    """Raised by a payload rule when the payload does not fit the job type."""


def text(payload: Any) -> str:
    """A string of at most MAX_TEXT_BYTES bytes, without NUL characters."""
    if not isinstance(payload, str):
        raise PayloadError("must be a string")
    if len(payload.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise PayloadError(f"must be at most {MAX_TEXT_BYTES} bytes")
    if "\x00" in payload:
        # PostgreSQL text and jsonb cannot hold NUL; refuse it here rather than fail on store.
        raise PayloadError("must not contain NUL characters")
    return payload


def fibonacci_n(payload: Any) -> int:
    """A whole number 0 <= n <= MAX_FIBONACCI_N (JSON numbers arrive as floats)."""
    if isinstance(payload, bool) or not isinstance(payload, int | float):
        raise PayloadError("must be a whole number")
    if isinstance(payload, float) and (not math.isfinite(payload) or not payload.is_integer()):
        raise PayloadError("must be a whole number")
    n = int(payload)
    if not 0 <= n <= MAX_FIBONACCI_N:
        raise PayloadError(f"must be between 0 and {MAX_FIBONACCI_N}")
    return n


@dataclass(frozen=True)
class JobType:
    """A job type: its name and the rule that checks and converts its payload."""

    name: str
    parse: Callable[[Any], Any]
    summary: str


JOB_TYPES: dict[str, JobType] = {
    t.name: t
    for t in (
        JobType("reverse_string", text, "a string; the result is the string reversed"),
        JobType("uppercase_text", text, "a string; the result is the string upper-cased"),
        JobType(
            "fibonacci_calc",
            fibonacci_n,
            f"a whole number 0..{MAX_FIBONACCI_N}; the result is F(n)",
        ),
    )
}


def parse_payload(job_type: str, payload: Any) -> Any:
    """The typed input for ``job_type``; raises KeyError for an unknown type, PayloadError for a bad payload."""
    return JOB_TYPES[job_type].parse(payload)

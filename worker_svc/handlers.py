"""One handler per job type: what the worker computes for a job's (already parsed) payload.

Adding a built-in job type is one entry in common.job_types.JOB_TYPES (its
payload rule) plus one entry in HANDLERS here; a unit test checks the two tables
agree. Types from JOB_TYPE_MODULES bring their handler with them; ``install``
adds them to both tables (in the worker and in each of its handler processes).

This module is imported by the handler processes too, so it stays free of I/O
and of anything that would be costly or unsafe to import there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common.job_types import JOB_TYPES, JobType, load_modules

# Python refuses to convert ints of more than sys.get_int_max_str_digits() digits
# (4300 by default, 640 at the least) to text. Converting in chunks of fewer
# digits than the smallest possible limit keeps F(n) exact for any n without
# touching that process-wide guard.
_CHUNK_DIGITS = 500
_CHUNK = 10**_CHUNK_DIGITS
#: Largest n whose F(n) the worker computes on its event loop rather than in the process pool.
INLINE_FIBONACCI_N = 2000


def decimal(value: int) -> str:
    """The decimal digits of a non-negative integer of any size."""
    if value < 0:
        raise ValueError("value must not be negative")
    chunks = []
    while value >= _CHUNK:
        value, low = divmod(value, _CHUNK)
        chunks.append(str(low).zfill(_CHUNK_DIGITS))
    chunks.append(str(value))
    return "".join(reversed(chunks))


def fibonacci(n: int) -> int:
    """F(n) exactly (F(0) = 0, F(1) = 1), by fast doubling: O(log n) big-integer multiplications."""
    if n < 0:
        raise ValueError("n must not be negative")
    # Invariant: (a, b) = (F(k), F(k + 1)) for k = the bits of n read so far.
    a, b = 0, 1
    for bit in bin(n)[2:]:
        double = a * (2 * b - a)  # F(2k)
        double_next = a * a + b * b  # F(2k + 1)
        a, b = (double_next, double + double_next) if bit == "1" else (double, double_next)
    return a


def reverse_string(text: str) -> str:
    """The text reversed code point by code point."""
    return text[::-1]


def uppercase_text(text: str) -> str:
    """The text upper-cased (full Unicode case mapping: "ß" becomes "SS")."""
    return text.upper()


def fibonacci_calc(n: int) -> str:
    """F(n) in decimal digits."""
    return decimal(fibonacci(n))


@dataclass(frozen=True)
class Handler:
    """How to run one job type: the function, and whether it is heavy enough to need a process of its own."""

    run: Callable[[Any], str]
    #: True when the work may take long enough to stall the event loop (run it in the process pool).
    cpu_bound: bool
    #: For a cpu_bound handler: whether this input is so small that handing it to the pool would
    #: cost more than computing it here (a pool round trip costs a few hundred microseconds).
    small: Callable[[Any], bool] | None = None


HANDLERS: dict[str, Handler] = {
    # String payloads are at most 64 KiB, so these finish in well under a millisecond.
    "reverse_string": Handler(reverse_string, cpu_bound=False),
    "uppercase_text": Handler(uppercase_text, cpu_bound=False),
    # F(2000) takes about 20 µs; F(100000) about 15 ms, too long to hold the event loop.
    "fibonacci_calc": Handler(fibonacci_calc, cpu_bound=True, small=lambda n: n <= INLINE_FIBONACCI_N),
}


def add_handlers(job_types: Sequence[JobType], handlers: dict[str, Handler] | None = None) -> None:
    """Add the handler each of ``job_types`` carries to ``handlers`` (default: HANDLERS)."""
    target = HANDLERS if handlers is None else handlers
    for job_type in job_types:
        if job_type.handler is None:
            # load_modules refuses such types; built-in types are never passed here.
            raise ValueError(f"job type {job_type.name!r} carries no handler")
        target[job_type.name] = Handler(job_type.handler, cpu_bound=job_type.cpu_bound)


def install(module_names: Sequence[str]) -> list[JobType]:
    """Load the JOB_TYPE_MODULES ``module_names``: their payload rules into JOB_TYPES, their handlers into HANDLERS.

    Raises common.settings.SettingsError (and changes nothing) if a module breaks
    the contract described in common.job_types. Returns the added types.
    """
    added = load_modules(module_names, JOB_TYPES)
    add_handlers(added)
    return added


def run_handler(job_type: str, value: Any) -> str:
    """Run ``job_type``'s handler on its parsed payload.

    The process pool is handed this function and the type's name, not the
    handler itself: the handler is looked up in the handler process's own
    HANDLERS (filled by ``install`` in the pool's initializer), so it need not
    be picklable and comes from the very module the worker loaded.
    """
    return HANDLERS[job_type].run(value)

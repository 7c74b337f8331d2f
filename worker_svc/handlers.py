"""The built-in job types' handlers: what the worker computes for a job's (already parsed) payload.

Adding a built-in job type is its payload rule in common.job_types.BUILTIN_TYPES
plus its handler in BUILTIN_TYPES here (the worker refuses to start, at
import, if the two name different types). Types from JOB_TYPE_MODULES bring
their handler with them; ``load_job_types`` loads both into the worker's registry.

This module is imported by the handler processes too, so it stays free of I/O
and of anything that would be costly or unsafe to import there.
"""

from __future__ import annotations

from collections.abc import Sequence

from common import job_types as rules
from common.job_types import JobTypes

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


def small_fibonacci(n: int) -> bool:
    """Whether F(n) is quicker to compute on the event loop than to hand to the process pool."""
    return n <= INLINE_FIBONACCI_N


def _with_handlers() -> JobTypes:
    by_name = {job_type.name: job_type for job_type in rules.BUILTIN_TYPES}
    types = JobTypes(
        [
            # String payloads are at most 64 KiB, so these finish in well under a millisecond.
            by_name["reverse_string"].with_handler(reverse_string),
            by_name["uppercase_text"].with_handler(uppercase_text),
            # F(2000) takes about 20 µs; F(100000) about 15 ms, too long to hold the event loop.
            by_name["fibonacci_calc"].with_handler(fibonacci_calc, cpu_bound=True, small=small_fibonacci),
        ]
    )
    if missing := by_name.keys() - types.keys():
        raise ImportError(f"built-in job types without a handler in {__name__}: {sorted(missing)}")
    return types


#: The built-in job types, each with its handler.
BUILTIN_TYPES = _with_handlers()


def load_job_types(module_names: Sequence[str]) -> JobTypes:
    """The worker's job types: the built-in ones and those of the JOB_TYPE_MODULES ``module_names``.

    Raises jobqueue.runtime.settings.SettingsError if a module breaks the contract
    described in common.job_types.
    """
    return JobTypes.load(module_names, BUILTIN_TYPES.values())

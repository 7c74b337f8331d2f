"""The built-in job types, defined with the worker SDK exactly as a user defines theirs.

Their schemas, summaries and versions are those the job service's database
comes with (migrations/0010_job_types.sql), so that the job service takes a
built-in job before any worker has declared its types: change one here and
there together, raising ``version``.

The handlers' modules are imported by the handler processes too, so this one
stays free of I/O and of anything costly to import.
"""

from __future__ import annotations

from jobqueue.worker import Worker

#: Largest string payload, in characters.
MAX_TEXT_CHARS = 65_536
#: Largest n for fibonacci_calc: F(100000) has 20,899 digits and takes milliseconds.
MAX_FIBONACCI_N = 100_000
#: Largest n whose F(n) the worker computes on its event loop rather than in a handler process.
INLINE_FIBONACCI_N = 2000

TEXT = {"type": "string", "maxLength": MAX_TEXT_CHARS}

# Python refuses to convert ints of more than sys.get_int_max_str_digits() digits
# (4300 by default, 640 at the least) to text. Converting in chunks of fewer
# digits than the smallest possible limit keeps F(n) exact for any n without
# touching that process-wide guard.
_CHUNK_DIGITS = 500
_CHUNK = 10**_CHUNK_DIGITS

worker = Worker()


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


# async: string payloads are at most 64 Ki characters, so these finish in well under a
# millisecond, on the event loop.
@worker.job_type("reverse_string", schema=TEXT, summary="a string; the result is the string reversed")
async def reverse_string(text: str) -> str:
    """The text reversed code point by code point."""
    return text[::-1]


@worker.job_type("uppercase_text", schema=TEXT, summary="a string; the result is the string upper-cased")
async def uppercase_text(text: str) -> str:
    """The text upper-cased (full Unicode case mapping: "ß" becomes "SS")."""
    return text.upper()


def small_fibonacci(n: int) -> bool:
    """Whether F(n) is quicker to compute on the event loop than to hand to a handler process."""
    return n <= INLINE_FIBONACCI_N


# Plain, so CPU-bound: F(100000) takes about 15 ms, too long to hold the event loop;
# F(2000) about 20 µs, less than a handler process's round trip.
@worker.job_type(
    "fibonacci_calc",
    schema={"type": "integer", "minimum": 0, "maximum": MAX_FIBONACCI_N},
    summary=f"a whole number 0..{MAX_FIBONACCI_N}; the result is F(n)",
    inline_if=small_fibonacci,
)
def fibonacci_calc(n: int) -> str:
    """F(n) in decimal digits: a string, so that it stays exact at any size."""
    return decimal(fibonacci(n))

"""The worker's job handlers: each job type's result, exact and complete."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from jobqueue.worker.runner import Result, Runner
from worker_svc.builtins import (
    INLINE_FIBONACCI_N,
    MAX_FIBONACCI_N,
    decimal,
    fibonacci,
    fibonacci_calc,
    worker,
)


async def run(job_type: str, payload: Any) -> Any:
    """What the worker computes for a built-in type's payload: its schema check, then its handler, inline."""
    result = await Runner(worker.types, processes=0).run(job_type, payload)
    assert result.ok, result
    return result.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello world", "dlrow olleh"),
        ("", ""),
        ("a", "a"),
        # Code points, not bytes or UTF-16 units: astral characters stay whole.
        ("añb😀c", "c😀bña"),
        ("日本語", "語本日"),
    ],
)
async def test_reverse_string_reverses_code_points(text: str, expected: str) -> None:
    assert await run("reverse_string", text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("hello world", "HELLO WORLD"), ("", ""), ("MiXeD 123!", "MIXED 123!"), ("straße", "STRASSE"), ("ñé", "ÑÉ")],
)
async def test_uppercase_text_uses_full_unicode_case_mapping(text: str, expected: str) -> None:
    assert await run("uppercase_text", text) == expected


@pytest.mark.parametrize(("n", "expected"), [(0, "0"), (1, "1"), (2, "1"), (3, "2"), (10, "55"), (20, "6765")])
def test_fibonacci_small_values(n: int, expected: str) -> None:
    assert fibonacci_calc(n) == expected


def test_fibonacci_matches_the_recurrence() -> None:
    a, b = 0, 1
    for n in range(300):
        assert fibonacci(n) == a, n
        a, b = b, a + b


def test_fibonacci_90_is_exact() -> None:
    # Beyond 2**53, where a float (a JSON number) would have rounded it.
    assert fibonacci_calc(90) == "2880067194370816120"


async def test_fibonacci_accepts_the_payload_as_json_sends_it() -> None:
    # google.protobuf.Value carries numbers as doubles.
    assert await run("fibonacci_calc", 10.0) == "55"


@pytest.mark.parametrize(
    ("job_type", "payload"),
    [("fibonacci_calc", -1), ("fibonacci_calc", 2.5), ("fibonacci_calc", "10"), ("reverse_string", 5)],
)
async def test_a_payload_outside_the_schema_fails_for_good(job_type: str, payload: Any) -> None:
    result = await Runner(worker.types, processes=0).run(job_type, payload)
    assert not result.ok
    assert result.value.startswith("payload: ")


def test_fibonacci_largest_n_is_complete_without_touching_the_digit_limit() -> None:
    limit = sys.get_int_max_str_digits()
    result = fibonacci_calc(MAX_FIBONACCI_N)
    assert len(result) == 20_899
    assert result.startswith("25974069347221724166")
    assert result.endswith("3428746875")
    assert sys.get_int_max_str_digits() == limit


def test_fibonacci_largest_n_is_exact() -> None:
    value = fibonacci(MAX_FIBONACCI_N)
    # Cassini's identity F(n-1)F(n+1) - F(n)^2 = (-1)^n pins the value down.
    assert fibonacci(MAX_FIBONACCI_N - 1) * fibonacci(MAX_FIBONACCI_N + 1) - value * value == 1
    assert int(decimal(value)[-18:]) == value % 10**18


@pytest.mark.parametrize(
    "value",
    [0, 7, 10**499, 10**500 - 1, 10**500, 10**500 + 1, 10**1000, 3**20_000],
    ids=["0", "7", "1e499", "1e500-1", "1e500", "1e500+1", "1e1000", "3^20000"],
)
def test_decimal_is_str_for_any_size(value: int) -> None:
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        expected = str(value)
    finally:
        sys.set_int_max_str_digits(old)
    assert decimal(value) == expected


def test_decimal_refuses_negative_numbers() -> None:
    with pytest.raises(ValueError, match="negative"):
        decimal(-1)


def test_only_fibonacci_needs_a_process_of_its_own_and_only_when_large() -> None:
    assert {name for name, job_type in worker.types.items() if not job_type.is_async} == {"fibonacci_calc"}
    fibonacci_type = worker.types["fibonacci_calc"]
    assert fibonacci_type.runs_inline(INLINE_FIBONACCI_N)
    assert not fibonacci_type.runs_inline(INLINE_FIBONACCI_N + 1)


async def test_small_fibonacci_runs_inline_with_no_handler_process() -> None:
    # processes=0: a job that needed a handler process would wait for ever.
    assert await Runner(worker.types, processes=0).run("fibonacci_calc", INLINE_FIBONACCI_N) == Result(
        True, fibonacci_calc(INLINE_FIBONACCI_N)
    )

"""The job service's retry backoff: doubling per attempt, capped, less up to half as jitter."""

from __future__ import annotations

import random

import pytest

from job_svc.jobs import RetryPolicy


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (60, 30.0)])
def test_each_delay_lies_between_half_its_ceiling_and_the_ceiling(attempt: int, ceiling: float) -> None:
    policy = RetryPolicy(base=2.0, cap=30.0)
    delays = [policy.delay(attempt) for _ in range(500)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays), (min(delays), max(delays))


def test_jitter_spreads_jobs_that_failed_together() -> None:
    random.seed(7)
    policy = RetryPolicy(base=2.0, cap=30.0)
    delays = [policy.delay(3) for _ in range(100)]
    assert max(delays) - min(delays) > 2.0  # spread over most of [4, 8], not one instant

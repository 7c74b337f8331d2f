"""The worker's retry delays: growing, capped, jittered within known bounds."""

from __future__ import annotations

import random

import pytest

from jobqueue.runtime.backoff import Backoff


def test_delays_stay_within_half_to_full_ceiling_and_are_capped() -> None:
    backoff = Backoff(base=0.1, cap=5.0, rng=random.Random(7))
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    for ceiling in ceilings:
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling
    for _ in range(1000):
        assert 2.5 <= backoff.next_delay() <= 5.0


def test_ceiling_never_overflows() -> None:
    backoff = Backoff(base=0.1, cap=5.0)
    assert backoff.ceiling(1) == 0.1
    assert backoff.ceiling(10_000) == 5.0


def test_reset_starts_over() -> None:
    backoff = Backoff(base=1.0, cap=60.0, rng=random.Random(1))
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0


def test_jitter_spreads_workers_apart() -> None:
    first = [Backoff(base=1.0, cap=8.0, rng=random.Random(seed)).next_delay() for seed in range(50)]
    assert len(set(first)) > 40


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_bounds_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(base=base, cap=cap)


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (60, 30.0)])
def test_a_failed_jobs_retry_waits_between_half_its_ceiling_and_the_ceiling(attempt: int, ceiling: float) -> None:
    # The job service's policy: RETRY_BASE_SECONDS doubling per attempt, up to RETRY_MAX_SECONDS.
    policy = Backoff(base=2.0, cap=30.0, rng=random.Random(attempt))
    delays = [policy.delay(attempt) for _ in range(500)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays), (min(delays), max(delays))
    assert max(delays) - min(delays) > ceiling / 4  # spread over the range, not one instant


def test_delay_is_stateless_and_next_delay_counts_failures() -> None:
    policy = Backoff(base=1.0, cap=60.0, rng=random.Random(3))
    assert all(1.0 <= policy.delay(2) <= 2.0 for _ in range(100))
    assert 0.5 <= policy.next_delay() <= 1.0  # delay() recorded no failure

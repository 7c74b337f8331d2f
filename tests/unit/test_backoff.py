"""The worker's retry delays: growing, capped, jittered within known bounds."""

from __future__ import annotations

import random

import pytest

from common.backoff import Backoff


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

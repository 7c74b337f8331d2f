"""Capped exponential backoff with jitter: the one retry policy of every service.

Used for broker reconnects (gen/jobqueue/runtime/rabbitmq.py), the worker's reports
(gen/jobqueue/worker/reports.py) and the delay before a failed job's next attempt
(job_svc/reports.py, from RETRY_BASE_SECONDS and RETRY_MAX_SECONDS).
"""

from __future__ import annotations

import random

# Shared, because seeding a generator from the OS costs more than the report it
# would time, and Backoffs are made per report.
_RANDOM = random.Random()


class Backoff:
    """The delays before successive retries: base * 2**n, capped, each scaled by a random factor in [1/2, 1].

    The jitter keeps many workers that lost the same dependency at the same
    moment from retrying in lockstep; keeping at least half of each delay
    keeps the growth (and so the load on a struggling dependency) predictable.
    """

    def __init__(self, base: float = 0.1, cap: float = 5.0, rng: random.Random | None = None) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rng = rng or _RANDOM
        self._failures = 0

    def ceiling(self, failures: int) -> float:
        """The largest delay after ``failures`` consecutive failures (>= 1)."""
        # min() on the exponent first: 2.0**n overflows a float for large n.
        return min(self.cap, self.base * 2.0 ** min(failures - 1, 64))

    def delay(self, failures: int) -> float:
        """How long to wait after ``failures`` consecutive failures (>= 1): in [ceiling / 2, ceiling]."""
        ceiling = self.ceiling(failures)
        return self._rng.uniform(ceiling / 2, ceiling)

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before the next try."""
        self._failures += 1
        return self.delay(self._failures)

    def reset(self) -> None:
        """Start over after a success."""
        self._failures = 0

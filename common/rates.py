"""Token buckets by key: the rate limits of the auth service (per address, per email) and the job service (per user).

A bucket holds up to ``Rate.capacity`` tokens and refills at ``Rate.per_second``; a call takes as many
tokens as it costs (1 for a Login, N for a batch of N jobs) or, if the bucket lacks them, takes none
and learns how long until it would not. That delay is what the caller is sent as a google.rpc.RetryInfo.

The buckets live in the process that checks them, with no round trip on the hot path: with N replicas
behind a balancer a caller gets up to N times the rate (docs/security.md). A limiter forgets the least
recently used keys beyond ``max_keys``, so memory stays bounded whatever the number of keys; a forgotten
key starts again with a full bucket, which is what an unknown caller gets anyway.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic

#: Keys each limiter remembers at most (the least recently used are forgotten first).
MAX_KEYS = 100_000


@dataclass(frozen=True)
class Rate:
    """``count`` calls per ``seconds``, in bursts of up to ``burst`` (``count`` when 0)."""

    count: int
    seconds: float
    burst: int = 0

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    @property
    def capacity(self) -> int:
        """Most tokens a bucket holds: the largest cost a single call may ever have."""
        return self.burst or self.count


class RateLimiter:
    """Token buckets by key, each holding up to ``rate.capacity`` tokens and refilled at ``rate``."""

    def __init__(self, rate: Rate, *, max_keys: int = MAX_KEYS, clock: Callable[[], float] = monotonic) -> None:
        self.rate = rate
        self._max_keys = max_keys
        self._clock = clock
        #: key -> (tokens, when they were counted), least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, key: str, now: float) -> float:
        tokens, then = self._buckets.get(key, (float(self.rate.capacity), now))
        return min(float(self.rate.capacity), tokens + (now - then) * self.rate.per_second)

    def wait(self, key: str, cost: int = 1) -> float:
        """The seconds until ``key`` has ``cost`` tokens (0.0 if it has them now); takes nothing.

        A cost beyond the capacity can never be met: callers refuse it before asking (the answer would be
        the time to fill a bucket larger than it is).
        """
        tokens = self._tokens(key, self._clock())
        return 0.0 if tokens >= cost else (cost - tokens) / self.rate.per_second

    def take(self, key: str, cost: int = 1) -> float:
        """Take ``cost`` tokens for ``key``: 0.0 if it had them, else the seconds until it will (none taken)."""
        now = self._clock()
        tokens = self._tokens(key, now)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate.per_second
        self._buckets.pop(key, None)
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def give(self, key: str, count: int) -> None:
        """Give ``count`` tokens back to ``key`` (up to the capacity): what a call took for work it did not cause."""
        if key in self._buckets:
            now = self._clock()
            self._buckets[key] = (min(float(self.rate.capacity), self._tokens(key, now) + count), now)

    def __len__(self) -> int:
        return len(self._buckets)

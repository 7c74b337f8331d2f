"""Rate limits on Register and Login, checked before any bcrypt work.

A bcrypt hash or check costs about 0.26 s of CPU at cost 12, so an unbounded Register or Login
lets anyone hold the auth service's cores: 300 concurrent Registers from one client were all
accepted (300 accounts) and a real user's Login did not answer in 30 s. Each call is therefore
counted, before anything costly, against token buckets: one per client address (Register and
Login each) and one per email (Login). A call beyond its bucket is refused with
RESOURCE_EXHAUSTED, an ErrorInfo reason and a RetryInfo saying when a token is back.

The buckets live in each auth process: with N replicas behind a balancer a client gets up to N
times the rate (docs/security.md). They forget the least recently used keys beyond ``max_keys``,
so memory stays bounded whatever the number of addresses or emails; a forgotten key starts
again with a full bucket, which is what an unknown client gets anyway.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic

from common.errors import ResourceExhausted

#: Keys each limiter remembers at most (the least recently used are forgotten first).
MAX_KEYS = 100_000


class TooManyAttempts(ResourceExhausted):
    """Raised when a client address or an email has used up its Register or Login rate."""

    reason = "TOO_MANY_ATTEMPTS"


@dataclass(frozen=True)
class Rate:
    """``count`` calls per ``seconds``, in bursts of up to ``count``."""

    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


class RateLimiter:
    """Token buckets by key, each holding up to ``rate.count`` tokens and refilled at ``rate``."""

    def __init__(self, rate: Rate, *, max_keys: int = MAX_KEYS, clock: Callable[[], float] = monotonic) -> None:
        self.rate = rate
        self._max_keys = max_keys
        self._clock = clock
        #: key -> (tokens, when they were counted), least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if there was one, else the seconds until there is (none taken)."""
        now = self._clock()
        tokens, then = self._buckets.pop(key, (float(self.rate.count), now))
        tokens = min(float(self.rate.count), tokens + (now - then) * self.rate.per_second)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate.per_second
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


class AttemptLimits:
    """The limits Register and Login are checked against, in that order, before any other work."""

    def __init__(self, *, register_per_address: Rate, login_per_address: Rate, login_per_email: Rate) -> None:
        self.register_per_address = RateLimiter(register_per_address)
        self.login_per_address = RateLimiter(login_per_address)
        self.login_per_email = RateLimiter(login_per_email)

    def register(self, address: str) -> None:
        """Raise TooManyAttempts if ``address`` registered too often."""
        _check(self.register_per_address, address, "too many registrations from this address; retry later")

    def login(self, address: str, email: str) -> None:
        """Raise TooManyAttempts if ``address`` or ``email`` (normalised) tried to log in too often."""
        _check(self.login_per_address, address, "too many logins from this address; retry later")
        _check(self.login_per_email, email, "too many logins for this account; retry later")


def _check(limiter: RateLimiter, key: str, message: str) -> None:
    wait = limiter.take(key)
    if wait > 0:
        raise TooManyAttempts(message, retry_after=wait)

"""Rate limits on Register and Login, checked before any bcrypt work.

A bcrypt hash or check costs about 0.26 s of CPU at cost 12, so an unbounded Register or Login
lets anyone hold the auth service's cores: 300 concurrent Registers from one client were all
accepted (300 accounts) and a real user's Login did not answer in 30 s. Each call is therefore
counted, before anything costly, against token buckets: one per client address (Register and
Login each) and one per email (Login). A call beyond its bucket is refused with
RESOURCE_EXHAUSTED, an ErrorInfo reason and a RetryInfo saying when a token is back.

The buckets (common/rates.py) live in each auth process: with N replicas behind a balancer a
client gets up to N times the rate (docs/security.md).
"""

from __future__ import annotations

from common.rates import Rate, RateLimiter
from jobqueue.runtime.errors import ResourceExhausted


class TooManyAttempts(ResourceExhausted):
    """Raised when a client address or an email has used up its Register or Login rate."""

    reason = "TOO_MANY_ATTEMPTS"


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

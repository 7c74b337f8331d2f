"""Register and Login limits: token buckets by key, and the bounded bcrypt pool."""

from __future__ import annotations

import asyncio

import pytest

from auth_svc.accounts import Accounts
from auth_svc.errors import EmailTaken
from auth_svc.limits import AttemptLimits, TooManyAttempts
from auth_svc.passwords import HashingBusy, PasswordHasher
from common.rates import Rate, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_a_burst_then_one_call_per_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(3, 60), clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(20.0)  # one token every 20 s
    assert limiter.take("b") == 0.0  # another key has its own bucket
    clock.now += 10
    assert limiter.take("a") == pytest.approx(10.0)  # half a token back; refused calls take none
    clock.now += 10
    assert limiter.take("a") == 0.0
    clock.now += 3600
    assert [limiter.take("a") for _ in range(4)][-1] > 0  # refilled to the burst, not beyond


def test_memory_is_bounded_by_forgetting_the_least_recently_used_keys() -> None:
    clock = Clock()
    limiter = RateLimiter(Rate(1, 60), max_keys=2, clock=clock)
    limiter.take("a")
    limiter.take("b")
    limiter.take("a")  # a is now the most recently used
    limiter.take("c")  # forgets b
    assert len(limiter) == 2
    assert limiter.take("b") == 0.0  # forgotten: a full bucket again
    assert limiter.take("c") > 0


def test_attempt_limits_refuse_with_a_retry_delay() -> None:
    limits = AttemptLimits(register_per_address=Rate(1, 60), login_per_address=Rate(2, 60), login_per_email=Rate(1, 60))
    limits.register("10.0.0.1")
    with pytest.raises(TooManyAttempts) as caught:
        limits.register("10.0.0.1")
    assert 0 < caught.value.retry_after <= 60
    limits.login("10.0.0.1", "a@example.com")
    with pytest.raises(TooManyAttempts, match="for this account"):
        limits.login("10.0.0.2", "a@example.com")  # the email's limit holds across addresses


async def test_the_hasher_refuses_at_once_beyond_its_threads_and_waiting_room() -> None:
    hasher = await PasswordHasher.create(10, threads=1, waiting=1)
    try:
        outcomes = await asyncio.gather(
            *(hasher.verify("correct horse battery", None) for _ in range(5)), return_exceptions=True
        )
        refused = [o for o in outcomes if isinstance(o, HashingBusy)]
        assert len(refused) == 3
        assert all(o is False for o in outcomes if not isinstance(o, HashingBusy))
        assert hasher.in_use == 0
        assert await hasher.verify("correct horse battery", None) is False  # free again
    finally:
        hasher.close()


class CountingHasher(PasswordHasher):
    """A real hasher at the lowest cost that counts its hashes."""

    hashes = 0

    async def hash(self, password: str) -> bytes:
        self.hashes += 1
        return await super().hash(password)


class OneUserStore:
    """A store that knows one email, and fails if asked to create anything."""

    async def find_by_email(self, email: str) -> object | None:
        return object() if email == "taken@example.com" else None

    async def create(self, **fields: object) -> object:
        raise AssertionError("a taken email must not reach create")


async def test_registering_a_taken_email_costs_no_hash() -> None:
    hasher = CountingHasher(4, b"", threads=1, waiting=0)
    limits = AttemptLimits(
        register_per_address=Rate(10, 60), login_per_address=Rate(10, 60), login_per_email=Rate(10, 60)
    )
    accounts = Accounts(OneUserStore(), hasher, None, limits)  # type: ignore[arg-type]
    try:
        with pytest.raises(EmailTaken):
            await accounts.register("Taken@example.com", "correct horse battery", "T", client="10.0.0.1")
        assert hasher.hashes == 0
    finally:
        hasher.close()

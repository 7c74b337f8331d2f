"""Password hashing with bcrypt, off the event loop in a bounded pool (each hash costs ~2**rounds work)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import bcrypt

from jobqueue.runtime.errors import ResourceExhausted

T = TypeVar("T")

#: bcrypt reads at most this many bytes of a password; longer ones are refused at registration.
MAX_PASSWORD_BYTES = 72


def hash_password(password: str, rounds: int) -> bytes:
    """A salted bcrypt hash of ``password`` at cost ``rounds`` (blocking)."""
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds))


def check_password(password: str, password_hash: bytes) -> bool:
    """Whether ``password`` matches ``password_hash`` (blocking; takes the hash's full cost either way)."""
    candidate = password.encode("utf-8")
    too_long = len(candidate) > MAX_PASSWORD_BYTES
    # Registration refuses such a password, so it matches nothing; it is still
    # checked (truncated, as bcrypt accepts no more) so refusing it takes as long
    # as refusing any other wrong password.
    matched = bcrypt.checkpw(candidate[:MAX_PASSWORD_BYTES], password_hash)
    return matched and not too_long


class HashingBusy(ResourceExhausted):
    """Raised when every bcrypt thread is busy and the waiting room is full: retry in a moment."""

    reason = "HASHING_BUSY"


class PasswordHasher:
    """Hashes and checks passwords at the configured cost, in ``threads`` threads.

    At most ``waiting`` more calls wait for a thread; any beyond are refused at once with
    HashingBusy (RESOURCE_EXHAUSTED), never queued: a queue that grows would make every
    Login wait behind a flood, where a refusal lets the client retry when told to.
    """

    def __init__(self, rounds: int, dummy_hash: bytes, *, threads: int = 2, waiting: int = 8) -> None:
        self.rounds = rounds
        self._dummy_hash = dummy_hash
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bcrypt")
        self._capacity = threads + waiting
        self._in_use = 0

    @classmethod
    async def create(cls, rounds: int, *, threads: int = 2, waiting: int = 8) -> PasswordHasher:
        """A hasher whose stand-in hash (for unknown accounts) has the same cost as real ones."""
        dummy = await asyncio.to_thread(hash_password, secrets.token_urlsafe(32), rounds)
        return cls(rounds, dummy, threads=threads, waiting=waiting)

    @property
    def in_use(self) -> int:
        """Calls hashing or waiting for a thread now."""
        return self._in_use

    async def hash(self, password: str) -> bytes:
        """A new hash of ``password``."""
        return await self._run(hash_password, password, self.rounds)

    async def verify(self, password: str, password_hash: bytes | None) -> bool:
        """Whether ``password`` matches ``password_hash``; None (no such account) never matches.

        With no hash, the password is checked against a stand-in hash of equal
        cost, so an unknown email takes as long to refuse as a wrong password
        and timing cannot reveal which emails have accounts.
        """
        against = self._dummy_hash if password_hash is None else password_hash
        matched = await self._run(check_password, password, against)
        return matched and password_hash is not None

    async def _run(self, work: Callable[..., T], *args: object) -> T:
        if self._in_use >= self._capacity:
            # Roughly when a place frees: one hash's time for each call ahead per thread.
            raise HashingBusy("password hashing is busy; retry later", retry_after=0.5)
        self._in_use += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        finally:
            self._in_use -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

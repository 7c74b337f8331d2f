"""Password hashing with bcrypt, always off the event loop (each hash costs ~2**rounds work)."""

from __future__ import annotations

import asyncio
import secrets

import bcrypt

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


class PasswordHasher:
    """Hashes and checks passwords in worker threads, at the configured cost."""

    def __init__(self, rounds: int, dummy_hash: bytes) -> None:
        self.rounds = rounds
        self._dummy_hash = dummy_hash

    @classmethod
    async def create(cls, rounds: int) -> PasswordHasher:
        """A hasher whose stand-in hash (for unknown accounts) has the same cost as real ones."""
        dummy = await asyncio.to_thread(hash_password, secrets.token_urlsafe(32), rounds)
        return cls(rounds, dummy)

    async def hash(self, password: str) -> bytes:
        """A new hash of ``password``."""
        return await asyncio.to_thread(hash_password, password, self.rounds)

    async def verify(self, password: str, password_hash: bytes | None) -> bool:
        """Whether ``password`` matches ``password_hash``; None (no such account) never matches.

        With no hash, the password is checked against a stand-in hash of equal
        cost, so an unknown email takes as long to refuse as a wrong password
        and timing cannot reveal which emails have accounts.
        """
        against = self._dummy_hash if password_hash is None else password_hash
        matched = await asyncio.to_thread(check_password, password, against)
        return matched and password_hash is not None

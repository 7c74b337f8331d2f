"""All SQL of the auth service: the ``users`` table (migrations/0001_users.sql)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from auth_svc.errors import EmailTaken


@dataclass(frozen=True)
class User:
    """An account as stored; ``email`` is already normalised."""

    id: uuid.UUID
    email: str
    name: str
    created_at: datetime
    password_hash: bytes = field(repr=False)


class UserStore:
    """Reads and writes accounts through a connection pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, *, email: str, name: str, password_hash: bytes) -> User:
        """Store a new account under a fresh id; raises EmailTaken if ``email`` already has one."""
        user_id = uuid.uuid4()
        try:
            created_at = await self._pool.fetchval(
                "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4) RETURNING created_at",
                user_id,
                email,
                name,
                password_hash,
            )
        except asyncpg.UniqueViolationError:
            # The UNIQUE constraint, not a prior SELECT, decides: two concurrent
            # registrations of one email cannot both pass it.
            raise EmailTaken() from None
        return User(id=user_id, email=email, name=name, created_at=created_at, password_hash=password_hash)

    async def find_by_email(self, email: str) -> User | None:
        """The account with this normalised email, if there is one."""
        row = await self._pool.fetchrow(
            "SELECT id, email, name, created_at, password_hash FROM users WHERE email = $1", email
        )
        if row is None:
            return None
        return User(
            id=row["id"],
            email=row["email"],
            name=row["name"],
            created_at=row["created_at"],
            password_hash=row["password_hash"],
        )

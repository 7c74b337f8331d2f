"""All SQL of the auth service: the ``users`` table (migrations/0001_users.sql, 0007_user_roles.sql)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from auth_svc.errors import EmailTaken
from auth_svc.roles import Role

_COLUMNS = "id, email, name, role, created_at, password_hash"


@dataclass(frozen=True)
class User:
    """An account as stored; ``email`` is already normalised."""

    id: uuid.UUID
    email: str
    name: str
    role: Role
    created_at: datetime
    password_hash: bytes = field(repr=False)


def _user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        role=Role(row["role"]),
        created_at=row["created_at"],
        password_hash=row["password_hash"],
    )


class UserStore:
    """Reads and writes accounts through a connection pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, *, email: str, name: str, password_hash: bytes) -> User:
        """Store a new account, a plain user, under a fresh id; raises EmailTaken if ``email`` already has one."""
        try:
            # The role is left to the column's default: registration never grants one.
            row = await self._pool.fetchrow(
                f"INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4) RETURNING {_COLUMNS}",
                uuid.uuid4(),
                email,
                name,
                password_hash,
            )
        except asyncpg.UniqueViolationError:
            # The UNIQUE constraint, not a prior SELECT, decides: two concurrent
            # registrations of one email cannot both pass it.
            raise EmailTaken() from None
        assert row is not None  # INSERT ... RETURNING yields the row it inserted
        return _user(row)

    async def find_by_email(self, email: str) -> User | None:
        """The account with this normalised email, if there is one."""
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE email = $1", email)
        return None if row is None else _user(row)

    async def set_role(self, email: str, role: Role) -> Role | None:
        """Give the account with this normalised email ``role``; returns its role before, or None if no account.

        Setting the role it already has changes nothing and is not an error.
        """
        # The sub-select locks the row and keeps its old role, so the answer is
        # right even when two operators change the same account at once.
        before: str | None = await self._pool.fetchval(
            """UPDATE users SET role = $2
               FROM (SELECT id, role FROM users WHERE email = $1 FOR UPDATE) AS before
               WHERE users.id = before.id
               RETURNING before.role""",
            email,
            role.value,
        )
        return None if before is None else Role(before)

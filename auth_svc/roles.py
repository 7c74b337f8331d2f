"""Account roles. Every account is a user; an operator may also list and re-run other users' dead jobs.

The role lives in the users table (migrations/0007_user_roles.sql) and is
changed only out of band, with ``python -m auth_svc.admin``: nothing in the API
takes a role, so no caller can make themselves an operator. It reaches the job
service as the access token's ``roles`` claim (see auth_svc.tokens), read at
Login, so a grant or revoke takes effect at the user's next login.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What an account may do; the values are the ones the users table's ``users_role_known`` CHECK allows."""

    USER = "user"
    OPERATOR = "operator"

    @property
    def token_roles(self) -> tuple[str, ...]:
        """The ``roles`` claim for this role: only roles beyond plain user are named, so a user's is empty."""
        return () if self is Role.USER else (self.value,)

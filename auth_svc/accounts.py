"""The two things the auth service does, Register and Login, over its store, hasher and token issuer."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from auth_svc import rules
from auth_svc.errors import EmailTaken, InvalidCredentials
from auth_svc.limits import AttemptLimits
from auth_svc.passwords import PasswordHasher
from auth_svc.store import User, UserStore
from auth_svc.tokens import IssuedToken, TokenIssuer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Session:
    """What a successful login returns: the account and its access token."""

    user: User
    token: IssuedToken


class Accounts:
    """Registers users and logs them in.

    Every call is checked, in order of cost: its fields, then the caller's rate (``limits``), then
    the database, and only then bcrypt, the one costly step (about 0.26 s of CPU at cost 12), in
    the hasher's bounded pool. So a refused call costs almost nothing. ``client`` is the caller's
    address, as the server saw it.
    """

    def __init__(self, store: UserStore, passwords: PasswordHasher, tokens: TokenIssuer, limits: AttemptLimits) -> None:
        self._store = store
        self._passwords = passwords
        self._tokens = tokens
        self._limits = limits

    async def register(self, email: str, password: str, name: str, *, client: str) -> User:
        """Create an account, always a plain user; raises InvalidArgument (every bad field) or EmailTaken."""
        registration = rules.check_registration(email, password, name)
        self._limits.register(client)
        # Looked up before hashing, so registering a taken email costs no bcrypt. (Two racing
        # registrations of a new email both hash; the database's unique index refuses the second.)
        if await self._store.find_by_email(registration.email) is not None:
            raise EmailTaken()
        password_hash = await self._passwords.hash(registration.password)
        user = await self._store.create(email=registration.email, name=registration.name, password_hash=password_hash)
        log.info("user registered", extra={"user_id": str(user.id)})
        return user

    async def login(self, email: str, password: str, *, client: str) -> Session:
        """A session for valid credentials; raises InvalidCredentials for any wrong or unknown pair.

        The token carries the account's role as it is now (its ``roles`` claim):
        this is where a grant or revoke by ``python -m auth_svc.admin`` takes effect.
        """
        normalised = rules.check_login(email, password)
        self._limits.login(client, normalised)
        user = await self._store.find_by_email(normalised)
        matched = await self._passwords.verify(password, None if user is None else user.password_hash)
        if user is None or not matched:
            raise InvalidCredentials()
        return Session(user, self._tokens.issue(str(user.id), user.email, roles=user.role.token_roles))

"""Server-side sessions: the browser holds a random id, the dashboard holds the access token.

A session is created at login and holds the token the auth service issued, so no
token ever reaches the browser (no cookie, URL or script can read it). The
cookie carries 256 random bits; the store is keyed by their SHA-256, so looking
one up never compares secrets byte by byte. A session ends at logout, when its
token expires (its ``exp`` claim), or after ``idle_seconds`` unused; at most
``max_sessions`` are kept, the least recently used forgotten first, so memory
stays bounded whoever calls.

Every state-changing form carries the session's CSRF token (synchronizer
token), compared in constant time. The login form, shown before any session
exists, carries instead a token signed with the dashboard's secret and bound to
a random value in a cookie of its own (a signed double submit), so an
anonymous visitor costs no memory.

Sessions live in this process: they end with it, and replicas behind a
balancer need sticky sessions (docs/dashboard.md).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt

#: The cookie holding the session id.
SESSION_COOKIE = "jq_session"
#: The cookie holding the login form's random value (see ``LoginGuard``).
LOGIN_COOKIE = "jq_login"
#: The role a token carries for an operator (job_svc/auth.py reads the same claim).
OPERATOR_ROLE = "operator"


@dataclass(frozen=True)
class Claims:
    """What the dashboard shows about a token; read WITHOUT verifying it (the job service verifies every call)."""

    email: str
    roles: frozenset[str]
    #: Epoch seconds of ``exp``; 0 if the token names none.
    expires_at: float

    @classmethod
    def of(cls, token: str) -> Claims:
        """The claims of ``token``; empty ones for a token that does not decode (it is then refused on use)."""
        try:
            # Display only: nothing is granted on these claims, the job service decides every call.
            payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return cls("", frozenset(), 0.0)
        roles = payload.get("roles")
        exp = payload.get("exp")
        return cls(
            email=str(payload.get("email", "")),
            roles=frozenset(str(role) for role in roles) if isinstance(roles, list) else frozenset(),
            expires_at=float(exp) if isinstance(exp, int | float) else 0.0,
        )


@dataclass
class Session:
    """One logged-in browser."""

    #: The store's key of it (the hash of its id): names it to the stream limits and in logs, safely.
    key: str
    token: str
    claims: Claims
    #: Every form of this session carries it.
    csrf: str
    last_seen: float
    #: Messages for the next page shown (after a redirect): (kind, text).
    flashes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def operator(self) -> bool:
        """Whether the token says the operator role (for showing the operator pages; the service decides)."""
        return OPERATOR_ROLE in self.claims.roles

    def check_csrf(self, presented: str) -> bool:
        """Whether ``presented`` is this session's CSRF token (constant time)."""
        return hmac.compare_digest(presented.encode(), self.csrf.encode())

    def flash(self, kind: str, text: str) -> None:
        """Show ``text`` on the next page (kind: ok or error); at most a few are kept."""
        self.flashes = [*self.flashes[-4:], (kind, text)]

    def take_flashes(self) -> list[tuple[str, str]]:
        """The messages waiting, now shown and so forgotten."""
        shown, self.flashes = self.flashes, []
        return shown


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Sessions by the hash of their id, bounded in number and in idle time."""

    def __init__(self, *, max_sessions: int, idle_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._max = max_sessions
        self._idle = idle_seconds
        self._clock = clock
        #: Least recently used first.
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, token: str) -> tuple[str, Session]:
        """A new session for ``token``: its id (for the cookie, never stored) and the session."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        key = _key(session_id)
        session = Session(key, token, Claims.of(token), secrets.token_urlsafe(32), now)
        self._sessions[key] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        """The live session of ``session_id``; None if unknown, idle too long or its token expired."""
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock()
        expired = session.claims.expires_at and now >= session.claims.expires_at
        if expired or now - session.last_seen > self._idle:
            del self._sessions[key]
            return None
        session.last_seen = now
        self._sessions.move_to_end(key)
        return session

    def delete(self, session_id: str) -> None:
        """End the session (logout)."""
        self._sessions.pop(_key(session_id), None)

    def __len__(self) -> int:
        return len(self._sessions)


class LoginGuard:
    """CSRF tokens for the login form: HMAC(secret, nonce), the nonce in a cookie of its own."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @staticmethod
    def nonce() -> str:
        """A fresh random value for the login cookie."""
        return secrets.token_urlsafe(32)

    def token(self, nonce: str) -> str:
        """The form token that goes with the cookie's ``nonce``."""
        return hmac.new(self._secret, b"login:" + nonce.encode(), hashlib.sha256).hexdigest()

    def check(self, nonce: str, presented: str) -> bool:
        """Whether the form's ``presented`` token goes with the cookie's ``nonce`` (constant time)."""
        return bool(nonce) and hmac.compare_digest(self.token(nonce).encode(), presented.encode())

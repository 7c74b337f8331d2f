"""web_svc/sessions.py: server-side sessions, bounded; CSRF tokens; the token's claims read for display only."""

from __future__ import annotations

import time

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from web_svc.sessions import Claims, LoginGuard, SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def token(**claims: object) -> str:
    body = {"sub": "u1", "email": "ada@example.com", "roles": ["operator"], "exp": 1_000_600, **claims}
    return jwt.encode(body, Ed25519PrivateKey.generate(), algorithm="EdDSA")


def test_claims_are_read_without_the_key() -> None:
    claims = Claims.of(token())
    assert claims == Claims("ada@example.com", frozenset({"operator"}), 1_000_600.0)
    assert Claims.of("not a token") == Claims("", frozenset(), 0.0)
    assert Claims.of(token(roles="operator")).roles == frozenset()  # not a list: no roles


def test_a_session_ends_when_its_token_expires_or_it_idles() -> None:
    clock = Clock()
    store = SessionStore(max_sessions=10, idle_seconds=300, clock=clock)
    session_id, session = store.create(token())
    assert session.operator
    assert store.get(session_id) is session
    assert store.get(session_id + "x") is None
    clock.now += 299
    assert store.get(session_id) is session  # used: idle time starts again
    clock.now += 299
    assert store.get(session_id) is session
    clock.now = 1_000_600  # the token's exp
    assert store.get(session_id) is None
    assert len(store) == 0

    idle_id, _ = store.create(token(exp=time.time() + 10_000))
    clock.now += 301
    assert store.get(idle_id) is None


def test_the_store_is_bounded_and_keyed_by_hash() -> None:
    store = SessionStore(max_sessions=2, idle_seconds=300, clock=Clock())
    first, _ = store.create(token())
    second, _ = store.create(token())
    store.get(first)  # the most recently used now
    third, _ = store.create(token())
    assert len(store) == 2
    assert store.get(second) is None  # the least recently used was forgotten
    assert store.get(first) is not None
    assert store.get(third) is not None
    assert first not in store._sessions  # the id itself is never a key
    store.delete(first)
    assert store.get(first) is None


def test_csrf_tokens() -> None:
    _, session = SessionStore(max_sessions=2, idle_seconds=300, clock=Clock()).create(token())
    assert session.check_csrf(session.csrf)
    assert not session.check_csrf("")
    assert not session.check_csrf(session.csrf[:-1])

    guard = LoginGuard(b"k" * 32)
    nonce = guard.nonce()
    assert guard.check(nonce, guard.token(nonce))
    assert not guard.check(guard.nonce(), guard.token(nonce))  # another browser's cookie
    assert not guard.check("", guard.token(""))  # no cookie at all
    assert not LoginGuard(b"o" * 32).check(nonce, guard.token(nonce))  # signed with another key


def test_flashes_are_shown_once() -> None:
    _, session = SessionStore(max_sessions=2, idle_seconds=300, clock=Clock()).create(token())
    for i in range(7):
        session.flash("ok", str(i))
    assert session.take_flashes() == [("ok", str(i)) for i in range(2, 7)]
    assert session.take_flashes() == []

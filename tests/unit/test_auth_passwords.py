"""Password hashing (auth_svc.passwords): bcrypt at the configured cost, off the loop, no truncation."""

from __future__ import annotations

import threading

import bcrypt
import pytest

from auth_svc.passwords import PasswordHasher, hash_password


async def test_hash_then_verify_round_trip() -> None:
    hasher = await PasswordHasher.create(5)
    hashed = await hasher.hash("correct horse")
    assert hashed.startswith(b"$2b$05$")  # the configured cost, not bcrypt's default
    assert await hasher.verify("correct horse", hashed)
    assert not await hasher.verify("correct horsE", hashed)
    assert await hasher.hash("correct horse") != hashed  # salted


async def test_unknown_account_costs_a_check_against_a_same_cost_dummy(monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[tuple[bytes, str]] = []
    real_checkpw = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        checked.append((hashed, threading.current_thread().name))
        return real_checkpw(password, hashed)

    hasher = await PasswordHasher.create(5)
    monkeypatch.setattr(bcrypt, "checkpw", spy)
    assert not await hasher.verify("anything at all", None)
    assert len(checked) == 1
    dummy, thread = checked[0]
    assert dummy.startswith(b"$2b$05$")
    assert thread != threading.main_thread().name  # bcrypt never runs on the event loop's thread


async def test_no_account_never_matches_even_the_dummy_password() -> None:
    hasher = PasswordHasher(4, hash_password("the dummy's own password", 4))
    assert not await hasher.verify("the dummy's own password", None)


async def test_password_over_72_bytes_never_matches_its_truncation() -> None:
    hasher = await PasswordHasher.create(4)
    prefix = "é" * 36  # exactly 72 bytes
    hashed = await hasher.hash(prefix)
    # bcrypt would read only the first 72 bytes, so without the explicit refusal these would match.
    assert not await hasher.verify(prefix + "x", hashed)
    assert not await hasher.verify(prefix + "é" * 50, hashed)
    assert await hasher.verify(prefix, hashed)

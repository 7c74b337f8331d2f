"""job_svc.auth: a verified token is remembered until it expires, and never longer."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from job_svc import auth
from job_svc.auth import Authenticator
from job_svc.errors import ExpiredToken, InvalidToken
from jobqueue.runtime.secrets import PUBLIC_KEY, WORKER_TOKEN, ensure_dev_secrets, public_keys
from tests.support.clients import bearer, mint_token


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    return ensure_dev_secrets(tmp_path)


def authenticator(secrets: Path, leeway_seconds: int = 0) -> Authenticator:
    return Authenticator(
        keys=lambda: public_keys((secrets / PUBLIC_KEY).read_bytes(), "the dev key"),
        worker_tokens=lambda: frozenset({(secrets / WORKER_TOKEN).read_bytes().strip()}),
        issuer="jobqueue-auth",
        audience="jobqueue",
        leeway_seconds=leeway_seconds,
    )


@pytest.mark.parametrize("leeway", [0, 1])
def test_a_remembered_token_is_refused_once_it_expires(secrets: Path, leeway: int) -> None:
    checker = authenticator(secrets, leeway)
    user = uuid.uuid4()
    now = int(time.time())
    token = mint_token(secrets, user, iat=now - 1, exp=now + 1)
    assert checker.user(bearer(token)).id == user
    assert checker.user(bearer(token)).id == user  # from memory now
    time.sleep(now + 1.1 - time.time())
    if leeway:  # still accepted within the leeway: from memory now, as it was never refused
        assert checker.user(bearer(token)).id == user
        time.sleep(now + 1 + leeway + 0.1 - time.time())
    with pytest.raises(ExpiredToken):
        checker.user(bearer(token))


def test_only_verified_tokens_are_remembered_and_memory_is_bounded(
    secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "VERIFIED_TOKENS", 3)
    checker = authenticator(secrets)
    forged = mint_token(secrets) + "x"
    for _ in range(2):
        with pytest.raises(InvalidToken):
            checker.user(bearer(forged))
    tokens = [mint_token(secrets, roles=["operator"] if i == 4 else []) for i in range(5)]
    callers = [checker.user(bearer(t)) for t in tokens]
    assert len(checker._verified) == 3
    assert [checker.user(bearer(t)) for t in tokens] == callers
    assert [c.operator for c in callers] == [False] * 4 + [True]

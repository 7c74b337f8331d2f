"""The operator role: granted and revoked only by `python -m auth_svc.admin`, carried by the tokens of later logins.

The command runs as a real subprocess against this session's database, with the
same environment as the auth service it sits next to.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import jwt
import pytest

from jobqueue.auth.v1 import auth_pb2, auth_pb2_grpc
from jobqueue.runtime.secrets import PUBLIC_KEY
from tests.support.processes import ROOT, free_port, start_service

PASSWORD = "correct horse battery"


class Auth:
    """A stub bound to a running auth service, and the key that verifies its tokens."""

    def __init__(self, stub: auth_pb2_grpc.AuthServiceStub, secrets_dir: Path) -> None:
        self.stub = stub
        self.public_key = (secrets_dir / PUBLIC_KEY).read_bytes()

    def register(self, email: str) -> None:
        self.stub.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="Ops"), timeout=10)

    def roles(self, email: str) -> Any:
        """The roles claim of a fresh login's token, verified as the job service verifies it."""
        token = self.stub.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD), timeout=10).access_token
        claims = jwt.decode(token, self.public_key, algorithms=["EdDSA"], audience="jobqueue", issuer="jobqueue-auth")
        return claims["roles"]


@pytest.fixture
def auth(service_env: dict[str, str], secrets_dir: Path, tmp_path: Path) -> Iterator[Auth]:
    process = start_service("auth_svc", service_env, tmp_path / "auth_svc.log")
    try:
        with grpc.insecure_channel(process.address) as channel:
            yield Auth(auth_pb2_grpc.AuthServiceStub(channel), secrets_dir)
    finally:
        assert process.stop() == 0, process.output()


def admin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m auth_svc.admin ARGS` as an operator would, next to the service."""
    return subprocess.run(
        [sys.executable, "-m", "auth_svc.admin", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def unique_email() -> str:
    return f"ops-{uuid.uuid4().hex[:12]}@example.com"


async def stored_role(database_url: str, email: str) -> str | None:
    connection = await asyncpg.connect(database_url)
    try:
        role: str | None = await connection.fetchval("SELECT role FROM users WHERE email = $1", email)
    finally:
        await connection.close()
    return role


def test_a_registered_account_is_a_plain_user_and_the_api_takes_no_role(auth: Auth, database_url: str) -> None:
    # The only way in is Register, and it has no field that could carry a role.
    assert set(auth_pb2.RegisterRequest.DESCRIPTOR.fields_by_name) == {"email", "password", "name"}
    email = unique_email()
    auth.register(email)
    assert asyncio.run(stored_role(database_url, email)) == "user"
    assert auth.roles(email) == []


def test_grant_and_revoke_take_effect_at_the_next_login(
    auth: Auth, database_url: str, service_env: dict[str, str]
) -> None:
    email = unique_email()
    auth.register(email)
    assert auth.roles(email) == []

    # Typed the way people type it: the same normal form Register and Login use.
    granted = admin(service_env, "grant-operator", f"  {email.upper()} ")
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout == f"{email} is now an operator, from their next login\n"
    assert asyncio.run(stored_role(database_url, email)) == "operator"
    assert auth.roles(email) == ["operator"]

    again = admin(service_env, "grant-operator", email)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"{email} already has the operator role; nothing changed\n"
    assert auth.roles(email) == ["operator"]

    revoked = admin(service_env, "revoke-operator", email)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(f"{email} is no longer an operator from their next login")
    assert revoked.stdout.count("\n") == 1
    assert auth.roles(email) == []
    assert asyncio.run(stored_role(database_url, email)) == "user"


def test_an_unknown_email_fails_and_changes_nothing(auth: Auth, service_env: dict[str, str]) -> None:
    someone = unique_email()
    auth.register(someone)
    nobody = unique_email()
    for command in ("grant-operator", "revoke-operator"):
        result = admin(service_env, command, nobody)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr == f"auth_svc.admin: no account has the email {nobody!r}; register it first\n"
    assert auth.roles(someone) == []


def test_an_unreachable_database_or_bad_settings_fail_clearly(service_env: dict[str, str]) -> None:
    closed = f"postgresql://postgres:secret-password@127.0.0.1:{free_port()}/jobqueue"
    result = admin({**service_env, "DATABASE_URL": closed}, "grant-operator", unique_email())
    assert result.returncode == 3
    assert result.stderr.startswith("auth_svc.admin: cannot change the role, database error:")
    assert "Traceback" not in result.stderr
    assert "secret-password" not in result.stderr

    misconfigured = admin({**service_env, "APP_ENV": "prod"}, "grant-operator", unique_email())
    assert misconfigured.returncode == 2
    assert "APP_ENV='prod' must be one of development, production" in misconfigured.stderr


def test_the_database_refuses_any_other_role(database_url: str) -> None:
    async def set_role(role: str) -> None:
        connection = await asyncpg.connect(database_url)
        try:
            user_id = uuid.uuid4()
            await connection.execute(
                "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, 'x', 'x')", user_id, unique_email()
            )
            await connection.execute("UPDATE users SET role = $2 WHERE id = $1", user_id, role)
        finally:
            await connection.close()

    with pytest.raises(asyncpg.CheckViolationError, match="users_role_known"):
        asyncio.run(set_role("admin"))

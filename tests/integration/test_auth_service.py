"""The auth service as a real process (`python -m auth_svc`) against the real PostgreSQL, over real gRPC."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import bcrypt
import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2

from jobqueue.auth.v1 import auth_pb2, auth_pb2_grpc
from jobqueue.runtime.secrets import PRIVATE_KEY, PUBLIC_KEY
from tests.support.clients import error_info
from tests.support.processes import ROOT, ServiceProcess, health_status, start_service
from tests.support.proxy import TcpProxy
from tests.support.tls import Certificates, production_env, tls_certificates_fixture  # noqa: F401 - the fixture

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PASSWORD = "correct horse battery"
TTL_SECONDS = 120


@dataclass
class AuthService:
    """A running auth service and a stub bound to it."""

    process: ServiceProcess
    address: str
    stub: auth_pb2_grpc.AuthServiceStub

    def register(self, email: str, password: str = PASSWORD, name: str = "Ada") -> auth_pb2.User:
        """Register and return the new user."""
        request = auth_pb2.RegisterRequest(email=email, password=password, name=name)
        return self.stub.Register(request, timeout=10).user

    def login(self, email: str, password: str = PASSWORD) -> auth_pb2.LoginResponse:
        """Log in and return the reply."""
        return self.stub.Login(auth_pb2.LoginRequest(email=email, password=password), timeout=10)


def unique_email() -> str:
    """An address no other test (in this session's shared database) uses."""
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


def start(env: dict[str, str], log_path: Path, *, wait: bool = True) -> tuple[ServiceProcess, str]:
    """Start `python -m auth_svc` on a free port (waiting until SERVING unless told not to)."""
    process = start_service("auth_svc", env, log_path, wait=wait)
    return process, process.address


@pytest.fixture
def auth(service_env: dict[str, str], tmp_path: Path) -> Iterator[AuthService]:
    process, address = start({**service_env, "TOKEN_TTL_SECONDS": str(TTL_SECONDS)}, tmp_path / "auth_svc.log")
    with grpc.insecure_channel(address) as channel:
        yield AuthService(process, address, auth_pb2_grpc.AuthServiceStub(channel))
    process.stop()


def failure(call: Callable[[], object]) -> grpc.RpcError:
    """The RpcError ``call()`` raises (fails the test if it succeeds)."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def wait_for_health(address: str, wanted: int, timeout: float = 20.0) -> None:
    """Block until the server at ``address`` reports ``wanted``."""
    deadline = time.monotonic() + timeout
    while (status := health_status(address)) != wanted:
        assert time.monotonic() < deadline, f"health stayed {status}, wanted {wanted}"
        time.sleep(0.1)


async def stored_hash(database_url: str, email: str) -> bytes | None:
    """The password hash stored for ``email``, read straight from the users table."""
    connection = await asyncpg.connect(database_url)
    try:
        value: bytes | None = await connection.fetchval("SELECT password_hash FROM users WHERE email = $1", email)
    finally:
        await connection.close()
    return value


def test_register_then_login_gives_a_token_the_public_key_verifies(
    auth: AuthService, secrets_dir: Path, database_url: str
) -> None:
    email = unique_email()
    user = auth.register(f"  {email.upper()} ", name="  Ada Lovelace ")
    assert user.email == email
    assert user.name == "Ada Lovelace"
    assert uuid.UUID(user.id).version == 4
    assert abs(user.created_at.seconds - time.time()) < 60

    password_hash = asyncio.run(stored_hash(database_url, email))
    assert password_hash is not None
    assert password_hash.startswith(b"$2b$04$")  # bcrypt at BCRYPT_ROUNDS=4 from service_env
    assert bcrypt.checkpw(PASSWORD.encode(), password_hash)

    reply = auth.login(f" {email.title()}")
    assert reply.token_type == "Bearer"
    assert reply.user == user
    assert jwt.get_unverified_header(reply.access_token)["alg"] == "EdDSA"
    claims = jwt.decode(
        reply.access_token,
        (secrets_dir / PUBLIC_KEY).read_bytes(),
        algorithms=["EdDSA"],
        audience="jobqueue",
        issuer="jobqueue-auth",
        options={"require": ["exp", "iat", "sub", "iss", "aud"]},
    )
    assert claims["sub"] == user.id
    assert claims["email"] == email
    assert claims["roles"] == []  # a registered account is a plain user (see test_auth_roles.py)
    assert claims["exp"] == reply.expires_at.seconds
    assert claims["exp"] - claims["iat"] == TTL_SECONDS
    assert abs(claims["iat"] - time.time()) < 60


def test_duplicate_email_in_another_case_already_exists(auth: AuthService) -> None:
    email = unique_email()
    auth.register(email)
    error = failure(lambda: auth.register(f" {email.upper()} ", password="another password"))
    assert error_info(error)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")
    # The first account is untouched: its password still logs in, the second one does not.
    auth.login(email)
    assert failure(lambda: auth.login(email, "another password")).code() == grpc.StatusCode.UNAUTHENTICATED


def test_each_invalid_field_is_named_and_the_service_stays_serving(auth: AuthService) -> None:
    # Cases with a bad password or name use a fresh valid email, registered
    # properly afterwards: that proves the refused request stored nothing.
    refused_emails: list[str] = []

    def fresh() -> str:
        refused_emails.append(unique_email())
        return refused_emails[-1]

    register_cases: list[tuple[str, str, str, list[str]]] = [
        ("", PASSWORD, "Ada", ["email"]),
        ("not-an-email", PASSWORD, "Ada", ["email"]),
        ("ada@@example.com", PASSWORD, "Ada", ["email"]),
        ("a" * 64 + "@" + "b" * 189 + ".com", PASSWORD, "Ada", ["email"]),
        (fresh(), "short", "Ada", ["password"]),
        (fresh(), "x" * 129, "Ada", ["password"]),
        (fresh(), "é" * 37, "Ada", ["password"]),  # 37 characters but 74 bytes
        (fresh(), "🔑" * 19, "Ada", ["password"]),  # 19 characters but 76 bytes
        (fresh(), PASSWORD, "", ["name"]),
        (fresh(), PASSWORD, "   ", ["name"]),
        (fresh(), PASSWORD, "x" * 101, ["name"]),
        (fresh(), PASSWORD, "Ada\nLovelace", ["name"]),
        (fresh(), PASSWORD, "Ada\x00", ["name"]),
        ("nope", "short", "\x07", ["email", "password", "name"]),
    ]
    for email, password, name, fields in register_cases:
        error = failure(partial(auth.register, email, password, name))
        assert error_info(error) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", fields), (email, name)
        assert "Traceback" not in (error.details() or "")

    for email, password, fields in [("", PASSWORD, ["email"]), ("  ", "", ["email", "password"])]:
        error = failure(partial(auth.login, email, password))
        assert error_info(error) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", fields)

    # Credentials no account could have are simply wrong, not a crash.
    for email, password in [("x" * 300, PASSWORD), (unique_email(), "é" * 100), ("ada@example.com", "\x00" * 8)]:
        error = failure(partial(auth.login, email, password))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED

    assert health_status(auth.address) == SERVING
    assert health_status(auth.address, "jobqueue.auth.v1.AuthService") == SERVING
    for email in refused_emails:
        assert auth.register(email).email == email


def test_wrong_password_and_unknown_email_get_the_same_answer(auth: AuthService) -> None:
    email = unique_email()
    auth.register(email)
    wrong_password = failure(lambda: auth.login(email, "not the password"))
    unknown_email = failure(lambda: auth.login(unique_email(), PASSWORD))
    for error in (wrong_password, unknown_email):
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == "invalid email or password"
    assert error_info(wrong_password) == error_info(unknown_email)
    assert wrong_password.trailing_metadata() == unknown_email.trailing_metadata()


def test_sigterm_stops_cleanly(auth: AuthService) -> None:
    auth.register(unique_email())
    assert auth.process.stop() == 0, auth.process.output()
    assert '"msg": "stopped"' in auth.process.output()


def test_production_without_a_key_refuses_to_start(
    service_env: dict[str, str], tls_certificates: Certificates, tmp_path: Path
) -> None:
    never_created = tmp_path / "dev-secrets"
    env = {
        **service_env,
        **production_env(
            tls_certificates, database_url=service_env["DATABASE_URL"], rabbitmq_url=service_env["RABBITMQ_URL"]
        ),
        "BCRYPT_ROUNDS": "12",
        "JWT_PRIVATE_KEY": "",
        "JWT_PRIVATE_KEY_FILE": "",
        "DEV_SECRETS_DIR": str(never_created),
    }
    process, _ = start(env, tmp_path / "auth_svc.log", wait=False)
    code = process.exit_code()
    output = process.output()
    assert code == 2, output
    assert "JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE must be set when APP_ENV=production" in output
    assert "Traceback" not in output
    assert not never_created.exists()


def test_production_refuses_weak_bcrypt_and_runs_with_a_key_file(
    service_env: dict[str, str], secrets_dir: Path, tls_certificates: Certificates, tmp_path: Path
) -> None:
    production = production_env(
        tls_certificates, database_url=service_env["DATABASE_URL"], rabbitmq_url=service_env["RABBITMQ_URL"]
    )
    env = {**service_env, **production, "JWT_PRIVATE_KEY_FILE": str(secrets_dir / PRIVATE_KEY)}
    weak, _ = start({**env, "BCRYPT_ROUNDS": "9"}, tmp_path / "weak.log", wait=False)
    code = weak.exit_code()
    assert code == 2, weak.output()
    assert "BCRYPT_ROUNDS=9 is too weak for APP_ENV=production" in weak.output()

    strong, address = start({**env, "BCRYPT_ROUNDS": "10"}, tmp_path / "strong.log")
    try:
        tls = grpc.ssl_channel_credentials(tls_certificates.ca.read_bytes())
        with grpc.secure_channel(address, tls) as channel:
            service = AuthService(strong, address, auth_pb2_grpc.AuthServiceStub(channel))
            email = unique_email()
            service.register(email)
            token = service.login(email).access_token
    finally:
        code = strong.stop()
    assert code == 0, strong.output()
    jwt.decode(token, (secrets_dir / PUBLIC_KEY).read_bytes(), algorithms=["EdDSA"], audience="jobqueue")
    assert "development key" not in strong.output()


def test_starts_without_the_database_and_recovers_on_its_own(
    service_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    database = urlsplit(database_url)
    proxy = TcpProxy(database.hostname or "127.0.0.1", database.port or 5432)
    proxy_port = proxy.start()
    proxy.cut()
    through_proxy = database._replace(netloc=f"{database.username}@127.0.0.1:{proxy_port}").geturl()
    process, address = start({**service_env, "DATABASE_URL": through_proxy}, tmp_path / "auth_svc.log", wait=False)
    try:
        with grpc.insecure_channel(address) as channel:
            service = AuthService(process, address, auth_pb2_grpc.AuthServiceStub(channel))
            wait_for_health(address, NOT_SERVING)
            assert health_status(address, "postgres") == NOT_SERVING
            error = failure(lambda: service.register(unique_email()))
            assert error_info(error)[:2] == (grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")

            proxy.restore()
            wait_for_health(address, SERVING)
            email = unique_email()
            service.register(email)

            proxy.cut()
            wait_for_health(address, NOT_SERVING)
            assert failure(lambda: service.login(email)).code() == grpc.StatusCode.UNAVAILABLE

            proxy.restore()
            wait_for_health(address, SERVING)
            service.login(email)
    finally:
        code = process.stop()
        proxy.stop()
    assert code == 0, process.output()


def test_help_lists_the_settings() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "auth_svc", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    for variable in ("AUTH_PORT", "BCRYPT_ROUNDS", "TOKEN_TTL_SECONDS", "JWT_PRIVATE_KEY_FILE", "DATABASE_URL"):
        assert variable in result.stdout

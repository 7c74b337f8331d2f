"""Access tokens: what auth_svc's TokenIssuer mints, job_svc's Authenticator accepts, and nothing else.

Both sides are the real ones, each configured from its own service's default
settings, so a change to either (a claim, an algorithm, a default issuer or
audience) that the other does not follow fails here.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auth_svc.roles import Role
from auth_svc.settings import AuthSettings
from auth_svc.tokens import ROLES_CLAIM, TokenIssuer, load_private_key
from job_svc.auth import Authenticator, Caller
from job_svc.errors import ExpiredToken, InvalidToken, OperatorsOnly
from job_svc.settings import Settings as JobSettings
from jobqueue.runtime.secrets import key_id, public_keys
from jobqueue.runtime.settings import SettingsError, load
from tests.support.clients import bearer
from tests.support.processes import ROOT

TTL = 900
WORKER_TOKEN = b"the-worker-secret"


def pem(key: Ed25519PrivateKey) -> bytes:
    """``key`` as unencrypted PKCS8 PEM, as the dev secrets and operators store it."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def authenticator(public_key: Ed25519PublicKey, **overrides: str) -> Authenticator:
    """The job service's Authenticator trusting ``public_key``, with its default settings (``overrides`` aside)."""
    settings = load(JobSettings, {})
    public_pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Authenticator(
        keys=lambda: public_keys(public_pem, "the test's key"),
        worker_tokens=lambda: frozenset({WORKER_TOKEN}),
        issuer=overrides.get("issuer", settings.jwt_issuer),
        audience=overrides.get("audience", settings.jwt_audience),
        leeway_seconds=settings.jwt_leeway_seconds,
    )


def accept(token: str, public_key: Ed25519PublicKey, **overrides: str) -> Caller:
    """The caller the job service reads from ``token`` (raising what it raises for a bad one)."""
    return authenticator(public_key, **overrides).user(bearer(token))


def claims_of(token: str) -> dict[str, Any]:
    """The token's claims, read without checking anything (what is checked is ``accept``'s job)."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def issuer(key: Ed25519PrivateKey) -> TokenIssuer:
    """The auth service's TokenIssuer, with its default settings' issuer and audience."""
    settings = load(AuthSettings, {})
    return TokenIssuer(key, issuer=settings.jwt_issuer, audience=settings.jwt_audience, ttl_seconds=TTL)


def test_the_job_service_accepts_what_the_auth_service_mints(key: Ed25519PrivateKey, issuer: TokenIssuer) -> None:
    subject = uuid.uuid4()
    before = datetime.now(UTC).replace(microsecond=0)
    issued = issuer.issue(str(subject), "ada@example.com")

    assert accept(issued.token, key.public_key()) == Caller(subject, operator=False)
    assert jwt.get_unverified_header(issued.token) == {"alg": "EdDSA", "typ": "JWT", "kid": key_id(key.public_key())}
    claims = claims_of(issued.token)
    assert claims["email"] == "ada@example.com"
    assert before.timestamp() <= claims["iat"] <= datetime.now(UTC).timestamp()
    assert claims["exp"] - claims["iat"] == TTL
    # The response's expires_at names exactly the instant the exp claim does.
    assert issued.expires_at == datetime.fromtimestamp(claims["exp"], UTC)
    assert claims[ROLES_CLAIM] == []  # no roles given: a plain user


@pytest.mark.parametrize(("role", "expected"), [(Role.USER, []), (Role.OPERATOR, ["operator"])])
def test_only_an_operators_token_passes_the_operator_check(
    key: Ed25519PrivateKey, issuer: TokenIssuer, role: Role, expected: list[str]
) -> None:
    token = issuer.issue(str(uuid.uuid4()), "ada@example.com", roles=role.token_roles).token
    assert claims_of(token)[ROLES_CLAIM] == expected
    checker = authenticator(key.public_key())
    assert checker.user(bearer(token)).operator is (role is Role.OPERATOR)
    if role is Role.OPERATOR:
        checker.operator(bearer(token))
    else:
        with pytest.raises(OperatorsOnly):
            checker.operator(bearer(token))


def test_roles_are_exactly_what_the_users_table_allows() -> None:
    migration = (ROOT / "migrations" / "0007_user_roles.sql").read_text()
    check = re.search(r"CONSTRAINT users_role_known CHECK \(role IN \(([^)]*)\)\)", migration)
    assert check is not None
    assert {value.strip().strip("'") for value in check[1].split(",")} == {role.value for role in Role}
    # A new account gets the column's default role, whose tokens must name no role at all.
    default = re.search(r"ADD COLUMN role text NOT NULL DEFAULT '(\w+)'", migration)
    assert default is not None
    assert Role(default[1]).token_roles == ()


def test_expiry_is_honoured(key: Ed25519PrivateKey, issuer: TokenIssuer) -> None:
    # Expired for longer than the job service's default leeway for clock skew.
    leeway = load(JobSettings, {}).jwt_leeway_seconds
    long_ago = datetime.now(UTC) - timedelta(seconds=TTL + leeway + 5)
    expired = issuer.issue(str(uuid.uuid4()), "ada@example.com", now=long_ago)
    assert expired.expires_at < datetime.now(UTC)
    with pytest.raises(ExpiredToken):
        accept(expired.token, key.public_key())

    just_in_time = datetime.now(UTC) - timedelta(seconds=TTL - 30)
    accept(issuer.issue(str(uuid.uuid4()), "ada@example.com", now=just_in_time).token, key.public_key())


def test_another_key_is_rejected(issuer: TokenIssuer) -> None:
    token = issuer.issue(str(uuid.uuid4()), "ada@example.com").token
    with pytest.raises(InvalidToken, match="kid unknown"):
        accept(token, Ed25519PrivateKey.generate().public_key())


def test_a_token_naming_a_trusted_key_but_signed_by_another_is_rejected(key: Ed25519PrivateKey) -> None:
    settings = load(AuthSettings, {})
    forger = TokenIssuer(
        Ed25519PrivateKey.generate(), issuer=settings.jwt_issuer, audience=settings.jwt_audience, ttl_seconds=TTL
    )
    forger.key_id = key_id(key.public_key())  # the kid of the key the job service trusts
    token = forger.issue(str(uuid.uuid4()), "ada@example.com").token
    assert jwt.get_unverified_header(token)["kid"] == key_id(key.public_key())
    with pytest.raises(InvalidToken, match="not valid"):
        accept(token, key.public_key())


@pytest.mark.parametrize("expected", [{"audience": "someone-else"}, {"issuer": "someone-else"}])
def test_another_audience_or_issuer_is_rejected(
    key: Ed25519PrivateKey, issuer: TokenIssuer, expected: dict[str, str]
) -> None:
    token = issuer.issue(str(uuid.uuid4()), "ada@example.com").token
    with pytest.raises(InvalidToken):
        accept(token, key.public_key(), **expected)


def test_a_tampered_token_is_rejected(key: Ed25519PrivateKey, issuer: TokenIssuer) -> None:
    header, _, signature = issuer.issue(str(uuid.uuid4()), "ada@example.com").token.split(".")
    forged_body = jwt.utils.base64url_encode(b'{"sub":"someone-else","exp":9999999999}').decode()
    with pytest.raises(InvalidToken):
        accept(f"{header}.{forged_body}.{signature}", key.public_key())


def test_private_key_loads_from_pem_including_escaped_newlines(key: Ed25519PrivateKey) -> None:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for text in (pem(key), pem(key).replace(b"\n", b"\\n")):
        loaded = load_private_key(text)
        assert loaded.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw


def test_private_key_must_be_ed25519_pem() -> None:
    with pytest.raises(SettingsError, match="JWT_PRIVATE_KEY is not"):
        load_private_key(b"not a key")
    ec_key = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(SettingsError, match="must be an Ed25519 key"):
        load_private_key(ec_key)

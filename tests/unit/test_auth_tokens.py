"""Access tokens (auth_svc.tokens): what auth_svc mints is what job_svc's contract verifies, and nothing else is."""

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
from auth_svc.tokens import ROLES_CLAIM, TokenIssuer, load_private_key
from common.settings import SettingsError
from tests.support.processes import ROOT

ISSUER = "jobqueue-auth"
AUDIENCE = "jobqueue"
TTL = 900


def verify(token: str, public_key: Ed25519PublicKey, audience: str = AUDIENCE) -> dict[str, Any]:
    """Decode ``token`` the way the JWT contract says job_svc does."""
    claims: dict[str, Any] = jwt.decode(
        token,
        public_key,
        algorithms=["EdDSA"],
        audience=audience,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "sub", "iss", "aud"]},
    )
    return claims


def pem(key: Ed25519PrivateKey) -> bytes:
    """``key`` as unencrypted PKCS8 PEM, as the dev secrets and operators store it."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def issuer(key: Ed25519PrivateKey) -> TokenIssuer:
    return TokenIssuer(key, issuer=ISSUER, audience=AUDIENCE, ttl_seconds=TTL)


def test_round_trip_carries_every_contract_claim(key: Ed25519PrivateKey, issuer: TokenIssuer) -> None:
    subject = str(uuid.uuid4())
    before = datetime.now(UTC).replace(microsecond=0)
    issued = issuer.issue(subject, "ada@example.com")

    assert jwt.get_unverified_header(issued.token)["alg"] == "EdDSA"
    claims = verify(issued.token, key.public_key())
    assert claims["sub"] == subject
    assert claims["email"] == "ada@example.com"
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert before.timestamp() <= claims["iat"] <= datetime.now(UTC).timestamp()
    assert claims["exp"] - claims["iat"] == TTL
    # The response's expires_at names exactly the instant the exp claim does.
    assert issued.expires_at == datetime.fromtimestamp(claims["exp"], UTC)
    assert claims[ROLES_CLAIM] == []  # no roles given: a plain user


def is_operator(claims: dict[str, Any]) -> bool:
    """The job service's reading of the roles claim (the contract in auth_svc.tokens)."""
    roles = claims.get("roles", [])
    return isinstance(roles, list) and "operator" in roles


@pytest.mark.parametrize(("role", "expected"), [(Role.USER, []), (Role.OPERATOR, ["operator"])])
def test_roles_claim_names_only_roles_beyond_plain_user(
    key: Ed25519PrivateKey, issuer: TokenIssuer, role: Role, expected: list[str]
) -> None:
    claims = verify(issuer.issue(str(uuid.uuid4()), "ada@example.com", roles=role.token_roles).token, key.public_key())
    assert claims["roles"] == expected
    assert is_operator(claims) is (role is Role.OPERATOR)


def test_roles_are_exactly_what_the_users_table_allows() -> None:
    migration = (ROOT / "migrations" / "0007_user_roles.sql").read_text()
    check = re.search(r"CONSTRAINT users_role_known CHECK \(role IN \(([^)]*)\)\)", migration)
    assert check is not None
    assert {value.strip().strip("'") for value in check[1].split(",")} == {role.value for role in Role}
    assert "DEFAULT 'user'" in migration
    assert Role("user") is Role.USER


def test_expiry_is_honoured(key: Ed25519PrivateKey, issuer: TokenIssuer) -> None:
    long_ago = datetime.now(UTC) - timedelta(seconds=TTL + 5)
    expired = issuer.issue(str(uuid.uuid4()), "ada@example.com", now=long_ago)
    assert expired.expires_at < datetime.now(UTC)
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(expired.token, key.public_key())

    just_in_time = datetime.now(UTC) - timedelta(seconds=TTL - 30)
    verify(issuer.issue(str(uuid.uuid4()), "ada@example.com", now=just_in_time).token, key.public_key())


def test_another_key_is_rejected(issuer: TokenIssuer) -> None:
    token = issuer.issue(str(uuid.uuid4()), "ada@example.com").token
    with pytest.raises(jwt.InvalidSignatureError):
        verify(token, Ed25519PrivateKey.generate().public_key())


def test_another_audience_is_rejected(key: Ed25519PrivateKey, issuer: TokenIssuer) -> None:
    token = issuer.issue(str(uuid.uuid4()), "ada@example.com").token
    with pytest.raises(jwt.InvalidAudienceError):
        verify(token, key.public_key(), audience="someone-else")


def test_a_tampered_token_is_rejected(key: Ed25519PrivateKey, issuer: TokenIssuer) -> None:
    header, _, signature = issuer.issue(str(uuid.uuid4()), "ada@example.com").token.split(".")
    forged_body = jwt.utils.base64url_encode(b'{"sub":"someone-else","exp":9999999999}').decode()
    with pytest.raises(jwt.InvalidSignatureError):
        verify(f"{header}.{forged_body}.{signature}", key.public_key())


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

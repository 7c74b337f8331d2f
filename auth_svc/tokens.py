"""Access tokens: EdDSA (Ed25519) JWTs that the job service verifies with the public key alone.

Header: ``kid`` names the signing key by its JWK thumbprint (jobqueue.runtime.secrets.key_id),
so the job service, which may trust several keys while one replaces another,
knows which one verifies the token.

Claims (the contract job_svc checks): ``sub`` (the user's UUID), ``email``,
``iat``, ``exp``, ``iss``, ``aud`` and ``roles``.

``roles`` lists the user's roles beyond plain user (auth_svc.roles):
``["operator"]`` for an operator, ``[]`` for everyone else. The job service
treats a token whose ``roles`` contains ``"operator"`` as an operator's, and a
token without the claim (or with any other list) as a plain user's.

The roles are read from the database at Login and frozen into the token: a
grant or revoke (``python -m auth_svc.admin``) takes effect at the user's next
login, and a token already issued keeps the roles it was minted with until it
expires (TOKEN_TTL_SECONDS after login).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jobqueue.runtime.secrets import key_id
from jobqueue.runtime.settings import SettingsError

ALGORITHM = "EdDSA"
#: The claim naming the user's roles beyond plain user; see the module docstring.
ROLES_CLAIM = "roles"
TOKEN_TYPE = "Bearer"  # noqa: S105 - the OAuth token type, not a secret


@dataclass(frozen=True)
class IssuedToken:
    """A signed token and the instant its ``exp`` claim names."""

    token: str
    expires_at: datetime


def load_private_key(pem: bytes, *, variable: str = "JWT_PRIVATE_KEY") -> Ed25519PrivateKey:
    """The Ed25519 private key in ``pem``; raises SettingsError (naming ``variable``) for anything else."""
    # An inline key in an env file or compose YAML often arrives with its line
    # breaks written as the two characters "\n".
    text = pem.replace(b"\\n", b"\n")
    try:
        key = serialization.load_pem_private_key(text, password=None)
    except (ValueError, TypeError):
        raise SettingsError(f"{variable} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SettingsError(f"{variable} must be an Ed25519 key (tokens are signed with EdDSA)")
    return key


class TokenIssuer:
    """Mints access tokens for users."""

    def __init__(self, key: Ed25519PrivateKey, *, issuer: str, audience: str, ttl_seconds: int) -> None:
        self._key = key
        #: The signing key's id, written into every token's ``kid`` header.
        self.key_id = key_id(key.public_key())
        self._issuer = issuer
        self._audience = audience
        self._ttl = timedelta(seconds=ttl_seconds)

    def issue(self, subject: str, email: str, *, roles: Sequence[str] = (), now: datetime | None = None) -> IssuedToken:
        """A token for user ``subject`` with ``roles``, valid from ``now`` (default: the current time) for the TTL.

        The roles are fixed for the token's life: a role granted or revoked
        later shows only in the tokens of later logins.
        """
        # JWT times are whole seconds; truncating first keeps expires_at equal to the exp claim.
        issued_at = (now or datetime.now(UTC)).replace(microsecond=0)
        expires_at = issued_at + self._ttl
        claims = {
            "sub": subject,
            "email": email,
            "iat": issued_at,
            "exp": expires_at,
            "iss": self._issuer,
            "aud": self._audience,
            ROLES_CLAIM: list(roles),
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.key_id})
        return IssuedToken(token, expires_at)

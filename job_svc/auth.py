"""Who is calling: verifies user access tokens (public key only) and the worker token."""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from job_svc.errors import (
    ExpiredToken,
    InvalidToken,
    MissingCredentials,
    OperatorsOnly,
    UsersOnly,
    WorkersOnly,
)

Metadata = Iterable[tuple[str, str | bytes]] | None

#: The role (in an access token's ``roles`` claim) that may see and re-run every user's dead jobs.
OPERATOR_ROLE = "operator"
#: How many verified tokens are remembered (the oldest is forgotten first).
VERIFIED_TOKENS = 10_000


@dataclass(frozen=True)
class Caller:
    """A user, as their access token names them."""

    id: uuid.UUID
    operator: bool = False


class Authenticator:
    """Checks the `authorization` metadata of a call against the role the call needs."""

    def __init__(self, *, public_key_pem: bytes, issuer: str, audience: str, worker_token: bytes) -> None:
        # Loading once up front both validates the configured key and saves
        # re-parsing the PEM on every call.
        self._key = _load_public(public_key_pem)
        self._issuer = issuer
        self._audience = audience
        self._worker_token = worker_token
        #: Tokens already verified: the caller and the token's expiry (a Unix time), oldest first.
        self._verified: dict[str, tuple[Caller, float]] = {}

    def user(self, metadata: Metadata) -> Caller:
        """The user whose access token the call carries."""
        token = _bearer(metadata)
        if self._is_worker(token):
            raise UsersOnly("the worker token may only call UpdateJob and UpdateJobs")
        return self._verify(token)

    def operator(self, metadata: Metadata) -> Caller:
        """The caller, if their access token carries the operator role."""
        caller = self.user(metadata)
        if not caller.operator:
            raise OperatorsOnly("only operators may list or re-run every user's dead jobs")
        return caller

    def worker(self, metadata: Metadata) -> None:
        """Return only if the call carries the worker token."""
        token = _bearer(metadata)
        if not self._is_worker(token):
            self._verify(token)  # a bad token is UNAUTHENTICATED, a user's is PERMISSION_DENIED
            raise WorkersOnly("only workers may call UpdateJob and UpdateJobs")

    def _is_worker(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self._worker_token)

    def _verify(self, token: str) -> Caller:
        """The caller a valid token names; a token seen before is only checked for expiry.

        A signature check costs more CPU than the rest of a CreateJob call, and
        a client sends the same token on every call until it expires.
        """
        known = self._verified.get(token)
        if known is not None:
            caller, expires = known
            if time.time() < expires:
                return caller
            del self._verified[token]
        caller, expires = self._check(token)
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (caller, expires)
        return caller

    def _check(self, token: str) -> tuple[Caller, float]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["EdDSA"],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise ExpiredToken("access token has expired; log in again") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("access token is not valid") from None
        roles = claims.get("roles", [])
        try:
            subject = uuid.UUID(str(claims["sub"]))
        except ValueError:
            raise InvalidToken("access token is not valid") from None
        if not isinstance(roles, list):
            raise InvalidToken("access token is not valid")
        return Caller(subject, operator=OPERATOR_ROLE in roles), float(claims["exp"])


def _bearer(metadata: Metadata) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise MissingCredentials("authorization metadata must be 'Bearer <token>'")
            return token.strip()
    raise MissingCredentials("missing authorization metadata: send 'authorization: Bearer <token>'")


def _load_public(pem: bytes) -> Ed25519PublicKey:
    key = load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("JWT public key must be an Ed25519 key")
    return key

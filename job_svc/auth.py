"""Who is calling: verifies user access tokens (public keys only) and the worker token.

Both credentials rotate with nobody logged out and no restart, because the
service trusts a set of each, read again from its files while it runs
(``Reloading``): a new key or worker token is added, used, and the old one
removed. An access token names the key that signed it in its ``kid`` header
(the key's JWK thumbprint, jobqueue.runtime.secrets.key_id). A token without one is
accepted only while exactly one key is trusted: the auth service before kids
minted such tokens, and they stay in flight for a token lifetime after the
upgrade; with one key there is no doubt which key must verify them, and with
several, trying each would multiply the cost of every forged token.

Workers may be required to call over mutual TLS too (``worker_certificates``,
TLS_CLIENT_CA_FILE): their reports are then refused, before the token is even
looked at, on any connection that did not present a client certificate the
service verified. A leaked worker token alone no longer settles jobs.

Clocks: ``leeway_seconds`` (JWT_LEEWAY_SECONDS) is allowed between the auth
host's clock and this one's, both ways: a token is accepted that long before
its ``iat``/``nbf`` (an auth host running ahead) and after its ``exp``.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from job_svc.errors import (
    CertificateRequired,
    ExpiredToken,
    InvalidToken,
    MissingCredentials,
    OperatorsOnly,
    UsersOnly,
    WorkersOnly,
)
from jobqueue.runtime.settings import SettingsError

log = logging.getLogger(__name__)
T = TypeVar("T")

Metadata = Iterable[tuple[str, str | bytes]] | None
#: The trusted public keys, by key id (``kid``).
Keys = Mapping[str, Ed25519PublicKey]

#: The role (in an access token's ``roles`` claim) that may see and re-run every user's dead jobs.
OPERATOR_ROLE = "operator"
#: How many verified tokens are remembered (the oldest is forgotten first).
VERIFIED_TOKENS = 10_000
#: How often the key and worker token files are read again, at the first call after this many seconds.
REREAD_SECONDS = 10.0
#: The shortest time between two reads a call with an unknown key id or worker token may cause.
SOONEST_REREAD_SECONDS = 2.0


@dataclass(frozen=True)
class Caller:
    """A user, as their access token names them."""

    id: uuid.UUID
    operator: bool = False


class Reloading(Generic[T]):
    """A value read from files at start and again while the service runs, so changing a file needs no restart.

    ``read`` runs at once (its SettingsError stops the start), then again at the
    first ``get`` once ``every`` seconds have passed, or at a ``miss`` (a call
    presented something the value lacks) once ``soonest`` have, so made-up key
    ids cannot make the service read the disk on every call. The files are
    small: a read takes well under a millisecond, on the calling thread. A later
    read that fails keeps the last good value and logs why, so a file caught
    half-written is simply read again next time.
    """

    def __init__(
        self,
        read: Callable[[], T],
        *,
        what: str,
        describe: Callable[[T], object],
        every: float = REREAD_SECONDS,
        soonest: float = SOONEST_REREAD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._what = what
        self._describe = describe
        self._every = every
        self._soonest = soonest
        self._clock = clock
        self._value = read()
        self._read_at = clock()
        log.info("%s loaded", what, extra={"loaded": describe(self._value)})

    def get(self) -> T:
        """The value, read again first if it is ``every`` seconds old."""
        if self._clock() - self._read_at >= self._every:
            self._reload()
        return self._value

    def miss(self) -> bool:
        """Read again now, unless the value is younger than ``soonest`` seconds; whether it was read."""
        if self._clock() - self._read_at < self._soonest:
            return False
        self._reload()
        return True

    def _reload(self) -> None:
        self._read_at = self._clock()
        try:
            value = self._read()
        except (SettingsError, OSError) as error:
            log.warning("%s not read again; the last ones stay in use", self._what, extra={"error": str(error)})
            return
        if value != self._value:
            self._value = value
            log.info("%s changed", self._what, extra={"loaded": self._describe(value)})


class Authenticator:
    """Checks the `authorization` metadata of a call against the role the call needs."""

    def __init__(
        self,
        *,
        keys: Callable[[], Keys],
        worker_tokens: Callable[[], frozenset[bytes]],
        issuer: str,
        audience: str,
        leeway_seconds: float,
        worker_certificates: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``keys`` and ``worker_tokens`` read the trusted sets; each is called now and again while running.

        ``worker_certificates``: workers must also call with a verified client certificate.
        """
        # Loading up front both validates the configured keys and saves re-parsing PEM on every call.
        self._keys = Reloading(keys, what="public keys", describe=sorted, clock=clock)
        self._worker_tokens = Reloading(worker_tokens, what="worker tokens", describe=len, clock=clock)
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._worker_certificates = worker_certificates
        #: Tokens already verified: the caller, the instant (Unix time) they stop being accepted, and the kid of
        #: the key that verified them, so a token outlives neither its expiry nor its key. Oldest first.
        self._verified: dict[str, tuple[Caller, float, str]] = {}

    def worker_tokens(self) -> frozenset[bytes]:
        """The worker tokens trusted now; the job service signs its messages with each (jobqueue.runtime.signing)."""
        return self._worker_tokens.get()

    def user(self, metadata: Metadata) -> Caller:
        """The user whose access token the call carries."""
        token = _bearer(metadata)
        if self._is_worker(token):
            raise UsersOnly("the worker token may only call UpdateJob, UpdateJobs and DeclareJobTypes")
        return self._verify(token)

    def operator(self, metadata: Metadata) -> Caller:
        """The caller, if their access token carries the operator role."""
        caller = self.user(metadata)
        if not caller.operator:
            raise OperatorsOnly("only operators may list or re-run every user's dead jobs")
        return caller

    def worker(self, metadata: Metadata, *, certified: Callable[[], bool] = lambda: False) -> None:
        """Return only if the call carries a worker token (and, if required, came with a client certificate).

        ``certified`` tells whether the call's connection presented a verified client certificate.
        """
        if self._worker_certificates and not certified():
            raise CertificateRequired(
                "workers must call over mutual TLS: present a client certificate (to the job service's worker port)"
            )
        token = _bearer(metadata)
        # A token added to the file since the last read (a worker already switched to it) is found by reading now.
        if not self._is_worker(token) and not (self._worker_tokens.miss() and self._is_worker(token)):
            self._verify(token)  # a bad token is UNAUTHENTICATED, a user's is PERMISSION_DENIED
            raise WorkersOnly("only workers may call UpdateJob, UpdateJobs and DeclareJobTypes")

    def _is_worker(self, token: str) -> bool:
        presented = token.encode()
        # Every token is compared, in constant time each, so the time taken tells nothing about which one matched.
        matched = False
        for known in self._worker_tokens.get():
            matched |= hmac.compare_digest(presented, known)
        return matched

    def _verify(self, token: str) -> Caller:
        """The caller a valid token names; a token seen before is only checked for expiry and its key.

        A signature check costs more CPU than the rest of a CreateJob call, and
        a client sends the same token on every call until it expires.
        """
        known = self._verified.get(token)
        if known is not None:
            caller, until, key_id = known
            if time.time() < until and key_id in self._keys.get():
                return caller
            del self._verified[token]
        caller, until, key_id = self._check(token)
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (caller, until, key_id)
        return caller

    def _check(self, token: str) -> tuple[Caller, float, str]:
        key_id, key = self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise ExpiredToken("access token has expired; log in again") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("access token is not valid yet (issued ahead of this service's clock)") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("access token is not valid") from None
        roles = claims.get("roles", [])
        try:
            subject = uuid.UUID(str(claims["sub"]))
        except ValueError:
            raise InvalidToken("access token is not valid") from None
        if not isinstance(roles, list):
            raise InvalidToken("access token is not valid")
        return Caller(subject, operator=OPERATOR_ROLE in roles), float(claims["exp"]) + self._leeway, key_id

    def _key_for(self, token: str) -> tuple[str, Ed25519PublicKey]:
        """The trusted key the token's ``kid`` names (the only one, for a token without a kid), with its id."""
        try:
            key_id = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise InvalidToken("access token is not valid") from None
        keys = self._keys.get()
        if key_id is None:
            if len(keys) == 1:
                return next(iter(keys.items()))
            raise InvalidToken("access token names no signing key (kid); log in again")
        if not isinstance(key_id, str):
            raise InvalidToken("access token is not valid")
        if key_id not in keys and self._keys.miss():
            keys = self._keys.get()
            if key_id not in keys:
                # At most once per SOONEST_REREAD_SECONDS: the usual cause is a new signing key not added here first.
                log.warning("a token names a key that is not trusted", extra={"kid": key_id[:64]})
        if key_id not in keys:
            raise InvalidToken("access token was signed with a key this service does not trust (kid unknown)")
        return key_id, keys[key_id]


def _bearer(metadata: Metadata) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise MissingCredentials("authorization metadata must be 'Bearer <token>'")
            return token.strip()
    raise MissingCredentials("missing authorization metadata: send 'authorization: Bearer <token>'")

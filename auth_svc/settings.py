"""The auth service's configuration, read once from the environment at start (``python -m auth_svc --help``)."""

from __future__ import annotations

from dataclasses import dataclass

from auth_svc.limits import AttemptLimits
from common.rates import Rate
from jobqueue.runtime import secrets
from jobqueue.runtime.settings import SettingsError, setting
from jobqueue.runtime.tls import TlsServerSettings

#: bcrypt accepts costs 4..31; production needs MIN_PRODUCTION_ROUNDS so a leaked hash stays slow to brute-force.
MIN_ROUNDS, MAX_ROUNDS = 4, 31
MIN_PRODUCTION_ROUNDS = 10
#: Bounds of TOKEN_TTL_SECONDS. Below a minute, clients would log in (a bcrypt hash each time) more often than
#: they do anything else; beyond a day, a stolen token, a revoked role or a retired key would live on too long.
MIN_TTL_SECONDS, MAX_TTL_SECONDS = 60, 24 * 3600


@dataclass(frozen=True)
class AuthSettings(TlsServerSettings):
    """Everything the auth service reads from its environment; invalid combinations raise SettingsError."""

    app_env: str = setting(
        "development",
        "development or production; production refuses dev secrets, weak hashing, default database credentials"
        " and plaintext gRPC",
    )
    auth_host: str = setting("0.0.0.0", "address the gRPC server listens on")
    auth_port: int = setting(5001, "port the gRPC server listens on", port=True)
    metrics_port: int = setting(0, "port of the Prometheus /metrics endpoint (on AUTH_HOST); 0 turns it off", port=True)
    database_url: str = setting(
        "postgresql://jobqueue_auth@127.0.0.1:5432/jobqueue",
        "PostgreSQL holding the users table, as the auth service's own role (migrations/roles.py);"
        " ?sslmode=verify-full&sslrootcert=CA.pem verifies the server's certificate; APP_ENV=production needs"
        " a password (not a default one)",
        credentials=True,
    )
    db_pool_size: int = setting(10, "most database connections held open at once")
    bcrypt_rounds: int = setting(
        12, f"bcrypt cost ({MIN_ROUNDS}..{MAX_ROUNDS}); at least {MIN_PRODUCTION_ROUNDS} in production"
    )
    token_ttl_seconds: int = setting(
        3600, f"how long an access token is accepted after login ({MIN_TTL_SECONDS}..{MAX_TTL_SECONDS})"
    )
    jwt_issuer: str = setting("jobqueue-auth", "the tokens' iss claim")
    jwt_audience: str = setting("jobqueue", "the tokens' aud claim")
    jwt_private_key: str = setting(
        "", "Ed25519 private key (PEM) that signs tokens; its id goes into each token's kid header", secret=True
    )
    jwt_private_key_file: str = setting(
        "",
        "path of a file holding JWT_PRIVATE_KEY (used when that is empty); to rotate, give the job service the new"
        " public key first, then restart auth with the new private key",
    )
    registers_per_minute_per_address: int = setting(
        10, "Register calls one client address may make a minute (bursts of as many); beyond: RESOURCE_EXHAUSTED"
    )
    logins_per_minute_per_address: int = setting(60, "Login calls one client address may make a minute (bursts alike)")
    logins_per_minute_per_email: int = setting(
        10, "Login calls for one email a minute, from any address (bursts alike)"
    )
    bcrypt_threads: int = setting(0, "threads hashing and checking passwords; 0 means one per CPU")
    bcrypt_waiting: int = setting(
        8, "calls that may wait for a bcrypt thread; more are refused at once with RESOURCE_EXHAUSTED"
    )

    def validate(self) -> None:
        """The auth service's own checks (APP_ENV, LOG_LEVEL and ports are checked for every service)."""
        if self.db_pool_size < 1:
            raise SettingsError(f"DB_POOL_SIZE={self.db_pool_size} must be at least 1")
        if not MIN_TTL_SECONDS <= self.token_ttl_seconds <= MAX_TTL_SECONDS:
            raise SettingsError(
                f"TOKEN_TTL_SECONDS={self.token_ttl_seconds} must be between {MIN_TTL_SECONDS} and "
                f"{MAX_TTL_SECONDS} (a minute to a day)"
            )
        for name in (
            "registers_per_minute_per_address",
            "logins_per_minute_per_address",
            "logins_per_minute_per_email",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name.upper()}={getattr(self, name)} must be at least 1")
        if self.bcrypt_threads < 0 or self.bcrypt_waiting < 0:
            raise SettingsError("BCRYPT_THREADS and BCRYPT_WAITING must not be negative")
        if not MIN_ROUNDS <= self.bcrypt_rounds <= MAX_ROUNDS:
            raise SettingsError(f"BCRYPT_ROUNDS={self.bcrypt_rounds} must be between {MIN_ROUNDS} and {MAX_ROUNDS}")
        if self.production and self.bcrypt_rounds < MIN_PRODUCTION_ROUNDS:
            raise SettingsError(
                f"BCRYPT_ROUNDS={self.bcrypt_rounds} is too weak for APP_ENV=production "
                f"(at least {MIN_PRODUCTION_ROUNDS})"
            )

    @property
    def uses_dev_key(self) -> bool:
        """Whether no key is configured, so the generated development key signs tokens."""
        return not (self.jwt_private_key or self.jwt_private_key_file)

    def attempt_limits(self) -> AttemptLimits:
        """The Register and Login rates these settings allow."""
        return AttemptLimits(
            register_per_address=Rate(self.registers_per_minute_per_address, 60),
            login_per_address=Rate(self.logins_per_minute_per_address, 60),
            login_per_email=Rate(self.logins_per_minute_per_email, 60),
        )

    def private_key_pem(self) -> bytes:
        """The configured signing key's PEM; raises SettingsError if there is none and APP_ENV=production."""
        return secrets.of(self, "JWT_PRIVATE_KEY", secrets.PRIVATE_KEY)

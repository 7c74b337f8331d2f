"""Keys and worker tokens that rotate: key ids, key sets read again from disk, clock-skew leeway, token sets.

The job service's side is job_svc.auth.Authenticator fed by the real settings
readers (job_svc.settings.Settings.public_keys / worker_tokens) over files in
a temporary directory, with a fake monotonic clock deciding when they are read
again; the auth side is the real TokenIssuer.
"""

from __future__ import annotations

import base64
import hmac
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auth_svc.tokens import TokenIssuer
from job_svc import auth
from job_svc.auth import Authenticator, Reloading
from job_svc.errors import ExpiredToken, InvalidToken, UsersOnly, WorkersOnly
from job_svc.settings import Settings as JobSettings
from jobqueue.runtime.secrets import PRIVATE_KEY, ensure_dev_secrets, key_id, parse_worker_tokens, public_keys
from jobqueue.runtime.settings import SettingsError, load
from jobqueue.worker.settings import Settings as WorkerSettings
from tests.support.clients import bearer
from tests.support.tls import PRODUCTION_SETTINGS

ISSUER, AUDIENCE, TTL = "jobqueue-auth", "jobqueue", 900


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def token_of(key: Ed25519PrivateKey, *, ahead: float = 0.0, ttl: int = TTL) -> str:
    """A token the real TokenIssuer signs with ``key`` on a host whose clock is ``ahead`` seconds ahead."""
    issuer = TokenIssuer(key, issuer=ISSUER, audience=AUDIENCE, ttl_seconds=ttl)
    return issuer.issue(str(uuid.uuid4()), "ada@example.com", now=datetime.now(UTC) + timedelta(seconds=ahead)).token


def kidless_token_of(key: Ed25519PrivateKey) -> str:
    """A token as the auth service minted them before tokens carried a kid."""
    now = int(datetime.now(UTC).timestamp())
    claims = {"sub": str(uuid.uuid4()), "iat": now, "exp": now + TTL, "iss": ISSUER, "aud": AUDIENCE}
    return jwt.encode(claims, key, algorithm="EdDSA")


def authenticator_over(settings: JobSettings, clock: Clock, leeway: int | None = None) -> Authenticator:
    """The job service's Authenticator, reading its key and worker token files as `python -m job_svc` does."""
    return Authenticator(
        keys=settings.public_keys,
        worker_tokens=settings.worker_tokens,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_seconds=settings.jwt_leeway_seconds if leeway is None else leeway,
        clock=clock,
    )


@pytest.fixture(autouse=True)
def _dev_secrets_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default DEV_SECRETS_DIR (var/secrets, relative) lands in the test's directory, not the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def old() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def new() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def key_dir(tmp_path: Path, old: Ed25519PrivateKey) -> Path:
    """JWT_PUBLIC_KEYS_DIR holding the old key's public half."""
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / "old.pem").write_bytes(public_pem(old))
    return folder


# --- key ids -----------------------------------------------------------------------------------------------


def test_the_key_id_is_the_rfc_7638_thumbprint_of_the_rfc_8037_example() -> None:
    # RFC 8037 appendix A.2 (the public key) and A.3 (its JWK thumbprint).
    x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "="))
    assert key_id(key) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_every_token_names_its_signing_key(old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> None:
    assert jwt.get_unverified_header(token_of(old))["kid"] == key_id(old.public_key())
    assert jwt.get_unverified_header(token_of(new))["kid"] == key_id(new.public_key())
    assert key_id(old.public_key()) != key_id(new.public_key())


# --- reading public keys -----------------------------------------------------------------------------------


def test_a_key_file_may_hold_several_keys_with_notes_between(old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> None:
    text = b"# retiring on the 1st\n" + public_pem(old) + b"\n# current\n" + public_pem(new)
    keys = public_keys(text, "JWT_PUBLIC_KEY_FILE")
    assert keys == {key_id(old.public_key()): old.public_key(), key_id(new.public_key()): new.public_key()}
    # As an inline value with its line breaks written as \n (an env file, compose YAML).
    assert public_keys(public_pem(old).replace(b"\n", b"\\n"), "JWT_PUBLIC_KEY") == {
        key_id(old.public_key()): old.public_key()
    }


def test_anything_but_ed25519_public_keys_is_refused_naming_the_source(old: Ed25519PrivateKey) -> None:
    private = old.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ec_public = public_pem_of_ec()
    cases = {
        b"not a key": "SOURCE holds no PEM public key",
        public_pem(old) + private: "SOURCE holds a PRIVATE KEY; give the job service public keys only",
        ec_public: "SOURCE holds a key that is not Ed25519",
        public_pem(old).replace(b"MCow", b"MCox"): "SOURCE holds a PEM public key that does not parse",
    }
    for text, message in cases.items():
        with pytest.raises(SettingsError) as caught:
            public_keys(text, "SOURCE")
        assert str(caught.value).startswith(message)


def public_pem_of_ec() -> bytes:
    return (
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def test_the_job_service_reads_every_visible_file_of_its_key_directory(
    key_dir: Path, old: Ed25519PrivateKey, new: Ed25519PrivateKey
) -> None:
    (key_dir / "new.pem").write_bytes(public_pem(new))
    (key_dir / ".new.pem.swp").write_bytes(b"an editor's scratch file")
    (key_dir / "..data").mkdir()  # as in a Kubernetes secret volume
    settings = load(JobSettings, {"JWT_PUBLIC_KEYS_DIR": str(key_dir)})
    assert set(settings.public_keys()) == {key_id(old.public_key()), key_id(new.public_key())}

    (key_dir / "old.pem").unlink()
    assert set(settings.public_keys()) == {key_id(new.public_key())}
    (key_dir / "new.pem").write_bytes(b"half a key")
    with pytest.raises(SettingsError, match=r"new\.pem \(in JWT_PUBLIC_KEYS_DIR\) holds no PEM public key"):
        settings.public_keys()
    (key_dir / "new.pem").unlink()
    with pytest.raises(SettingsError, match=r"JWT_PUBLIC_KEYS_DIR=.* holds no key file"):
        settings.public_keys()


def test_a_key_file_with_two_keys_trusts_both(tmp_path: Path, old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> None:
    key_file = tmp_path / "jwt.pub.pem"
    key_file.write_bytes(public_pem(old) + public_pem(new))
    settings = load(JobSettings, {**PRODUCTION_SETTINGS, "JWT_PUBLIC_KEY_FILE": str(key_file)})
    assert set(settings.public_keys()) == {key_id(old.public_key()), key_id(new.public_key())}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"JWT_LEEWAY_SECONDS": "-1"}, "JWT_LEEWAY_SECONDS=-1 must be between 0 and 300"),
        ({"JWT_LEEWAY_SECONDS": "301"}, "JWT_LEEWAY_SECONDS=301 must be between 0 and 300"),
        ({"JWT_PUBLIC_KEYS_DIR": "/keys", "JWT_PUBLIC_KEY_FILE": "/key.pem"}, "set JWT_PUBLIC_KEYS_DIR or"),
        ({"JWT_PUBLIC_KEYS_DIR": "/keys", "JWT_PUBLIC_KEY": "-----BEGIN"}, "set JWT_PUBLIC_KEYS_DIR or"),
    ],
)
def test_bad_key_settings_are_refused_at_start(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(JobSettings, environ)
    assert str(caught.value).startswith(message)


def test_leeway_defaults_to_half_a_minute_and_may_be_turned_off() -> None:
    assert load(JobSettings, {}).jwt_leeway_seconds == 30
    assert load(JobSettings, {"JWT_LEEWAY_SECONDS": "0"}).jwt_leeway_seconds == 0
    assert load(JobSettings, {"JWT_LEEWAY_SECONDS": "300"}).jwt_leeway_seconds == 300


def test_production_names_every_way_to_give_the_keys(tmp_path: Path) -> None:
    settings = load(JobSettings, {**PRODUCTION_SETTINGS, "DEV_SECRETS_DIR": str(tmp_path / "none")})
    with pytest.raises(SettingsError, match="JWT_PUBLIC_KEY, JWT_PUBLIC_KEY_FILE or JWT_PUBLIC_KEYS_DIR must be set"):
        settings.public_keys()
    assert not (tmp_path / "none").exists()


# --- reading again -----------------------------------------------------------------------------------------


def test_a_reloading_value_is_read_again_periodically_and_on_a_miss_at_most_every_few_seconds(clock: Clock) -> None:
    reads: list[float] = []

    def read() -> int:
        reads.append(clock.now)
        return len(reads)

    value = Reloading(read, what="things", describe=str, every=10, soonest=2, clock=clock)
    assert (value.get(), reads) == (1, [1000.0])
    clock.advance(1.9)
    assert not value.miss()  # too soon: however many calls miss, the disk is not read
    assert value.get() == 1
    clock.advance(0.1)
    assert value.miss()
    assert value.get() == 2
    clock.advance(9.9)
    assert value.get() == 2
    clock.advance(0.1)
    assert value.get() == 3  # ten seconds after the last read
    assert reads == [1000.0, 1002.0, 1012.0]


def test_a_failed_read_again_keeps_the_last_value_and_says_why(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    answers: list[int | SettingsError] = [1, SettingsError("KEYS holds half a key"), 3]

    def read() -> int:
        answer = answers.pop(0)
        if isinstance(answer, SettingsError):
            raise answer
        return answer

    value = Reloading(read, what="things", describe=str, every=10, soonest=2, clock=clock)
    clock.advance(10)
    with caplog.at_level(logging.WARNING, logger=auth.__name__):
        assert value.get() == 1
    assert [(r.getMessage(), r.__dict__["error"]) for r in caplog.records] == [
        ("things not read again; the last ones stay in use", "KEYS holds half a key")
    ]
    clock.advance(10)
    assert value.get() == 3


def test_a_start_with_unreadable_keys_fails(tmp_path: Path) -> None:
    settings = load(JobSettings, {"JWT_PUBLIC_KEY_FILE": str(tmp_path / "missing.pem")})
    with pytest.raises(SettingsError, match=r"JWT_PUBLIC_KEY_FILE=.*missing\.pem' cannot be read"):
        authenticator_over(settings, Clock())


# --- picking the key by kid --------------------------------------------------------------------------------


def test_each_token_is_verified_with_the_key_its_kid_names(
    key_dir: Path, old: Ed25519PrivateKey, new: Ed25519PrivateKey, clock: Clock
) -> None:
    (key_dir / "new.pem").write_bytes(public_pem(new))
    checker = authenticator_over(load(JobSettings, {"JWT_PUBLIC_KEYS_DIR": str(key_dir)}), clock)
    checker.user(bearer(token_of(old)))
    checker.user(bearer(token_of(new)))
    with pytest.raises(InvalidToken, match="kid unknown"):
        checker.user(bearer(token_of(Ed25519PrivateKey.generate())))


def test_a_token_without_kid_is_accepted_only_while_one_key_is_trusted(
    key_dir: Path, old: Ed25519PrivateKey, new: Ed25519PrivateKey, clock: Clock
) -> None:
    checker = authenticator_over(load(JobSettings, {"JWT_PUBLIC_KEYS_DIR": str(key_dir)}), clock)
    checker.user(bearer(kidless_token_of(old)))  # minted before the upgrade, still in flight
    with pytest.raises(InvalidToken, match="not valid"):
        checker.user(bearer(kidless_token_of(new)))  # the one key still verifies the signature

    (key_dir / "new.pem").write_bytes(public_pem(new))
    clock.advance(auth.REREAD_SECONDS)
    with pytest.raises(InvalidToken, match=r"names no signing key \(kid\)"):
        checker.user(bearer(kidless_token_of(old)))


def test_a_key_added_to_the_directory_is_trusted_without_a_restart(
    key_dir: Path, new: Ed25519PrivateKey, clock: Clock
) -> None:
    checker = authenticator_over(load(JobSettings, {"JWT_PUBLIC_KEYS_DIR": str(key_dir)}), clock)
    token = token_of(new)
    clock.advance(auth.SOONEST_REREAD_SECONDS)
    with pytest.raises(InvalidToken, match="kid unknown"):
        checker.user(bearer(token))  # reads the directory: the key is not there yet
    (key_dir / "new.pem").write_bytes(public_pem(new))
    with pytest.raises(InvalidToken, match="kid unknown"):
        checker.user(bearer(token))  # read a moment ago: not again so soon
    clock.advance(auth.SOONEST_REREAD_SECONDS)
    checker.user(bearer(token))  # the unknown kid makes it read the directory, where the key now is


def test_unknown_kids_cannot_make_it_read_the_disk_on_every_call(
    key_dir: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load(JobSettings, {"JWT_PUBLIC_KEYS_DIR": str(key_dir)})
    reads = 0
    real = settings.public_keys

    def counted() -> dict[str, Ed25519PublicKey]:
        nonlocal reads
        reads += 1
        return real()

    checker = Authenticator(
        keys=counted,
        worker_tokens=lambda: frozenset({b"w"}),
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway_seconds=0,
        clock=clock,
    )
    forged = [token_of(Ed25519PrivateKey.generate()) for _ in range(5)]
    for _ in range(10):  # 50 calls over 5 seconds
        for token in forged:
            with pytest.raises(InvalidToken):
                checker.user(bearer(token))
        clock.advance(0.5)
    assert auth.SOONEST_REREAD_SECONDS == 2
    assert reads == 3  # at start, then after 2 and 4 seconds


def test_a_retired_keys_tokens_stop_working_at_the_next_read_even_if_remembered(
    key_dir: Path, old: Ed25519PrivateKey, new: Ed25519PrivateKey, clock: Clock
) -> None:
    (key_dir / "new.pem").write_bytes(public_pem(new))
    checker = authenticator_over(load(JobSettings, {"JWT_PUBLIC_KEYS_DIR": str(key_dir)}), clock)
    old_token, new_token = token_of(old), token_of(new)
    checker.user(bearer(old_token))
    checker.user(bearer(new_token))
    (key_dir / "old.pem").unlink()
    checker.user(bearer(old_token))  # not read again yet
    clock.advance(auth.REREAD_SECONDS)
    with pytest.raises(InvalidToken, match="kid unknown"):
        checker.user(bearer(old_token))
    checker.user(bearer(new_token))


def test_a_key_file_is_read_again_too(
    tmp_path: Path, old: Ed25519PrivateKey, new: Ed25519PrivateKey, clock: Clock
) -> None:
    key_file = tmp_path / "jwt.pub.pem"
    key_file.write_bytes(public_pem(old))
    checker = authenticator_over(load(JobSettings, {"JWT_PUBLIC_KEY_FILE": str(key_file)}), clock)
    with key_file.open("ab") as appending:  # as `cat new.pub.pem >> jwt.pub.pem` would
        appending.write(public_pem(new))
    clock.advance(auth.REREAD_SECONDS)
    checker.user(bearer(token_of(new)))
    key_file.write_bytes(public_pem(new))
    clock.advance(auth.REREAD_SECONDS)
    with pytest.raises(InvalidToken, match="kid unknown"):
        checker.user(bearer(token_of(old)))


# --- clock skew --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ahead", [1, 20])
def test_a_token_from_an_auth_host_a_little_ahead_is_accepted(
    tmp_path: Path, old: Ed25519PrivateKey, clock: Clock, ahead: int
) -> None:
    key_file = tmp_path / "jwt.pub.pem"
    key_file.write_bytes(public_pem(old))
    checker = authenticator_over(load(JobSettings, {"JWT_PUBLIC_KEY_FILE": str(key_file)}), clock)
    checker.user(bearer(token_of(old, ahead=ahead)))


@pytest.mark.parametrize(("leeway", "ahead"), [(30, 32), (0, 1), (5, 7)])
def test_a_token_from_an_auth_host_further_ahead_than_the_leeway_is_refused(
    tmp_path: Path, old: Ed25519PrivateKey, clock: Clock, leeway: int, ahead: int
) -> None:
    key_file = tmp_path / "jwt.pub.pem"
    key_file.write_bytes(public_pem(old))
    checker = authenticator_over(load(JobSettings, {"JWT_PUBLIC_KEY_FILE": str(key_file)}), clock, leeway)
    with pytest.raises(InvalidToken, match="not valid yet"):
        checker.user(bearer(token_of(old, ahead=ahead)))


def test_a_token_is_accepted_for_the_leeway_after_it_expires_and_not_longer(
    tmp_path: Path, old: Ed25519PrivateKey, clock: Clock
) -> None:
    key_file = tmp_path / "jwt.pub.pem"
    key_file.write_bytes(public_pem(old))
    checker = authenticator_over(load(JobSettings, {"JWT_PUBLIC_KEY_FILE": str(key_file)}), clock)
    # Minted by an auth host whose clock is behind: by this host's clock the token expired 20 s (then 40 s) ago.
    checker.user(bearer(token_of(old, ahead=-(TTL + 20))))
    with pytest.raises(ExpiredToken):
        checker.user(bearer(token_of(old, ahead=-(TTL + 40))))


# --- worker tokens -----------------------------------------------------------------------------------------


def test_any_worker_token_of_the_set_is_accepted_and_each_is_compared(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = tmp_path / "worker-tokens"
    tokens.write_text("old-worker-token\n\nnew-worker-token\n")
    environ = {"WORKER_TOKEN_FILE": str(tokens), "DEV_SECRETS_DIR": str(tmp_path)}
    checker = authenticator_over(load(JobSettings, environ), clock)
    compared: list[bytes] = []
    real_compare = hmac.compare_digest

    def compare(presented: bytes, known: bytes) -> bool:
        compared.append(known)
        return real_compare(presented, known)

    monkeypatch.setattr(hmac, "compare_digest", compare)
    for token in ("old-worker-token", "new-worker-token"):
        compared.clear()
        checker.worker(bearer(token))
        # Constant time over the set too: a match stops nothing, every token is compared.
        assert sorted(compared) == [b"new-worker-token", b"old-worker-token"]
        with pytest.raises(UsersOnly):
            checker.user(bearer(token))
    with pytest.raises(InvalidToken):
        checker.worker(bearer("old-worker-token-x"))


def test_the_worker_token_set_changes_with_its_file(tmp_path: Path, clock: Clock) -> None:
    tokens = tmp_path / "worker-tokens"
    tokens.write_text("old-worker-token\n")
    environ = {"WORKER_TOKEN_FILE": str(tokens), "DEV_SECRETS_DIR": str(tmp_path)}
    checker = authenticator_over(load(JobSettings, environ), clock)
    tokens.write_text("old-worker-token\nnew-worker-token\n")
    with pytest.raises(InvalidToken):
        checker.worker(bearer("new-worker-token"))  # the file was read a moment ago: not again so soon
    clock.advance(auth.SOONEST_REREAD_SECONDS)
    checker.worker(bearer("new-worker-token"))  # a worker already switched: the miss reads the file now
    checker.worker(bearer("old-worker-token"))
    tokens.write_text("new-worker-token\n")
    clock.advance(auth.REREAD_SECONDS)
    checker.worker(bearer("new-worker-token"))
    with pytest.raises(InvalidToken):
        checker.worker(bearer("old-worker-token"))
    with pytest.raises(WorkersOnly):
        checker.worker(bearer(jwt_for_a_user(tmp_path)))


def jwt_for_a_user(tmp_path: Path) -> str:
    """A user's token the dev key (which the job service trusts outside production) signs."""
    key = serialization.load_pem_private_key((ensure_dev_secrets(tmp_path) / PRIVATE_KEY).read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return token_of(key)


def test_a_worker_presents_the_last_token_of_its_file(tmp_path: Path) -> None:
    tokens = tmp_path / "worker-tokens"
    tokens.write_text("old-worker-token\nnew-worker-token\n")
    environ = {"WORKER_TOKEN_FILE": str(tokens)}
    assert load(WorkerSettings, environ).token() == b"new-worker-token"
    assert load(JobSettings, environ).worker_tokens() == {b"old-worker-token", b"new-worker-token"}


def tokens_used(settings: JobSettings | WorkerSettings) -> set[bytes]:
    """The worker tokens the job service accepts, or the one a worker presents."""
    return set(settings.worker_tokens()) if isinstance(settings, JobSettings) else {settings.token()}


@pytest.mark.parametrize("settings_type", [JobSettings, WorkerSettings])
def test_production_refuses_a_short_worker_token_naming_the_variable(
    tmp_path: Path, settings_type: type[JobSettings] | type[WorkerSettings]
) -> None:
    tokens = tmp_path / "worker-tokens"
    tokens.write_text("a" * 32 + "\n" + "b" * 31 + "\n")
    production = {**PRODUCTION_SETTINGS, "WORKER_TOKEN_FILE": str(tokens)}
    with pytest.raises(SettingsError, match=r"^WORKER_TOKEN_FILE holds a token of 31 characters; APP_ENV=production"):
        tokens_used(load(settings_type, production))
    with pytest.raises(SettingsError, match=r"^WORKER_TOKEN holds a token of 12 characters"):
        tokens_used(load(settings_type, {**production, "WORKER_TOKEN": "short-secret"}))
    tokens.write_text("a" * 32 + "\n")
    assert tokens_used(load(settings_type, production)) == {b"a" * 32}
    assert tokens_used(load(settings_type, {"WORKER_TOKEN": "short-secret"})) == {b"short-secret"}  # development


def test_development_accepts_any_printable_worker_token_but_never_an_empty_set() -> None:
    assert parse_worker_tokens(b"dev\n", "WORKER_TOKEN", production=False) == (b"dev",)
    with pytest.raises(SettingsError, match="WORKER_TOKEN_FILE holds no worker token"):
        parse_worker_tokens(b"\n \n", "WORKER_TOKEN_FILE", production=False)
    with pytest.raises(SettingsError, match="printable ASCII"):
        parse_worker_tokens(b"two words\n", "WORKER_TOKEN_FILE", production=False)

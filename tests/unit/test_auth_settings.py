"""Auth settings (auth_svc.settings): production refuses weak or missing secrets; typos fail fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from auth_svc.settings import AuthSettings
from jobqueue.runtime.secrets import PRIVATE_KEY, ensure_dev_secrets
from jobqueue.runtime.settings import SettingsError, load
from tests.support.tls import PRODUCTION_SETTINGS


def test_defaults_are_the_documented_ones() -> None:
    settings = load(AuthSettings, {})
    assert (settings.auth_port, settings.bcrypt_rounds, settings.token_ttl_seconds) == (5001, 12, 3600)
    assert not settings.production


def test_production_refuses_cheap_bcrypt() -> None:
    with pytest.raises(SettingsError, match="BCRYPT_ROUNDS=9 is too weak for APP_ENV=production"):
        load(AuthSettings, {**PRODUCTION_SETTINGS, "BCRYPT_ROUNDS": "9"})
    assert load(AuthSettings, {**PRODUCTION_SETTINGS, "BCRYPT_ROUNDS": "10"}).bcrypt_rounds == 10
    assert load(AuthSettings, {"BCRYPT_ROUNDS": "4"}).bcrypt_rounds == 4


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"APP_ENV": "prod"}, "APP_ENV='prod' must be one of development, production"),
        ({"BCRYPT_ROUNDS": "3"}, "BCRYPT_ROUNDS=3 must be between 4 and 31"),
        ({"BCRYPT_ROUNDS": "32"}, "BCRYPT_ROUNDS=32 must be between 4 and 31"),
        ({"BCRYPT_ROUNDS": "twelve"}, "BCRYPT_ROUNDS='twelve' is not an integer"),
        ({"TOKEN_TTL_SECONDS": "0"}, "TOKEN_TTL_SECONDS=0 must be between 60 and 86400"),
        ({"TOKEN_TTL_SECONDS": "59"}, "TOKEN_TTL_SECONDS=59 must be between 60 and 86400"),
        ({"TOKEN_TTL_SECONDS": "86401"}, "TOKEN_TTL_SECONDS=86401 must be between 60 and 86400"),
        ({"AUTH_PORT": "70000"}, "AUTH_PORT=70000 is not a TCP port"),
        ({"DB_POOL_SIZE": "0"}, "DB_POOL_SIZE=0 must be at least 1"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL='LOUD' is not a log level"),
    ],
)
def test_bad_values_name_their_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(AuthSettings, environ)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("ttl", [60, 3600, 86400])
def test_a_token_ttl_from_a_minute_to_a_day_is_taken(ttl: int) -> None:
    assert load(AuthSettings, {"TOKEN_TTL_SECONDS": str(ttl)}).token_ttl_seconds == ttl


def test_production_needs_a_configured_key(tmp_path: Path) -> None:
    fresh = tmp_path / "never-created"
    settings = load(AuthSettings, {**PRODUCTION_SETTINGS, "DEV_SECRETS_DIR": str(fresh)})
    with pytest.raises(SettingsError, match="JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE must be set"):
        settings.private_key_pem()
    assert not fresh.exists()  # production never falls back to generating a key


def test_key_comes_from_inline_then_file_then_dev_secret(tmp_path: Path) -> None:
    dev = ensure_dev_secrets(tmp_path / "dev")
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(b"from-file\n")
    development = load(AuthSettings, {"DEV_SECRETS_DIR": str(dev)})
    assert development.private_key_pem() == (dev / PRIVATE_KEY).read_bytes().strip()
    on_file = load(AuthSettings, {**PRODUCTION_SETTINGS, "JWT_PRIVATE_KEY_FILE": str(key_file)})
    assert on_file.private_key_pem() == b"from-file"
    inline = load(AuthSettings, {"JWT_PRIVATE_KEY": "inline", "JWT_PRIVATE_KEY_FILE": str(key_file)})
    assert inline.private_key_pem() == b"inline"


def test_repr_never_shows_an_inline_key() -> None:
    settings = load(AuthSettings, {"JWT_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----hunter2"})
    assert "hunter2" not in repr(settings)
    assert "bcrypt_rounds=12" in repr(settings)

"""web_svc/settings.py: what the dashboard refuses to start with."""

from __future__ import annotations

import pytest

from jobqueue.runtime.settings import SettingsError, load
from web_svc.settings import WebSettings


def test_defaults_serve_plain_http_in_development() -> None:
    settings = load(WebSettings, {})
    assert (settings.web_port, settings.https, settings.secure_cookies) == (5080, False, False)
    assert settings.backend_credentials() is None
    assert len(settings.signing_secret()) == 32  # random, for this run


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"APP_ENV": "production", "BACKEND_TLS": "true"}, "session cookie must never travel in clear text"),
        ({"APP_ENV": "production", "COOKIE_SECURE": "true"}, "BACKEND_CA_FILE or BACKEND_TLS"),
        ({"WEB_TLS_CERT_FILE": "cert.pem"}, "together"),
        ({"STREAMS_PER_SESSION": "0"}, "STREAMS_PER_SESSION=0 must be at least 1"),
        ({"PAGE_SIZE": "501"}, "PAGE_SIZE=501"),
    ],
)
def test_refused(environ: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        load(WebSettings, environ)


def test_production_behind_a_tls_proxy() -> None:
    settings = load(WebSettings, {"APP_ENV": "production", "COOKIE_SECURE": "true", "BACKEND_TLS": "true"})
    assert settings.secure_cookies
    assert settings.backend_credentials() is not None


def test_a_short_session_secret_is_refused() -> None:
    with pytest.raises(SettingsError, match="at least 32"):
        load(WebSettings, {"SESSION_SECRET": "short"}).signing_secret()
    assert load(WebSettings, {"SESSION_SECRET": "s" * 32}).signing_secret() == b"s" * 32

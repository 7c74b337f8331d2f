"""web_svc/settings.py: what the dashboard refuses to start with, and which address it counts a caller by."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from jobqueue.runtime.settings import SettingsError, load
from web_svc.context import SETTINGS, client_address
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


def test_the_client_address_is_the_peer_unless_a_proxy_is_trusted() -> None:
    def address(environ: dict[str, str], forwarded: str | None) -> str:
        app = web.Application()
        app[SETTINGS] = load(WebSettings, environ)
        headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
        request = make_mocked_request("GET", "/", headers=headers, app=app)
        return client_address(request)

    peer = address({}, None)
    assert address({}, "203.0.113.9") == peer  # not trusted: a client could write anything there
    trusted = {"TRUST_X_FORWARDED_FOR": "true"}
    # The proxy appends the address it saw: the last one; what comes before, the client may have made up.
    assert address(trusted, "198.51.100.1, 203.0.113.9") == "203.0.113.9"
    assert address(trusted, None) == peer

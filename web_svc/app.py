"""The dashboard as an aiohttp application: its parts, its routes and the headers every answer carries.

Safe to expose: pages are server-rendered with autoescaping; the only script
is /static/dashboard.js (no inline script, no third-party origin), which the
Content-Security-Policy enforces; no page may be framed; every form carries a
CSRF token and a cross-site POST is also refused by its Origin; the session
cookie is HttpOnly and SameSite=Strict (and Secure over TLS).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from aiohttp import web

from common.rates import Rate, RateLimiter
from web_svc import live, pages
from web_svc.backend import Backend
from web_svc.context import (
    BACKEND,
    LOGIN_GUARD,
    LOGIN_RATES,
    SESSIONS,
    SETTINGS,
    STREAM_LIMITS,
    STREAM_TASKS,
    TEMPLATES,
)
from web_svc.events import StreamLimits
from web_svc.sessions import LoginGuard, SessionStore
from web_svc.settings import WebSettings

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
#: Largest request body read (a form with a payload: CreateJob takes at most 1 MiB of JSON).
MAX_BODY = 1024**2 + 64 * 1024

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a cross-site POST by its Origin; give every answer the security headers, and pages no caching."""
    if request.method == "POST":
        origin = request.headers.get("Origin")
        # The host only, not the scheme: behind a TLS proxy the browser says https and we see http.
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text="cross-site request refused")
    try:
        response = await handler(request)
    except web.HTTPException as answer:
        _secure(answer, request)
        raise
    _secure(response, request)
    return response


def _secure(response: web.StreamResponse, request: web.Request) -> None:
    if response.prepared:
        return  # an event stream: its headers are gone already
    response.headers.update(SECURITY_HEADERS)
    if request.app[SETTINGS].https:
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    if not request.path.startswith("/static/"):
        # Pages show one person's jobs: no shared cache may keep them.
        response.headers["Cache-Control"] = "no-store"


async def _stop_streams(app: web.Application) -> None:
    """Cancel every event stream: none ends by itself, and the stop must not wait for browsers."""
    streams = app[STREAM_TASKS]
    for task in [*streams]:
        task.cancel()


def build_app(settings: WebSettings, backend: Backend, *, secret: bytes) -> web.Application:
    """The application; ``backend`` is closed by whoever made it."""
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    app[BACKEND] = backend
    app[SESSIONS] = SessionStore(max_sessions=settings.max_sessions, idle_seconds=settings.session_idle_seconds)
    app[LOGIN_GUARD] = LoginGuard(secret)
    app[LOGIN_RATES] = RateLimiter(Rate(settings.logins_per_minute_per_address, 60))
    app[STREAM_LIMITS] = StreamLimits(
        per_session=settings.streams_per_session, per_address=settings.streams_per_address, total=settings.max_streams
    )
    streams: set[asyncio.Task[Any]] = set()
    app[STREAM_TASKS] = streams
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app.add_routes(pages.routes)
    app.add_routes(live.routes)
    app.router.add_static("/static/", HERE / "static", name="static")
    app.on_shutdown.append(_stop_streams)
    return app

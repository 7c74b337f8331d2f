"""What every handler shares: the application's parts (typed keys), the session of a request, CSRF, rendering."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any, NoReturn

import jinja2
from aiohttp import web

from common.rates import RateLimiter
from web_svc.backend import Backend
from web_svc.events import StreamLimits
from web_svc.sessions import SESSION_COOKIE, LoginGuard, Session, SessionStore
from web_svc.settings import WebSettings

SETTINGS = web.AppKey("settings", WebSettings)
BACKEND = web.AppKey("backend", Backend)
SESSIONS = web.AppKey("sessions", SessionStore)
LOGIN_GUARD = web.AppKey("login_guard", LoginGuard)
LOGIN_RATES = web.AppKey("login_rates", RateLimiter)
STREAM_LIMITS = web.AppKey("stream_limits", StreamLimits)
#: The tasks serving event streams, cancelled when the dashboard stops (a stream never ends by itself).
STREAM_TASKS = web.AppKey[set[asyncio.Task[Any]]]("stream_tasks")
TEMPLATES = web.AppKey("templates", jinja2.Environment)


def session_of(request: web.Request) -> Session | None:
    """The request's live session, if its cookie names one."""
    session_id = request.cookies.get(SESSION_COOKIE, "")
    return request.app[SESSIONS].get(session_id) if session_id else None


def require_session(request: web.Request) -> Session:
    """The request's session; without one, a redirect to the login page (or 401 for a script's request)."""
    session = session_of(request)
    if session is not None:
        return session
    if request.path.startswith("/events/"):
        raise web.HTTPUnauthorized(text="log in first")
    raise web.HTTPSeeOther("/login")


def client_address(request: web.Request) -> str:
    """Who is asking, for the limits per address: the peer, or behind a trusted proxy the address it appended."""
    if request.app[SETTINGS].trust_x_forwarded_for:
        forwarded = request.headers.getall("X-Forwarded-For", [])
        # The proxy appends the address it saw last; anything before it the client could have written.
        last = ",".join(forwarded).rsplit(",", 1)[-1].strip()
        if last:
            return last
    return request.remote or ""


def check_csrf(session: Session, form: Mapping[str, Any]) -> None:
    """Refuse (403) a form that does not carry the session's CSRF token."""
    presented = form.get("csrf")
    if not isinstance(presented, str) or not session.check_csrf(presented):
        raise web.HTTPForbidden(text="This form has expired or did not come from this dashboard; reload the page.")


def job_id(request: web.Request) -> str:
    """The job id in the path; 404 for one that is not a UUID (no call is made for it)."""
    raw = request.match_info["job_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise web.HTTPNotFound(text="no such job") from None


def local_path(value: object, default: str) -> str:
    """``value`` if it is a path on this site (a form's "back"), else ``default``: never an open redirect."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return default


def back_to(path: str) -> NoReturn:
    """Answer with a redirect to ``path`` (after a form: POST, redirect, GET)."""
    raise web.HTTPSeeOther(path)


def render(request: web.Request, template: str, *, code: int = 200, **values: Any) -> web.Response:
    """The page ``template`` with ``values``, and what every page shows: the session, its flashes, the CSRF token."""
    session = session_of(request)
    page = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            session=session,
            flashes=session.take_flashes() if session else [],
            csrf=session.csrf if session else "",
            path=request.path_qs,
            **values,
        )
    )
    return web.Response(text=page, content_type="text/html", status=code)

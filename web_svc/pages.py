"""The dashboard's pages and forms: log in and out, your jobs, a job, submit, cancel, re-run, operators.

Every form is POST with the session's CSRF token, answered by a redirect
(POST, redirect, GET), so reloading a page never repeats an action. A refusal
from the job service is shown on the page as a sentence (``views.refusal``),
never as a stack trace.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import grpc
from aiohttp import web

from jobqueue.client import JobPriority, JobQueueError, JobStatus
from web_svc import chart, views
from web_svc.context import (
    BACKEND,
    LOGIN_GUARD,
    LOGIN_RATES,
    SESSIONS,
    SETTINGS,
    back_to,
    check_csrf,
    client_address,
    job_id,
    local_path,
    render,
    require_session,
    session_of,
)
from web_svc.sessions import LOGIN_COOKIE, SESSION_COOKIE

log = logging.getLogger(__name__)

#: The statuses a list can be filtered by, as the query string names them.
STATUSES = [status.name for status in JobStatus if status != JobStatus.UNSPECIFIED]
PRIORITIES = [p.name for p in JobPriority if p != JobPriority.UNSPECIFIED]
#: How much history the operator page's charts show, in minutes.
STATS_MINUTES = 60

routes = web.RouteTableDef()


def _cookie(response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.app[SETTINGS].secure_cookies,
    )


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    back_to("/jobs" if session_of(request) else "/login")


@routes.get("/healthz")
async def health(request: web.Request) -> web.StreamResponse:
    """Liveness for probes: the dashboard serves (each page says for itself whether the services answer)."""
    return web.json_response({"status": "SERVING"})


@routes.get("/login")
async def login_page(request: web.Request) -> web.StreamResponse:
    return _login_form(request)


def _login_form(request: web.Request, *, error: str = "", email: str = "") -> web.StreamResponse:
    """The login form (again, with ``error``), its CSRF token bound to the login cookie's value."""
    guard = request.app[LOGIN_GUARD]
    nonce = request.cookies.get(LOGIN_COOKIE) or guard.nonce()
    response = render(
        request, "login.html", login_csrf=guard.token(nonce), error=error, email=email, code=401 if error else 200
    )
    _cookie(response, request, LOGIN_COOKIE, nonce, None)
    return response


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    email, password = str(form.get("email", "")).strip(), str(form.get("password", ""))
    if not request.app[LOGIN_GUARD].check(request.cookies.get(LOGIN_COOKIE, ""), str(form.get("csrf", ""))):
        return _login_form(request, error="The login form had expired; try again.", email=email)
    if request.app[LOGIN_RATES].take(client_address(request)) > 0:
        return _login_form(request, error="Too many login attempts from here; wait a minute.", email=email)
    if not email or not password:
        return _login_form(request, error="Give your email and password.", email=email)
    try:
        token = await request.app[BACKEND].login(email, password)
    except JobQueueError as error:
        if error.code == grpc.StatusCode.UNAUTHENTICATED:
            return _login_form(request, error="Wrong email or password.", email=email)
        return _login_form(request, error=views.refusal(error), email=email)
    # A new id at each login (never one the browser brought), and the old session ends.
    request.app[SESSIONS].delete(request.cookies.get(SESSION_COOKIE, ""))
    session_id, session = request.app[SESSIONS].create(token)
    log.info("logged in", extra={"session": session.key[:12], "operator": session.operator})
    redirect = web.HTTPSeeOther("/jobs")
    _cookie(redirect, request, SESSION_COOKIE, session_id, None)
    redirect.del_cookie(LOGIN_COOKIE, path="/")
    raise redirect


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    session = require_session(request)
    check_csrf(session, await request.post())
    request.app[SESSIONS].delete(request.cookies.get(SESSION_COOKIE, ""))
    redirect = web.HTTPSeeOther("/login")
    redirect.del_cookie(SESSION_COOKIE, path="/")
    raise redirect


def status_filter(raw: str) -> JobStatus:
    return JobStatus[raw] if raw in STATUSES else JobStatus.UNSPECIFIED


@routes.get("/jobs")
async def jobs_page(request: web.Request) -> web.StreamResponse:
    session = require_session(request)
    backend = request.app[BACKEND]
    jobs = backend.jobs(session.token)
    status = status_filter(request.query.get("status", ""))
    job_type = request.query.get("type", "")
    page_token = request.query.get("page", "")
    error = ""
    rows: list[dict[str, object]] = []
    next_token = ""
    types = []
    try:
        types = await jobs.job_types()
        page = await backend.page(
            jobs, status=status, job_type=job_type, page_token=page_token, page_size=request.app[SETTINGS].page_size
        )
        rows, next_token = [views.job_row(job) for job in page.jobs], page.next_token
    except JobQueueError as refused:
        error = views.refusal(refused)
    return render(
        request,
        "jobs.html",
        rows=rows,
        types=types,
        statuses=STATUSES,
        priorities=PRIORITIES,
        status=status.name if status != JobStatus.UNSPECIFIED else "",
        job_type=job_type,
        page_token=page_token,
        next_token=next_token,
        error=error,
    )


@routes.post("/jobs")
async def submit(request: web.Request) -> web.StreamResponse:
    session = require_session(request)
    form = await request.post()
    check_csrf(session, form)
    job_type = str(form.get("type", ""))
    priority = str(form.get("priority", "NORMAL"))
    try:
        payload = json.loads(str(form.get("payload", "")))
    except ValueError as error:
        session.flash("error", f"The payload is not JSON: {error}")
        back_to("/jobs")
    try:
        max_attempts = int(str(form.get("max_attempts") or 0))
        job = (
            await request.app[BACKEND]
            .jobs(session.token)
            .submit(
                job_type,
                payload,
                priority=JobPriority[priority] if priority in PRIORITIES else JobPriority.UNSPECIFIED,
                max_attempts=max_attempts,
            )
        )
    except (ValueError, TypeError) as error:  # a payload to_value refuses, or attempts that are no number
        session.flash("error", f"Not submitted: {error}")
        back_to("/jobs")
    except JobQueueError as refused:
        session.flash("error", f"Not submitted: {views.refusal(refused)}")
        back_to("/jobs")
    session.flash("ok", f"Submitted {job.type} job {job.id}.")
    back_to(f"/jobs/{job.id}")


@routes.get("/jobs/{job_id}")
async def job_page(request: web.Request) -> web.StreamResponse:
    session = require_session(request)
    wanted = job_id(request)
    try:
        job = await request.app[BACKEND].jobs(session.token).get(wanted, history=True)
    except JobQueueError as refused:
        status = 404 if refused.code == grpc.StatusCode.NOT_FOUND else 502
        return render(request, "error.html", code=status, message=views.refusal(refused))
    return render(request, "job.html", job=views.job_detail(job))


@routes.post("/jobs/{job_id}/cancel")
async def cancel(request: web.Request) -> web.StreamResponse:
    session = require_session(request)
    form = await request.post()
    check_csrf(session, form)
    wanted = job_id(request)
    try:
        await request.app[BACKEND].jobs(session.token).cancel(wanted)
        session.flash("ok", f"Cancelled job {wanted}.")
    except JobQueueError as refused:
        session.flash("error", f"Not cancelled: {views.refusal(refused)}")
    back_to(local_path(form.get("back"), f"/jobs/{wanted}"))


@routes.post("/jobs/{job_id}/rerun")
async def rerun(request: web.Request) -> web.StreamResponse:
    session = require_session(request)
    form = await request.post()
    check_csrf(session, form)
    wanted = job_id(request)
    try:
        await request.app[BACKEND].jobs(session.token).rerun(wanted)
        session.flash("ok", f"Job {wanted} is queued again.")
    except JobQueueError as refused:
        session.flash("error", f"Not re-run: {views.refusal(refused)}")
    back_to(local_path(form.get("back"), f"/jobs/{wanted}"))


@routes.get("/ops")
async def ops_page(request: web.Request) -> web.StreamResponse:
    session = require_session(request)
    backend = request.app[BACKEND]
    jobs = backend.jobs(session.token)
    job_type = request.query.get("type", "")
    page_token = request.query.get("page", "")
    dead_error = stats_error = ""
    dead: list[dict[str, object]] = []
    next_token = ""
    stats = None
    try:
        page = await backend.dead_page(
            jobs, job_type=job_type, page_token=page_token, page_size=request.app[SETTINGS].page_size
        )
        dead, next_token = [views.job_row(job) for job in page.jobs], page.next_token
    except JobQueueError as refused:
        dead_error = views.refusal(refused)
    try:
        stats = await jobs.queue_stats(STATS_MINUTES, attempts=1)
    except JobQueueError as refused:
        stats_error = views.refusal(refused)
    return render(
        request,
        "ops.html",
        dead=dead,
        dead_error=dead_error,
        job_type=job_type,
        page_token=page_token,
        next_token=next_token,
        stats=stats,
        charts=chart.charts(stats) if stats else [],
        stats_error=stats_error,
        minutes=STATS_MINUTES,
    )


@routes.post("/ops/rerun-dead")
async def rerun_dead(request: web.Request) -> web.StreamResponse:
    session = require_session(request)
    form = await request.post()
    check_csrf(session, form)
    job_type = str(form.get("type", ""))
    try:
        count = await request.app[BACKEND].jobs(session.token).rerun_dead(job_type=job_type)
        session.flash("ok", f"Re-ran {count} dead job{'s' if count != 1 else ''}.")
    except JobQueueError as refused:
        session.flash("error", f"Not re-run: {views.refusal(refused)}")
    back_to("/ops")


@routes.get("/docs/api")
async def api_docs(request: web.Request) -> web.StreamResponse:
    """The API reference, read-only, as its Markdown text (public: it holds nothing of anyone's)."""
    try:
        text = await asyncio.to_thread(Path(request.app[SETTINGS].api_docs_file).read_text, encoding="utf-8")
    except OSError:
        return render(request, "error.html", code=404, message="The API reference is not installed here.")
    return render(request, "api.html", text=text)

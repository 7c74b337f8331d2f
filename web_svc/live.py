"""The live-update endpoints (server-sent events; the mechanism and its events: web_svc/events.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from jobqueue.client import Job, JobQueueError
from web_svc import views
from web_svc.context import (
    BACKEND,
    SETTINGS,
    STREAM_LIMITS,
    STREAM_TASKS,
    client_address,
    job_id,
    require_session,
)
from web_svc.events import EventStream
from web_svc.pages import status_filter
from web_svc.sessions import Session

routes = web.RouteTableDef()


async def _bounded(
    request: web.Request, session: Session, body: Callable[[EventStream], Awaitable[None]]
) -> web.StreamResponse:
    """Run the stream ``body`` within the session's and the address's limits, cancellable by the stop."""
    limits = request.app[STREAM_LIMITS]
    address = client_address(request)
    if not limits.acquire(session.key, address):
        raise web.HTTPTooManyRequests(text="too many live streams open; close a tab")
    task = asyncio.current_task()
    assert task is not None  # a handler runs in a task
    tasks = request.app[STREAM_TASKS]
    tasks.add(task)
    try:
        stream = await EventStream.start(request)
        try:
            await body(stream)
        except JobQueueError as error:
            await stream.ended_by(error)
        except ConnectionResetError:
            pass  # the browser went away: nobody is left to tell

        return stream.response
    finally:
        tasks.discard(task)
        limits.release(session.key, address)


@routes.get("/events/jobs")
async def jobs_events(request: web.Request) -> web.StreamResponse:
    """The caller's jobs as they change, for the list's filters; a snapshot of the first page once watching."""
    session = require_session(request)
    backend = request.app[BACKEND]
    jobs = backend.jobs(session.token)
    status = status_filter(request.query.get("status", ""))
    job_type = request.query.get("type", "")
    snapshot = request.query.get("snapshot") == "1"

    async def body(stream: EventStream) -> None:
        async def each(batch: list[Job]) -> None:
            if batch:
                await stream.send("jobs", [views.job_row(job) for job in batch])
                return
            # The first (empty) batch: the watch has begun, so a page listed now misses nothing.
            if snapshot:
                page = await backend.page(
                    jobs, status=status, job_type=job_type, page_token="", page_size=request.app[SETTINGS].page_size
                )
                await stream.send("snapshot", [views.job_row(job) for job in page.jobs])
            await stream.send("ready", {})

        watch: AsyncIterator[list[Job]] = jobs.watch_jobs(status=status, job_type=job_type)
        await stream.relay(watch, each)
        await stream.send("interrupted", {"message": "The job service ended the watch."})

    return await _bounded(request, session, body)


@routes.get("/events/jobs/{job_id}")
async def job_events(request: web.Request) -> web.StreamResponse:
    """One job, with its attempts, each time it changes, until it is final."""
    session = require_session(request)
    wanted = job_id(request)
    jobs = request.app[BACKEND].jobs(session.token)

    async def body(stream: EventStream) -> None:
        async def each(job: Job) -> None:
            await stream.send("job", views.job_detail(job))

        await stream.relay(jobs.watch(wanted, history=True), each)
        await stream.send("done", {})

    return await _bounded(request, session, body)

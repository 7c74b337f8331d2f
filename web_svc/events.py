"""Live updates: the job service's watches relayed to the browser as server-sent events.

``/events/jobs`` relays WatchJobs for the page's filters: the first (empty)
batch says the watch has begun, and only then is the first page listed and
sent (``snapshot``), so no change can fall between the list and the watch;
each later batch is sent as ``jobs``. ``/events/jobs/{id}`` relays WatchJob
with the attempt history until the job is final (``job`` events, then
``done``). A stream that ends otherwise says why in its last event:
``unavailable`` (this job service has no watches: the page stays as loaded),
``expired`` (log in again), ``gone`` (no such job), or ``interrupted`` (the
browser reconnects by itself, after ``retry`` milliseconds, and gets a fresh
snapshot).

Each stream holds a watch on the job service, so they are bounded: per session
and per client address (``StreamLimits``; beyond, 429), besides the job
service's own limit on each user's watches; and ``MAX_STREAMS`` in all, so one
dashboard holds a bounded number of watches whoever calls. A comment line every
``KEEPALIVE_SECONDS`` keeps proxies from closing a quiet stream and finds a
browser that went away. When the dashboard stops, every stream is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from aiohttp import web

from jobqueue.client import JobQueueError
from web_svc import views

log = logging.getLogger(__name__)
T = TypeVar("T")

KEEPALIVE_SECONDS = 15.0
#: How long a browser waits before it reconnects an interrupted stream.
RETRY_MILLISECONDS = 3000


class StreamLimits:
    """How many streams each session and each client address holds open, and the most each may."""

    def __init__(self, *, per_session: int, per_address: int, total: int) -> None:
        self._per_session = per_session
        self._per_address = per_address
        self._total = total
        self._sessions: Counter[str] = Counter()
        self._addresses: Counter[str] = Counter()

    def acquire(self, session: str, address: str) -> bool:
        """Count one more stream for ``session`` and ``address``, unless either (or the whole) has its most."""
        if (
            self._sessions[session] >= self._per_session
            or self._addresses[address] >= self._per_address
            or self.open() >= self._total
        ):
            return False
        self._sessions[session] += 1
        self._addresses[address] += 1
        return True

    def release(self, session: str, address: str) -> None:
        """One stream of ``session`` and ``address`` ended."""
        for counter, key in ((self._sessions, session), (self._addresses, address)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    def open(self) -> int:
        """Streams open now, over every session."""
        return sum(self._sessions.values())


class EventStream:
    """One server-sent event stream to a browser."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response

    @classmethod
    async def start(cls, request: web.Request) -> EventStream:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                # A buffering proxy (nginx) would hold the events back.
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        stream = cls(response)
        await stream.write(f"retry: {RETRY_MILLISECONDS}\n\n")
        return stream

    async def write(self, text: str) -> None:
        await self.response.write(text.encode())

    async def send(self, event: str, data: Any) -> None:
        """One event; ``data`` as JSON (on one line, as the format needs)."""
        await self.write(f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n")

    async def relay(self, source: AsyncIterator[T], each: Callable[[T], Awaitable[None]]) -> None:
        """Call ``each`` on every item of ``source`` as it comes, writing keep-alive comments while none does."""
        pending: asyncio.Future[T] | None = None
        try:
            while True:
                pending = asyncio.ensure_future(anext(source))
                while not (await asyncio.wait({pending}, timeout=KEEPALIVE_SECONDS))[0]:
                    await self.write(": keep-alive\n\n")
                try:
                    item = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                await each(item)
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, JobQueueError):
                    await pending
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(JobQueueError, RuntimeError):
                    await aclose()

    async def ended_by(self, error: JobQueueError) -> None:
        """The last event of a stream the job service ended with ``error``."""
        if error.code == grpc.StatusCode.UNIMPLEMENTED:
            await self.send(
                "unavailable", {"message": "Live updates are unavailable: this job service has no watches."}
            )
        elif error.code == grpc.StatusCode.UNAUTHENTICATED:
            await self.send("expired", {"message": "Your session has expired; log in again."})
        elif error.code == grpc.StatusCode.NOT_FOUND:
            await self.send("gone", {"message": views.refusal(error)})
        else:
            log.info("live stream interrupted", extra={"code": error.code.name, "error": error.message})
            await self.send("interrupted", {"message": views.refusal(error)})

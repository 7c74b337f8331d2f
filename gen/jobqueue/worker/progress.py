"""A running job's progress reports, coalesced: at most one per interval per job, the latest one winning.

A handler may report progress in a tight loop; the job service must not see
one call per report. The first report of a job leaves at once; any made within
``interval`` seconds of the last one sent wait, each replacing the one before,
and the last of them leaves when the interval is up. A job that ends drops
what is still waiting: its final report (COMPLETED, FAILED) supersedes it.
Sending goes through the worker's report batching (jobqueue.worker.reports),
one report per job in flight at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

#: Sends one progress report of a job: (fraction, message).
Send = Callable[[float, str], Awaitable[None]]


class Progress:
    """The progress reports of one running job; ``report`` is its JobContext's sink."""

    def __init__(self, send: Send, interval: float) -> None:
        self._send = send
        self._interval = interval
        self._latest: tuple[float, str] | None = None
        self._next_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def report(self, fraction: float, message: str) -> None:
        """Record the job's progress; it is sent now, or when the interval since the last one is up."""
        self._latest = (fraction, message)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush(), name="progress")

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._latest is not None:
            if (wait := self._next_at - loop.time()) > 0:
                await asyncio.sleep(wait)
            fraction, message = self._latest
            self._latest = None
            self._next_at = loop.time() + self._interval
            try:
                await self._send(fraction, message)
            except Exception:  # progress is advisory: losing one must not touch the job
                log.exception("could not report progress")

    async def close(self) -> None:
        """The job ended: drop what waits, and stop a report in flight (the final report supersedes it)."""
        self._latest = None
        if self._task is not None:
            self._task.cancel()
            # wait, not await: the task's cancellation is not ours to raise, nor ours its to swallow.
            await asyncio.wait([self._task])

"""The outbox relay: moves stored-but-unpublished job messages to RabbitMQ, and due retries into the outbox.

CreateJob writes a job and its message in one transaction and wakes the relay.
The relay locks a batch of outbox rows, publishes them with confirms, and
deletes them in the same transaction, so a row disappears only after the broker
has the message. A crash between publish and commit publishes the batch again:
delivery is at-least-once and the workers' fenced reports make that harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from job_svc import metrics
from job_svc.errors import BrokerUnavailable
from job_svc.model import Encoder, OutboxMessage
from jobqueue.runtime.messages import encode_delivery

log = logging.getLogger(__name__)


class OutboxStore(Protocol):
    """The outbox and the jobs' timers (job_svc.store.JobStore; see its methods for the contract)."""

    def outbox_batch(self, limit: int) -> AbstractAsyncContextManager[Sequence[OutboxMessage]]:
        """Lock up to ``limit`` outbox rows; they are deleted only if the block exits normally."""

    async def expire_leases(self, limit: int) -> int:
        """Take back up to ``limit`` RUNNING jobs whose claim expired; how many."""

    async def enqueue_due(self, limit: int, encode: Encoder) -> int:
        """Move up to ``limit`` due retries into the outbox; how many."""


class OutboxPublisher(Protocol):
    """The broker, as the relay needs it (job_svc.publisher.Publisher)."""

    @property
    def connected(self) -> bool:
        """Whether a confirmed channel is open right now."""

    async def wait_connected(self) -> None:
        """Wait until a channel is open."""

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        """Publish, returning once all are confirmed; BrokerUnavailable if not."""


class OutboxRelay:
    """Publishes the outbox, woken by new jobs and polling for rows it was not told about."""

    def __init__(
        self,
        store: OutboxStore,
        publisher: OutboxPublisher,
        *,
        batch_size: int,
        poll_seconds: float,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Tell the relay there is something new to publish."""
        self._wake.set()

    async def drain(self) -> int:
        """Publish until the outbox is empty (or the broker fails); returns how many were published."""
        published = 0
        while True:
            async with self._store.outbox_batch(self._batch_size) as batch:
                if batch:
                    await self._publisher.publish(batch)
            metrics.PUBLISHED.inc(len(batch))
            published += len(batch)
            if len(batch) < self._batch_size:
                return published

    async def run(self) -> None:
        """Relay forever; cancel the task to stop."""
        next_timer_check = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
            self._wake.clear()
            if not self._publisher.connected:
                # Rows stay in the outbox, and CreateJob keeps succeeding, until the broker is back.
                await self._publisher.wait_connected()
            try:
                # Expired claims are taken back and due retries join the outbox;
                # checked once per poll interval, not on every wake-up from CreateJob.
                if time.monotonic() >= next_timer_check:
                    next_timer_check = time.monotonic() + self._poll_seconds
                    if expired := await self._store.expire_leases(self._batch_size):
                        metrics.LEASES_EXPIRED.inc(expired)
                        log.warning("took back jobs whose workers sent no report in time", extra={"count": expired})
                    await self._store.enqueue_due(self._batch_size, encode_delivery)
                await self.drain()
            except BrokerUnavailable as error:
                log.warning("relay paused: broker unavailable", extra={"error": error.message})
            except Exception as error:  # noqa: BLE001 - a database outage: retry on the next round
                log.warning("relay paused: cannot read the outbox", extra={"error": repr(error)})
                await asyncio.sleep(self._poll_seconds)

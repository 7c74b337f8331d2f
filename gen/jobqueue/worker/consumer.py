"""All of the worker's AMQP: stay subscribed to its job types' queues, hand each delivery to a task, stop cleanly.

The connection is kept up by jobqueue.runtime.rabbitmq's Reconnector: on each
fresh connection this module sets the prefetch, declares the queues of the job
types the worker serves (the job service created them; a worker's broker user
may not) and subscribes to each, on one channel; when the connection or channel
drops the Reconnector logs once, backs off and starts over, and ``connected``
says which state it is in for health.

The prefetch is channel-wide (RabbitMQ's "global" QoS), shared by the consumers
of every queue, so it bounds what the worker holds in all: the jobs one crash
hands back, the async handlers running at once. RabbitMQ has deprecated global
QoS: from 4.3 a broker refuses it unless its configuration says
``deprecated_features.permit.global_qos = true`` (docs/operations.md).

Each delivery runs in a task of our own rather than aio-pika's, so a dropped
connection does not cancel work whose report can still be stored (the
redelivered copy is then just acked).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue, ConsumerTag

from jobqueue.runtime.backoff import Backoff
from jobqueue.runtime.rabbitmq import BROKER_ERRORS, Reconnector, Topology, declare, declare_control

__all__ = ["BROKER_ERRORS", "OnMessage", "QueueConsumer"]

log = logging.getLogger(__name__)


class Spawn(Protocol):
    """How a supervisor starts a task it watches (jobqueue.runtime.service.Supervisor.spawn)."""

    def __call__(self, coroutine: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]: ...


OnMessage = Callable[[AbstractIncomingMessage], Coroutine[Any, Any, None]]


class QueueConsumer:
    """Consumes the queues of ``job_types``, at most ``prefetch`` unacknowledged messages in all; reconnects."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        job_types: Sequence[str],
        on_message: OnMessage,
        *,
        prefetch: int = 100,
        on_control: OnMessage | None = None,
        name: str = "worker_svc",
        backoff: Backoff | None = None,
    ) -> None:
        self._topology = topology
        self._queues = [topology.job_queue(name) for name in job_types]
        self._on_message = on_message
        self._on_control = on_control
        self._prefetch = prefetch
        self._link = Reconnector(
            url, name=name, open_session=self._open, backoff=backoff or Backoff(base=0.2, cap=10.0)
        )
        self._subscriptions: list[tuple[AbstractQueue, ConsumerTag]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """Whether the worker is subscribed to its queues right now."""
        return self._link.connected

    async def wait_connected(self) -> None:
        """Wait until subscribed (at start, or after an outage)."""
        await self._link.wait_connected()

    async def probe(self) -> None:
        """Raise unless subscribed (a HealthMonitor probe)."""
        if not self.connected:
            raise ConnectionError("not connected to RabbitMQ")

    def start(self, spawn: Spawn | None = None) -> None:
        """Start the connect-consume-reconnect loop in the background (in ``spawn``'s task, to supervise it)."""
        loop = self._link.run()
        self._task = spawn(loop, name="consumer") if spawn else asyncio.create_task(loop, name="consumer")

    async def stop(self, grace: float) -> None:
        """Stop taking messages, give in-flight ones up to ``grace`` seconds to finish, then disconnect.

        Deliveries still running after ``grace`` are cancelled unacknowledged,
        so the broker hands them to another worker when the connection closes.
        """
        self._link.stop()
        if self._task is not None:
            # Only a session that is consuming leaves its loop by itself on stop
            # (keeping its connection open for the in-flight acks); one that is
            # connecting or backing off has nothing worth waiting for.
            if not self.connected:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # Subscriptions are still there only if their session was up when stop
        # came (the link then keeps the channel they came on until close).
        if self._link.channel is not None:
            for queue, tag in self._subscriptions:
                try:
                    await queue.cancel(tag, timeout=5)
                except BROKER_ERRORS as error:
                    log.warning("could not cancel a consumer", extra={"queue": queue.name, "error": repr(error)})
        deadline = time.monotonic() + grace
        while self._inflight and (remaining := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self._inflight), timeout=remaining)
        if self._inflight:
            log.warning("handing back unfinished deliveries", extra={"count": len(self._inflight)})
            for task in self._inflight:
                task.cancel()
            await asyncio.gather(*self._inflight, return_exceptions=True)
        await self._link.close()

    async def _open(self, connection: AbstractConnection) -> AbstractChannel:
        """On a fresh connection: the prefetch set, the queues declared, consuming each (and hearing notices)."""
        self._subscriptions = []
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self._prefetch, global_=True)  # shared by the queues: see the module doc
        for name in self._queues:
            queue = await declare(channel, self._topology, name)
            self._subscriptions.append((queue, await queue.consume(self._deliver)))
        if self._on_control is not None:
            # A private queue on the fanout exchange: every worker hears every notice.
            notices = await channel.declare_queue(exclusive=True, auto_delete=True)
            await notices.bind(await declare_control(channel, self._topology))
            await notices.consume(self._on_control, no_ack=True)
        log.info("consuming", extra={"queues": self._queues, "prefetch": self._prefetch})
        return channel

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._on_message(message))
        self._inflight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # on_message contains its own failures; reaching here is a bug, but must not stop consumption.
            log.error("delivery handler raised", exc_info=error)

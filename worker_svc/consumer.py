"""All of the worker's AMQP: stay subscribed to the job queue, hand each delivery to a task, stop cleanly.

The connection is a plain one (see common.rabbitmq): this loop connects,
declares the topology, sets the prefetch and subscribes; when the connection
or channel drops it logs once, backs off and starts over, and ``connected``
says which state it is in for health. Each delivery runs in a task of our own
rather than aio-pika's, so a dropped connection does not cancel work whose
report can still be stored (the redelivered copy is then just acked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue, ConsumerTag

from common.backoff import Backoff
from common.rabbitmq import Topology, connect, declare, declare_control

log = logging.getLogger(__name__)

#: What a broken connection or channel raises (aio-pika's list: AMQP errors, OSError incl. timeouts, ...).
BROKER_ERRORS: tuple[type[BaseException], ...] = aio_pika.exceptions.CONNECTION_EXCEPTIONS

OnMessage = Callable[[AbstractIncomingMessage], Coroutine[Any, Any, None]]


class QueueConsumer:
    """Consumes ``topology.queue`` with at most ``prefetch`` unacknowledged messages, reconnecting forever."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        on_message: OnMessage,
        *,
        prefetch: int = 100,
        on_control: OnMessage | None = None,
        name: str = "worker_svc",
        backoff: Backoff | None = None,
    ) -> None:
        self._url = url
        self._topology = topology
        self._on_message = on_message
        self._on_control = on_control
        self._prefetch = prefetch
        self._name = name
        self._backoff = backoff or Backoff(base=0.2, cap=10.0)
        self._stopping = asyncio.Event()
        self._connection: AbstractConnection | None = None
        self._subscription: tuple[AbstractQueue, ConsumerTag] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @property
    def connected(self) -> bool:
        """Whether the worker is subscribed to the queue right now."""
        return self._subscribed.is_set()

    async def wait_connected(self) -> None:
        """Wait until subscribed (at start, or after an outage)."""
        await self._subscribed.wait()

    async def probe(self) -> None:
        """Raise unless subscribed (a HealthMonitor probe)."""
        if not self.connected:
            raise ConnectionError("not connected to RabbitMQ")

    def start(self) -> None:
        """Start the connect-consume-reconnect loop in the background."""
        self._task = asyncio.create_task(self._run(), name="rabbitmq-consumer")

    async def stop(self, grace: float) -> None:
        """Stop taking messages, give in-flight ones up to ``grace`` seconds to finish, then disconnect.

        Deliveries still running after ``grace`` are cancelled unacknowledged,
        so the broker hands them to another worker when the connection closes.
        """
        self._stopping.set()
        if self._task is not None:
            # Only a session that is consuming leaves its loop by itself on stop
            # (keeping its connection open for the in-flight acks); one that is
            # connecting or backing off has nothing worth waiting for.
            if not self.connected:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._subscription is not None:
            queue, tag = self._subscription
            try:
                await queue.cancel(tag, timeout=5)
            except BROKER_ERRORS as error:
                log.warning("could not cancel the consumer", extra={"error": repr(error)})
        deadline = time.monotonic() + grace
        while self._inflight and (remaining := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self._inflight), timeout=remaining)
        if self._inflight:
            log.warning("handing back unfinished deliveries", extra={"count": len(self._inflight)})
            for task in self._inflight:
                task.cancel()
            await asyncio.gather(*self._inflight, return_exceptions=True)
        await self._disconnect()

    async def _run(self) -> None:
        quiet = False  # whether the current outage was logged already
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await self._session()
                error = "connection closed"
            except BROKER_ERRORS as exc:
                error = repr(exc)
            except Exception as exc:
                # A bug rather than an outage; still, consumption must resume.
                log.exception("unexpected error in the RabbitMQ session")
                error = repr(exc)
            was_connected = self.connected
            self._subscribed.clear()
            if self._stopping.is_set():
                return
            await self._disconnect()
            if was_connected:
                log.warning("lost RabbitMQ; reconnecting", extra={"error": error})
                # Only a session that lasted starts the backoff over: a broker
                # that accepts and then drops every connection is still down.
                if time.monotonic() - started >= self._backoff.cap:
                    self._backoff.reset()
            elif not quiet:
                log.warning("RabbitMQ unreachable; retrying", extra={"error": error})
            else:
                log.debug("RabbitMQ still unreachable", extra={"error": error})
            quiet = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._backoff.next_delay())

    async def _session(self) -> None:
        """Connect and consume until the connection or channel drops, or stop is requested."""
        lost = asyncio.Event()
        self._connection = connection = await connect(self._url, name=self._name)
        connection.close_callbacks.add(lambda *_: lost.set())
        channel = await connection.channel()
        channel.close_callbacks.add(lambda *_: lost.set())
        await channel.set_qos(prefetch_count=self._prefetch)
        queue = await declare(channel, self._topology)
        self._subscription = (queue, await queue.consume(self._deliver))
        if self._on_control is not None:
            # A private queue on the fanout exchange: every worker hears every notice.
            notices = await channel.declare_queue(exclusive=True, auto_delete=True)
            await notices.bind(await declare_control(channel, self._topology))
            await notices.consume(self._on_control, no_ack=True)
        self._subscribed.set()
        log.info("consuming", extra={"queue": self._topology.queue, "prefetch": self._prefetch})
        stopping = asyncio.create_task(self._stopping.wait())
        dropped = asyncio.create_task(lost.wait())
        try:
            await asyncio.wait({stopping, dropped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            dropped.cancel()
        if not self._stopping.is_set():
            self._subscription = None

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        self._subscription = None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except BROKER_ERRORS as error:
                log.debug("error closing the RabbitMQ connection", extra={"error": repr(error)})

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._on_message(message))
        self._inflight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # on_message contains its own failures; reaching here is a bug, but must not stop consumption.
            log.error("delivery handler raised", exc_info=error)

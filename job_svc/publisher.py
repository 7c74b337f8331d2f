"""Publishing job messages to RabbitMQ with publisher confirms (the job service's only AMQP)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from pamqp.commands import Basic

from job_svc.errors import BrokerUnavailable
from job_svc.model import OutboxMessage
from jobqueue.runtime import rabbitmq, tracing
from jobqueue.runtime.limits import NAME_PATTERN
from jobqueue.runtime.messages import (
    CANCELLATION_TYPE,
    CONTENT_TYPE,
    MESSAGE_TYPE,
    MalformedDelivery,
    decode_delivery,
    encode_cancellation,
)
from jobqueue.runtime.signing import Signer

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)

#: How long a declaration of queues waits for a channel that is not open (yet).
CONNECT_WAIT_SECONDS = 5.0
#: What a publish can raise when the channel or connection fails under it.
_PUBLISH_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, TimeoutError, RuntimeError)


@dataclass(frozen=True)
class QueueStats:
    """What the broker says of one queue: messages ready for a consumer, and consumers."""

    queue: str
    ready: int
    consumers: int


class Publisher:
    """Keeps one confirmed channel open, reconnecting by itself; publishes batches of messages."""

    def __init__(
        self, url: str, topology: rabbitmq.Topology, signer: Signer, job_types: Callable[[], Iterable[str]]
    ) -> None:
        """``signer`` signs every message, so that workers act only on what this service published.

        ``job_types`` are the known types, whose queues are declared on each connection: workers
        may not create them (jobqueue.runtime.rabbitmq.worker_permissions), and a broker that lost
        them (reset) gets them back.
        """
        self._topology = topology
        self._signer = signer
        self._job_types = job_types
        self._control: AbstractExchange | None = None
        #: The types' queues declared on the current channel.
        self._declared: set[str] = set()
        self._link = rabbitmq.Reconnector(url, name="job_svc publisher", open_session=self._open)

    @property
    def connected(self) -> bool:
        """Whether a confirmed channel to the broker is open right now."""
        channel = self._link.channel
        return self._link.connected and channel is not None and not channel.is_closed

    async def wait_connected(self) -> None:
        """Wait until a channel is open."""
        await self._link.wait_connected()

    async def probe(self) -> None:
        """Raise unless a channel is open (a HealthMonitor probe)."""
        if not self.connected:
            raise ConnectionError("not connected to RabbitMQ")

    async def run(self) -> None:
        """Connect, and reconnect after every loss, until cancelled."""
        await self._link.run()

    async def _open(self, connection: AbstractConnection) -> AbstractChannel:
        """On a fresh connection: what an older version left in the legacy queue moved, a confirmed channel."""
        await self._move_legacy(connection)
        channel = await connection.channel(publisher_confirms=True)
        self._declared = set()
        await rabbitmq.declare_dead_letters(channel, self._topology)
        await self._declare(channel, list(self._job_types()))
        self._control = await rabbitmq.declare_control(channel, self._topology)
        log.info("connected to RabbitMQ", extra={"queue": self._topology.queue})
        return channel

    async def _move_legacy(self, connection: AbstractConnection) -> None:
        """Move each message in the legacy queue ``<queue>`` (from before routing) to its type's queue.

        Each goes byte-identical, properties and signature included, and is acked
        only once the broker confirmed its copy: a crash in between leaves both,
        a duplicate delivery that the workers' fenced reports make harmless. One
        no worker could act on (undecodable, or naming no possible type) is
        dead-lettered, as a worker would have done. It runs on a channel of its
        own, so that the queue's being absent (the usual case) or in use by a
        worker of the older version closes only that channel. The empty queue is
        then deleted, unless an older worker still consumes it.
        """
        legacy = self._topology.queue
        async with connection.channel(publisher_confirms=True) as channel:
            try:
                await channel.declare_queue(legacy, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                return
        moved = 0
        async with connection.channel(publisher_confirms=True) as channel:
            underlay = await channel.get_underlay_channel()
            declared: set[str] = set()
            while isinstance((message := await underlay.basic_get(legacy, timeout=10)).delivery, Basic.GetOk):
                tag = message.delivery.delivery_tag
                assert tag is not None  # a GetOk always carries one
                try:
                    job_type = decode_delivery(message.body).job_type
                except MalformedDelivery:
                    job_type = ""
                if not NAME_PATTERN.fullmatch(job_type):
                    await underlay.basic_reject(tag, requeue=False)
                    continue
                queue = self._topology.job_queue(job_type)
                if queue not in declared:
                    await rabbitmq.declare(channel, self._topology, queue)
                    declared.add(queue)
                reply = await underlay.basic_publish(
                    message.body, routing_key=queue, properties=message.header.properties, mandatory=True, timeout=10
                )
                if not isinstance(reply, Basic.Ack):
                    raise ConnectionError(f"the broker did not take a legacy message into {queue}")
                await underlay.basic_ack(tag)
                moved += 1
        if moved:
            log.info("moved messages from the legacy queue to their types' queues", extra={"count": moved})
        async with connection.channel() as channel:
            with contextlib.suppress(aiormq.exceptions.AMQPError):
                await channel.queue_delete(legacy, if_unused=True, if_empty=True)

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        """Publish outbox messages, each to its type's queue, persistent; returns once the broker confirmed them all.

        A type's queue is declared before the first message to it on each channel,
        so no message is published to a queue that does not exist (the job
        service need not know every type beforehand: another replica may have
        taken a job of a type this one has not read yet). Raises
        BrokerUnavailable if there is no channel or any message was not
        confirmed, or came back unroutable; the caller keeps the messages and
        tries again later.
        """
        channel = self._link.channel
        if channel is None or channel.is_closed:
            raise BrokerUnavailable("not connected to RabbitMQ")
        headers = [self._signer.headers(MESSAGE_TYPE, message.body) for message in messages]
        # aiormq's channel (below) is not what the aio-pika instrumentation sees, so each message's
        # PRODUCER span is made here, in its job's trace, and its context added to the headers.
        spans = self._start_spans(messages, headers) if tracing.enabled() else None
        try:
            await self._declare(channel, {message.job_type for message in messages})
            # aiormq's channel, under aio-pika's: the same frames for half the
            # CPU, with no aio_pika.Message built per message. Confirms for
            # concurrent publishes on one channel arrive pipelined, so a batch
            # costs about one round trip instead of one per message.
            underlay = await channel.get_underlay_channel()
            replies = await asyncio.gather(
                *(
                    underlay.basic_publish(
                        message.body,
                        routing_key=self._topology.job_queue(message.job_type),
                        properties=Basic.Properties(
                            delivery_mode=2,  # persistent
                            content_type=CONTENT_TYPE,
                            message_type=MESSAGE_TYPE,
                            message_id=str(message.job_id),
                            priority=int(message.priority),
                            headers=signed,
                        ),
                        mandatory=True,
                        timeout=10,
                    )
                    for message, signed in zip(messages, headers, strict=True)
                )
            )
        except _PUBLISH_ERRORS as error:
            for span in spans or ():
                tracing.end(span, f"publish failed: {error!r}")
            raise BrokerUnavailable(f"publish failed: {error!r}") from error
        for span, reply in zip(spans or (), replies, strict=False):
            tracing.end(span, None if isinstance(reply, Basic.Ack) else "not confirmed: unroutable")
        if undelivered := sum(not isinstance(reply, Basic.Ack) for reply in replies):
            # Returned as unroutable: a queue is gone (deleted by hand, say).
            # Declaring the queues again on the next attempt lets it through.
            self._declared.clear()
            raise BrokerUnavailable(f"{undelivered} of {len(messages)} messages came back unroutable")

    def _start_spans(self, messages: Sequence[OutboxMessage], headers: Sequence[dict[str, Any]]) -> list[Span | None]:
        """A PRODUCER span per message, in the trace its outbox row kept; their contexts written into ``headers``."""
        return [
            tracing.start_publish(
                message.trace_context,
                self._topology.job_queue(message.job_type),
                {"messaging.message.id": str(message.job_id), "jobqueue.job.type": message.job_type},
                signed,
            )
            for message, signed in zip(messages, headers, strict=True)
        ]

    async def declare_queues(self, job_types: Sequence[str]) -> None:
        """Declare the queues of ``job_types`` (DeclareJobTypes); BrokerUnavailable without a channel or if it fails.

        A channel being opened (at start, or after a blip) is waited for, up to CONNECT_WAIT_SECONDS.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._link.wait_connected(), CONNECT_WAIT_SECONDS)
        channel = self._link.channel
        if not self.connected or channel is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        try:
            await self._declare(channel, job_types)
        except _PUBLISH_ERRORS as error:
            raise BrokerUnavailable(f"cannot declare the job types' queues: {error!r}") from error

    async def _declare(self, channel: AbstractChannel, job_types: Iterable[str]) -> None:
        """Declare each of ``job_types``' queues not yet declared on ``channel``."""
        for queue in sorted({self._topology.job_queue(name) for name in job_types} - self._declared):
            await rabbitmq.declare(channel, self._topology, queue)
            self._declared.add(queue)

    async def queue_stats(self, job_types: Iterable[str]) -> list[QueueStats]:
        """The ready messages and consumers of each of ``job_types``' queues and of the dead-letter queue.

        Raises BrokerUnavailable if there is no channel or the broker does not
        answer. The queues are declared as on publishing (the same arguments,
        so never refused), which answers with their counts, where a passive
        declare of a queue deleted by hand would close the publishing channel.
        Each declare is one round trip that publishes on this channel wait
        behind (well under 1 ms on a local broker).
        """
        channel = self._link.channel
        if channel is None or channel.is_closed:
            raise BrokerUnavailable("not connected to RabbitMQ")
        try:
            queues = [
                await rabbitmq.declare(channel, self._topology, self._topology.job_queue(job_type))
                for job_type in job_types
            ]
            queues.append(await rabbitmq.declare_dead_letters(channel, self._topology))
        except _PUBLISH_ERRORS as error:
            raise BrokerUnavailable(f"cannot read the queues' counts: {error!r}") from error
        return [
            QueueStats(
                queue.name, queue.declaration_result.message_count or 0, queue.declaration_result.consumer_count or 0
            )
            for queue in queues
        ]

    async def announce_cancellation(self, job_id: uuid.UUID) -> None:
        """Tell every worker that ``job_id`` was cancelled (best effort: see JobCancellation)."""
        control = self._control
        if control is None or not self.connected:
            log.warning("cannot announce a cancellation: RabbitMQ unreachable", extra={"job_id": str(job_id)})
            return
        body = encode_cancellation(job_id)
        message = aio_pika.Message(
            body,
            content_type=CONTENT_TYPE,
            type=CANCELLATION_TYPE,
            headers=self._signer.headers(CANCELLATION_TYPE, body),
        )
        try:
            await control.publish(message, routing_key="", timeout=5)
        except _PUBLISH_ERRORS as error:
            log.warning("cannot announce a cancellation", extra={"job_id": str(job_id), "error": repr(error)})

    async def close(self) -> None:
        """Close the connection, if any (the run task should be cancelled first)."""
        await self._link.close()

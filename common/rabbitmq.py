"""The RabbitMQ topology the job service publishes to and the workers consume from.

Both sides declare it identically (declaring is idempotent, and RabbitMQ refuses
a redeclare with different arguments, so the arguments live only here):

- ``<queue>``: durable classic queue of JobDelivery messages (their bodies:
  common/messages.py). Its arguments are
  fixed at creation, so the ones later features rely on are set from the start:
  ``x-max-priority`` (job priorities) and a dead-letter route to ``<queue>.dead``.
- ``<queue>.dead``: durable queue where rejected messages (undecodable ones, or
  jobs that exhausted their attempts) wait for an operator.
- ``<queue>.control``: fanout exchange of notices to every worker (a RUNNING
  job was cancelled); each worker binds a private, auto-deleted queue to it.

Connections are plain (not aio-pika's "robust" ones): each service runs its own
reconnect loop, so it knows when it is disconnected and can say so in health.
They ask for a HEARTBEAT_SECONDS heartbeat unless the URL names one
(``?heartbeat=30``): the broker takes back the messages of a worker that hung
without closing its connection after that long, not after RabbitMQ's 60 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue
from yarl import URL

#: Messages carry a priority 0..MAX_PRIORITY; RabbitMQ keeps one sub-queue per level.
MAX_PRIORITY = 3
#: The AMQP heartbeat timeout asked for when the URL names none. RabbitMQ's advice is 5 to 20 s:
#: shorter risks dropping a connection whose process is merely busy for a moment.
HEARTBEAT_SECONDS = 15


@dataclass(frozen=True)
class Topology:
    """Names of the queues for one RABBITMQ_QUEUE setting."""

    queue: str

    @property
    def dead_letter_queue(self) -> str:
        """Where rejected messages go."""
        return f"{self.queue}.dead"

    @property
    def control_exchange(self) -> str:
        """Fanout exchange of JobCancellation notices to every worker."""
        return f"{self.queue}.control"


async def connect(url: str, *, name: str) -> AbstractConnection:
    """Open a connection (raises on failure; callers own the retry loop)."""
    target = URL(url)
    if "heartbeat" not in target.query:
        target = target.update_query(heartbeat=HEARTBEAT_SECONDS)
    return await aio_pika.connect(target, timeout=5, client_properties={"connection_name": name})


async def declare_control(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare the fanout exchange of control notices (cancellations) to every worker."""
    return await channel.declare_exchange(topology.control_exchange, aio_pika.ExchangeType.FANOUT, durable=True)


async def declare(channel: AbstractChannel, topology: Topology) -> AbstractQueue:
    """Declare the dead-letter queue and the job queue; returns the job queue."""
    await channel.declare_queue(topology.dead_letter_queue, durable=True)
    return await channel.declare_queue(
        topology.queue,
        durable=True,
        arguments={
            "x-max-priority": MAX_PRIORITY,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": topology.dead_letter_queue,
        },
    )

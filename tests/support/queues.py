"""Looking into RabbitMQ queues from tests (depth, raw publishes), over connections of the test's own."""

from __future__ import annotations

import aio_pika


async def queue_depth(url: str, queue: str) -> int:
    """How many messages wait in ``queue`` (ready, not delivered)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def publish_raw(url: str, queue: str, bodies: list[bytes], *, priority: int | None = None) -> None:
    """Publish each body as it is, straight to ``queue``, with no properties but ``priority`` if given.

    Without a priority a message waits behind every job in the (priority) job
    queue; with the jobs' own (2, NORMAL) it takes its place among them.
    """
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for body in bodies:
            await channel.default_exchange.publish(aio_pika.Message(body, priority=priority), routing_key=queue)

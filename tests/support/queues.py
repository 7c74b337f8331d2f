"""Looking into RabbitMQ queues from tests (depth, raw publishes), over connections of the test's own."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
import pytest

from jobqueue.runtime.messages import MESSAGE_TYPE
from jobqueue.runtime.signing import Signer


async def queue_depth(url: str, queue: str) -> int:
    """How many messages wait in ``queue`` (ready, not delivered)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def publish_raw(
    url: str,
    queue: str,
    bodies: list[bytes],
    *,
    priority: int | None = None,
    signed_with: bytes | None = None,
    headers: list[dict[str, Any]] | None = None,
) -> None:
    """Publish each body as it is, straight to ``queue``, with no properties but ``priority`` if given.

    Without a priority a message waits behind every job in the (priority) job
    queue; with the jobs' own (2, NORMAL) it takes its place among them.
    ``signed_with`` (a worker token) signs each as the job service signs a job's message
    (gen/jobqueue/runtime/signing.py), as if the job service itself had published it; ``headers``, one per
    body, are sent as given instead (a copy of a real message's, say).
    """
    signer = Signer(lambda: frozenset({signed_with})) if signed_with is not None else None
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for i, body in enumerate(bodies):
            sent = headers[i] if headers is not None else signer.headers(MESSAGE_TYPE, body) if signer else None
            await channel.default_exchange.publish(
                aio_pika.Message(body, priority=priority, headers=sent), routing_key=queue
            )


async def queue_exists(url: str, queue: str) -> bool:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
        return True


def wait_for_queue(url: str, queue: str, timeout: float = 30.0) -> None:
    """Return once the service has declared ``queue``.

    Health is SERVING as soon as PostgreSQL answers (jobs are accepted into the
    outbox while the broker is away), so on a busy machine the service can be
    ready a moment before its first RabbitMQ session has declared the queue.
    """
    deadline = time.monotonic() + timeout
    while not asyncio.run(queue_exists(url, queue)):
        if time.monotonic() > deadline:
            pytest.fail(f"the job service did not declare {queue} within {timeout} s")
        time.sleep(0.1)

"""Looking into RabbitMQ queues from tests (depth, raw publishes), over connections of the test's own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import aio_pika
import asyncpg
import pytest

from jobqueue.runtime.messages import MESSAGE_TYPE
from jobqueue.runtime.rabbitmq import Topology
from jobqueue.runtime.signing import Signer


async def queue_depth(url: str, queue: str) -> int:
    """How many messages wait in ``queue`` (ready, not delivered)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def jobs_waiting(url: str, queue: str, job_types: Iterable[str]) -> int:
    """How many messages wait in the queues of ``job_types`` (ready, not delivered), RABBITMQ_QUEUE being ``queue``.

    A type whose queue nobody declared yet has none waiting.
    """
    topology = Topology(queue)
    connection = await aio_pika.connect(url)
    async with connection:
        waiting = 0
        for job_type in job_types:
            # A channel each: the broker closes the one a passive declare of a missing queue was made on.
            async with connection.channel() as channel:
                try:
                    declared = await channel.declare_queue(topology.job_queue(job_type), passive=True)
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    continue
                waiting += int(declared.declaration_result.message_count or 0)
        return waiting


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
    """Return once the service has declared ``queue`` (the job service: its ``<queue>.dead``, on connecting).

    Health is SERVING as soon as PostgreSQL answers (jobs are accepted into the
    outbox while the broker is away), so on a busy machine the service can be
    ready a moment before its first RabbitMQ session has declared the queue.
    """
    deadline = time.monotonic() + timeout
    while not asyncio.run(queue_exists(url, queue)):
        if time.monotonic() > deadline:
            pytest.fail(f"the job service did not declare {queue} within {timeout} s")
        time.sleep(0.1)


async def delete_queues(url: str, queue: str, database_url: str) -> None:
    """Delete the queues of RABBITMQ_QUEUE=``queue``: the legacy one, the dead letters', and each known type's.

    The types are those in ``database_url``'s job_types table: the job service takes no job of
    any other, so it published to no other type's queue.
    """
    database = await asyncpg.connect(database_url)
    try:
        names = [row["name"] for row in await database.fetch("SELECT name FROM job_types")]
    finally:
        await database.close()
    topology = Topology(queue)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in (queue, topology.dead_letter_queue, *map(topology.job_queue, names)):
            await channel.queue_delete(name)

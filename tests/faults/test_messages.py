"""Faults in the messages themselves: every message delivered three times, poison messages, a handler that always fails.

Each scenario runs at least 1,000 mixed jobs through the real processes and
settles (tests/faults/scenario.py). The workers run the job types of tests/support/flaky_jobs.py
(WORKER_APP, tests/faults/conftest.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aio_pika
from google.protobuf import struct_pb2

from jobqueue.jobs.v1 import delivery_pb2
from jobqueue.runtime.rabbitmq import Topology
from jobqueue.runtime.secrets import WORKER_TOKEN
from tests.faults.scenario import JOBS, settle, start_workers
from tests.support.clients import mint_token
from tests.support.load import MIXED_TYPES, Spec, mixed, submit
from tests.support.metrics import scrape
from tests.support.processes import free_port
from tests.support.queues import jobs_waiting, publish_raw
from tests.support.system import System

#: The AMQP priority of a NORMAL job's message, so a raw message takes its place among the jobs.
NORMAL = 2


async def _put_back(url: str, queue: str, copies: Callable[[aio_pika.Message], list[aio_pika.Message]]) -> int:
    """Take every message off the mixed jobs' queues and publish ``copies(message)`` of each instead; how many.

    A taken message keeps its body, priority and headers (which carry the job service's signature), and
    its copies go back to the queue it came from.
    """
    topology = Topology(queue)
    connection = await aio_pika.connect(url)
    taken = 0
    async with connection:
        channel = await connection.channel()
        for name in map(topology.job_queue, MIXED_TYPES):
            source = await channel.get_queue(name)
            originals = []
            while (got := await source.get(fail=False)) is not None:
                originals.append(aio_pika.Message(got.body, headers=got.headers, priority=got.priority))
                await got.ack()
            for original in originals:
                for copy in copies(original):
                    await channel.default_exchange.publish(copy, routing_key=name)
            taken += len(originals)
    return taken


def _thrice(message: aio_pika.Message) -> list[aio_pika.Message]:
    """The message three times: the genuine one, replayed."""
    return [message] * 3


def _with_forgeries(message: aio_pika.Message) -> list[aio_pika.Message]:
    """The message, and two copies carrying another payload: one with its signature headers, one with none."""
    forged = delivery_pb2.JobDelivery.FromString(message.body)
    forged.payload.CopyFrom(struct_pb2.Value(string_value="forged payload"))
    altered = forged.SerializeToString()
    return [
        message,
        aio_pika.Message(altered, headers=message.headers, priority=message.priority),
        aio_pika.Message(altered, headers={}, priority=message.priority),
    ]


def _published_backlog(
    system: System, secrets_dir: Path, rabbitmq_url: str, queue_name: str
) -> tuple[str, dict[str, Spec]]:
    """A user's token and JOBS mixed jobs, once the outbox has put every job's message on the queue."""
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(system.job_address, token, mixed(JOBS)))
    deadline = time.monotonic() + 30
    while asyncio.run(jobs_waiting(rabbitmq_url, queue_name, MIXED_TYPES)) < len(specs):
        assert time.monotonic() < deadline, "the outbox was not published"
        time.sleep(0.1)
    return token, specs


def test_duplicate_deliveries_have_exactly_one_outcome(
    system: System, secrets_dir: Path, rabbitmq_url: str, queue_name: str
) -> None:
    token, specs = _published_backlog(system, secrets_dir, rabbitmq_url, queue_name)
    assert asyncio.run(_put_back(rabbitmq_url, queue_name, _thrice)) == len(specs)
    began = time.time()
    start_workers(system, 2)
    # Each copy that finds its job not yet final claims it: a new attempt that takes the job over.
    settle(system, token, specs, "every message delivered 3 times", began, attempts=dict.fromkeys(specs, (1, 2, 3)))
    deadline = time.monotonic() + 30
    while asyncio.run(jobs_waiting(rabbitmq_url, queue_name, MIXED_TYPES)) > 0:  # every copy consumed and settled
        assert time.monotonic() < deadline, "duplicate copies were left in the queue"
        time.sleep(0.1)


def test_poison_messages_are_dead_lettered_and_never_block_a_worker(
    system: System, secrets_dir: Path, rabbitmq_url: str, queue_name: str
) -> None:
    token = mint_token(secrets_dir)
    garbage = [b"", b"\xff\x00 not protobuf", b"\x0a\x03abc", b'{"type": "reverse_string", "payload": "json"}']
    # Well-formed, but for jobs that do not exist: acknowledged and dropped, not dead-lettered.
    strays = [
        delivery_pb2.JobDelivery(
            job_id=str(uuid.uuid4()), type=job_type, payload=struct_pb2.Value(string_value="nobody's job")
        ).SerializeToString()
        for job_type in ("reverse_string", "no_such_type")
    ]
    # One message at a time: a poison message that blocked its worker would block everything.
    [worker] = start_workers(system, 1, PREFETCH_COUNT="1", METRICS_PORT=str(free_port()))
    # In a type's queue, where the worker takes them in turn with that type's jobs.
    poisoned = Topology(queue_name).job_queue("reverse_string")
    began = time.time()
    backlog = mixed(JOBS)
    # Signed as the job service signs (the poison is its own bug, not a forgery: see the next scenario).
    signed_with = (secrets_dir / WORKER_TOKEN).read_bytes().strip()
    asyncio.run(publish_raw(rabbitmq_url, poisoned, garbage + strays, priority=NORMAL, signed_with=signed_with))
    specs = asyncio.run(submit(system.job_address, token, backlog[: JOBS // 2]))
    # more, mid-backlog
    asyncio.run(publish_raw(rabbitmq_url, poisoned, garbage, priority=NORMAL, signed_with=signed_with))
    specs |= asyncio.run(submit(system.job_address, token, backlog[JOBS // 2 :]))
    settle(system, token, specs, "poison messages in the queue", began, dead=2 * len(garbage))
    assert worker.process.poll() is None
    # Every message in <queue>.dead is one the worker could not decode, not a job's.
    assert scrape(worker.env)[("jobqueue_worker_malformed_messages_total", ())] == 2 * len(garbage)


def test_forged_copies_of_every_message_are_dead_lettered_and_results_follow_the_stored_payload(
    system: System, secrets_dir: Path, rabbitmq_url: str, queue_name: str
) -> None:
    token, specs = _published_backlog(system, secrets_dir, rabbitmq_url, queue_name)
    assert asyncio.run(_put_back(rabbitmq_url, queue_name, _with_forgeries)) == len(specs)
    began = time.time()
    [worker] = start_workers(system, 1, METRICS_PORT=str(free_port()))
    # Every job completes with the result of the payload it was created with (check_policy), and
    # both forged copies of each message end in <queue>.dead, counted.
    settle(system, token, specs, "forged copies of every message", began, dead=2 * len(specs))
    counted = scrape(worker.env)
    forged = sum(
        counted.get(("jobqueue_worker_forged_messages_total", (("kind", "job"), ("reason", reason))), 0)
        for reason in ("unsigned", "bad_signature")
    )
    assert forged == 2 * len(specs)


def test_a_handler_that_always_fails_is_retried_up_to_max_attempts_then_dead_lettered(
    system: System, secrets_dir: Path
) -> None:
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(system.job_address, token, mixed(JOBS)))
    attempts: dict[str, tuple[int]] = {}
    for max_attempts, expected in ((1, 1), (2, 2), (0, 3), (5, 5)):  # 0 asks for the default, 3
        failing = [Spec("always_fails", f"doomed {max_attempts}.{i}") for i in range(10)]
        batch = asyncio.run(submit(system.job_address, token, failing, max_attempts=max_attempts))
        specs |= batch
        attempts |= dict.fromkeys(batch, (expected,))
    began = time.time()
    start_workers(system, 2)
    jobs = settle(system, token, specs, "a handler that always fails", began, attempts=attempts, dead=len(attempts))
    assert all(jobs[job_id].max_attempts == n for job_id, (n,) in attempts.items())

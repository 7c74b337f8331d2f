"""Helpers for the job service integration tests: the running service, messages on its queue, calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection

import aio_pika
import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2

from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from jobqueue.runtime.rabbitmq import Topology, declare
from tests.support.clients import bearer, error_info
from tests.support.processes import ServiceProcess
from tests.support.proxy import TcpProxy

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class JobService:
    """A running job service, the proxy between it and RabbitMQ, and a stub."""

    def __init__(self, process: ServiceProcess, address: str, proxy: TcpProxy, queue: str, env: dict[str, str]) -> None:
        self.process = process
        self.process_env = env
        self.address = address
        self.broker_proxy = proxy
        self.queue = queue
        self.channel = grpc.insecure_channel(address)
        self.stub = jobs_pb2_grpc.JobServiceStub(self.channel)


async def delete_queue(url: str, queue: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)


async def take_messages(
    url: str, queue: str, job_types: str | Collection[str], count: int, timeout: float = 20.0
) -> list[aio_pika.IncomingMessage]:
    """Consume ``count`` messages from the queues of ``job_types`` (acking them), RABBITMQ_QUEUE being ``queue``.

    The queues are declared as the services declare them, so a type none of whose jobs was published yet
    has an empty queue rather than none.
    """
    topology = Topology(queue)
    connection = await aio_pika.connect(url)
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with connection:
        channel = await connection.channel()
        names = [job_types] if isinstance(job_types, str) else sorted(job_types)
        queues = [await declare(channel, topology, topology.job_queue(name)) for name in names]
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            taken = [message for q in queues if (message := await q.get(fail=False)) is not None]
            if not taken:
                await asyncio.sleep(0.05)
            for message in taken:
                await message.ack()
            got.extend(taken)
    return got  # type: ignore[return-value]


def create_job(jobs: JobService, token: str, job_type: str, payload: struct_pb2.Value) -> jobs_pb2.Job:
    reply = jobs.stub.CreateJob(jobs_pb2.CreateJobRequest(type=job_type, payload=payload), metadata=bearer(token))
    return reply.job


def text(value: str) -> struct_pb2.Value:
    return struct_pb2.Value(string_value=value)


def number(value: float) -> struct_pb2.Value:
    return struct_pb2.Value(number_value=value)


def expect(call: object, code: grpc.StatusCode, reason: str | None = None, fields: list[str] | None = None) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    got_code, got_reason, got_fields = error_info(caught.value)
    assert got_code == code, caught.value
    if reason is not None:
        assert got_reason == reason
    if fields is not None:
        assert got_fields == fields
    details = caught.value.details() or ""
    assert "Traceback" not in details

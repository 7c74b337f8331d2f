"""Each service's RabbitMQ user holds only what its code uses (jobqueue.runtime.rabbitmq), on the real broker.

The users are made here with rabbitmqctl, as compose's broker set-up makes them
with the management API (common/broker_users.py), from the same Permissions.
With them the whole system works (a job completes, a RUNNING job is cancelled,
which needs the control exchange); and the worker's user, which runs plug-in
code, can neither put a job on the queue nor send a cancellation, while the job
service's cannot take jobs off it.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import aio_pika
import grpc
import pytest
from aiormq.exceptions import ChannelAccessRefused
from google.protobuf import struct_pb2

from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from jobqueue.runtime.rabbitmq import Permissions, Topology, declare, job_service_permissions, worker_permissions
from tests.integration.jobservice import delete_queue
from tests.support.clients import bearer, mint_token
from tests.support.queues import publish_raw, queue_depth, queue_exists
from tests.support.system import System

Stub = jobs_pb2_grpc.JobServiceStub


def _rabbitmqctl(*argv: str) -> None:
    subprocess.run(["rabbitmqctl", "--quiet", *argv], check=True, capture_output=True, timeout=60)


class BrokerUser:
    """A user of the test's own on the shared broker, deleted afterwards."""

    def __init__(self, base_url: str, permissions: Permissions) -> None:
        self.name = f"jobqueue-test-{uuid.uuid4().hex[:8]}"
        self.password = uuid.uuid4().hex
        _rabbitmqctl("add_user", self.name, self.password)
        rights = (permissions.configure, permissions.write, permissions.read)
        _rabbitmqctl("set_permissions", "-p", "/", self.name, *rights)
        broker = urlsplit(base_url)
        self.url = broker._replace(netloc=f"{quote(self.name)}:{self.password}@{broker.netloc.split('@')[-1]}").geturl()

    def delete(self) -> None:
        _rabbitmqctl("delete_user", self.name)


@pytest.fixture
def users(rabbitmq_url: str, queue_name: str) -> Iterator[dict[str, BrokerUser]]:
    topology = Topology(queue_name)
    made = {
        "jobs": BrokerUser(rabbitmq_url, job_service_permissions(topology)),
        "worker": BrokerUser(rabbitmq_url, worker_permissions(topology)),
    }
    yield made
    for user in made.values():
        user.delete()


def _wait_for(stub: Stub, token: str, job_id: str, status: int, timeout: float = 30) -> jobs_pb2.Job:
    deadline = time.monotonic() + timeout
    while (job := stub.GetJob(jobs_pb2.GetJobRequest(id=job_id), metadata=bearer(token)).job).status != status:
        assert time.monotonic() < deadline, f"job {job_id} is {jobs_pb2.JobStatus.Name(job.status)}"
        time.sleep(0.1)
    return job


async def _publish(url: str, exchange: str, routing_key: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = channel.default_exchange if not exchange else await channel.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(b"forged"), routing_key=routing_key)


async def _consume_one(url: str, queue: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.get_queue(queue, ensure=False)
        await declared.get(no_ack=False, fail=False)


async def _declare_legacy(url: str, topology: Topology) -> None:
    """``topology.queue`` declared as the queue every type shared before routing was."""
    connection = await aio_pika.connect(url)
    async with connection:
        await declare(await connection.channel(), topology, topology.queue)


async def _declare_plain(url: str, queue: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        await (await connection.channel()).declare_queue(queue, auto_delete=False)


def test_the_system_works_with_least_privileged_broker_users_and_each_is_refused_the_rest(  # noqa: PLR0917 - fixtures
    service_env: dict[str, str],
    tmp_path: Path,
    purge_queues: None,
    users: dict[str, BrokerUser],
    queue_name: str,
    secrets_dir: Path,
    rabbitmq_url: str,
) -> None:
    system = System({**service_env, "WORKER_APP": "tests.support.flaky_jobs:worker"}, tmp_path)
    topology = Topology(queue_name)
    # What an older version left in the queue every type shared: the job service empties it (this message,
    # which no worker could decode, to the dead letters) and deletes it.
    asyncio.run(_declare_legacy(rabbitmq_url, topology))
    asyncio.run(publish_raw(rabbitmq_url, queue_name, [b"not a job"]))
    try:
        system.start_jobs(RABBITMQ_URL=users["jobs"].url)
        deadline = time.monotonic() + 30
        while asyncio.run(queue_exists(rabbitmq_url, queue_name)):
            assert time.monotonic() < deadline, "the job service did not empty and delete the legacy queue"
            time.sleep(0.1)
        assert asyncio.run(queue_depth(rabbitmq_url, topology.dead_letter_queue)) == 1
        worker = system.start_worker(RABBITMQ_URL=users["worker"].url)
        token = mint_token(secrets_dir)
        with grpc.insecure_channel(system.job_address) as channel:
            stub = Stub(channel)
            create = jobs_pb2.CreateJobRequest(type="fibonacci_calc", payload=struct_pb2.Value(number_value=10))
            job = stub.CreateJob(create, metadata=bearer(token)).job
            assert _wait_for(stub, token, job.id, jobs_pb2.JOB_STATUS_COMPLETED).result == "55"
            # Cancelling a RUNNING job goes to the worker through the control exchange.
            create = jobs_pb2.CreateJobRequest(type="sleeps", payload=struct_pb2.Value(number_value=60))
            job = stub.CreateJob(create, metadata=bearer(token)).job
            _wait_for(stub, token, job.id, jobs_pb2.JOB_STATUS_RUNNING)
            stub.CancelJob(jobs_pb2.CancelJobRequest(id=job.id), metadata=bearer(token))
            deadline = time.monotonic() + 30
            while "job cancelled while running; handler stopped" not in worker.output():
                assert time.monotonic() < deadline, "the worker never heard of the cancellation"
                time.sleep(0.1)
    finally:
        codes = system.stop()
    assert all(code == 0 for code in codes.values()), codes

    with pytest.raises(ChannelAccessRefused):
        asyncio.run(_publish(users["worker"].url, "", topology.job_queue("fibonacci_calc")))  # a job of its own making
    with pytest.raises(ChannelAccessRefused):
        asyncio.run(_publish(users["worker"].url, f"{queue_name}.control", ""))  # a cancellation
    with pytest.raises(ChannelAccessRefused):
        asyncio.run(_consume_one(users["jobs"].url, f"{queue_name}.dead"))
    # A worker reads its types' queues and nothing else: not the dead letters, nor another application's queue.
    with pytest.raises(ChannelAccessRefused):
        asyncio.run(_consume_one(users["worker"].url, topology.dead_letter_queue))
    for other in (f"{queue_name}_other", f"{queue_name}_other.type.fibonacci_calc"):
        asyncio.run(_declare_plain(rabbitmq_url, other))  # there, so that only its permissions can refuse it
        try:
            with pytest.raises(ChannelAccessRefused):
                asyncio.run(_consume_one(users["worker"].url, other))
        finally:
            asyncio.run(delete_queue(rabbitmq_url, other))

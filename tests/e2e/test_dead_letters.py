"""Dead letters end to end: a job that keeps failing dies, and an operator finds it and runs it again.

Every part is real: the auth service and its `python -m auth_svc.admin` command,
the job service, a worker running the test job type `always_fails` (a worker SDK
app: tests/support/flaky_jobs.py), RabbitMQ's dead-letter queue, and the client library.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter

import aio_pika
import pytest

from jobqueue.client import JobQueueError, JobStatus, connect_auth, connect_jobs
from jobqueue.jobs.v1 import delivery_pb2
from tests.support import flaky_jobs
from tests.support.system import System

PASSWORD = "correct horse battery"


@pytest.fixture
def service_env(service_env: dict[str, str]) -> dict[str, str]:
    """The session's service environment, plus the test job types in every service."""
    return {**service_env, "WORKER_APP": "tests.support.flaky_jobs:worker"}


async def _token(system: System, email: str) -> str:
    async with connect_auth(system.auth_address) as auth:
        return await auth.login(email, PASSWORD)


async def _register(system: System, email: str) -> None:
    async with connect_auth(system.auth_address) as auth:
        await auth.register(email, PASSWORD, email.split("@", maxsplit=1)[0])


def _admin(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auth_svc.admin", *args],
        env=system.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _scenario(system: System) -> str:
    """Kill a job, re-run it as an operator and as its owner; returns its id."""
    await _register(system, "user@example.com")
    await _register(system, "ops@example.com")
    user = await _token(system, "user@example.com")
    async with connect_jobs(system.job_address, token=user) as jobs:
        # The types a worker declares are listed with the built-in ones.
        types = {job_type.name: job_type.summary for job_type in await jobs.job_types()}
        assert {t.name: t.summary for t in flaky_jobs.worker.types.values()}.items() <= types.items()
        assert {"reverse_string", "uppercase_text", "fibonacci_calc"} <= set(types)
        doomed = await jobs.submit("always_fails", "x", max_attempts=2)
        fine = await jobs.submit("reverse_string", "abc")
        dead = await jobs.wait(doomed.id, timeout=60)
        assert (dead.status, dead.attempts, dead.error) == (JobStatus.FAILED, 2, flaky_jobs.ERROR)
        assert (await jobs.wait(fine.id, timeout=60)).result == "cba"
        with pytest.raises(JobQueueError) as refused:
            [job async for job in jobs.list_dead()]
        assert refused.value.reason == "OPERATORS_ONLY"

    # The operator's token predates the grant: the role arrives with the next login.
    stale_token = await _token(system, "ops@example.com")
    granted = _admin(system, "grant-operator", "OPS@example.com")
    assert granted.returncode == 0, granted.stderr
    unknown = _admin(system, "grant-operator", "nobody@example.com")
    assert unknown.returncode == 1
    async with connect_jobs(system.job_address, token=stale_token) as jobs:
        with pytest.raises(JobQueueError):
            await jobs.rerun_dead()
    async with connect_jobs(system.job_address, token=await _token(system, "ops@example.com")) as ops:
        listed = [job async for job in ops.list_dead()]
        assert [j.id for j in listed if j.owner_id == dead.owner_id] == [doomed.id]
        again = await ops.rerun(doomed.id, max_attempts=1)
        assert (again.status, again.attempts, again.max_attempts) == (JobStatus.QUEUED, 2, 3)
        assert await ops.rerun_dead() == len(listed) - 1  # the rest; this one is queued already
    async with connect_jobs(system.job_address, token=user) as jobs:
        rerun = await jobs.wait(doomed.id, timeout=60)
        assert (rerun.status, rerun.attempts, rerun.max_attempts) == (JobStatus.FAILED, 3, 3)
        # The owner may re-run it too, and nobody else's token could.
        assert (await jobs.rerun(doomed.id)).status == JobStatus.QUEUED
        assert (await jobs.wait(doomed.id, timeout=60)).attempts == 6
    return doomed.id


async def _dead_letters(url: str, queue: str) -> Counter[str]:
    """How many messages for each job id wait in ``queue`` (taking them out)."""
    found: Counter[str] = Counter()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        dead = await channel.get_queue(queue)
        while (message := await dead.get(fail=False)) is not None:
            await message.ack()
            found[delivery_pb2.JobDelivery.FromString(message.body).job_id] += 1
    return found


def test_an_operator_finds_a_dead_job_and_runs_it_again(system: System, rabbitmq_url: str) -> None:
    system.start_worker()
    doomed = asyncio.run(_scenario(system))
    # Each death left its message in the dead-letter queue: the first, the operator's re-run, the owner's.
    assert asyncio.run(_dead_letters(rabbitmq_url, f"{system.env['RABBITMQ_QUEUE']}.dead"))[doomed] == 3

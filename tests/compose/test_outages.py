"""RabbitMQ and PostgreSQL restarted under load, and the whole stack taken down and up again.

The services are never restarted by the test: they must notice the outage (their
health checks say so while it lasts), reconnect by themselves, and finish every
job. `down` then `up` keeps every job, because the data lives in named volumes.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from jobqueue.client import connect_jobs
from tests.compose.stack import Backlog, Stack, new_token, new_user, started_at

pytestmark = pytest.mark.timeout(1800)

APPS = ("auth-service", "job-service", "worker-service")


@pytest.mark.parametrize(
    ("server", "unhealthy_meanwhile"),
    [("rabbitmq", ["worker-service"]), ("postgres", ["auth-service", "job-service"])],
)
async def test_a_server_restarted_under_load_loses_nothing(
    stack: Stack, server: str, unhealthy_meanwhile: list[str]
) -> None:
    apps = started_at(stack, APPS)
    async with await new_user(stack) as jobs:
        backlog = Backlog()
        await backlog.submit(jobs, 20000, server)
        await backlog.wait_until_some_done(stack)
        stack.compose("stop", server)
        # Each service's own health check, as Docker runs it, fails while it cannot work
        # (once the service has noticed: its dependency checks run every few seconds).
        deadline = time.monotonic() + 30
        while (codes := {service: stack.health_check(service) for service in unhealthy_meanwhile}) != dict.fromkeys(
            unhealthy_meanwhile, 1
        ):
            assert time.monotonic() < deadline, f"still healthy with {server} stopped: {codes}"
            await asyncio.sleep(0.5)
        stack.compose("start", server)
        await backlog.submit(jobs, 1000, f"{server} after")
        await backlog.wait_all_completed(stack)
    stack.wait_healthy()
    assert started_at(stack, APPS) == apps, "a service was restarted"


async def test_down_and_up_again_keeps_every_job(stack: Stack) -> None:
    token = await new_token(stack)
    backlog = Backlog()
    async with connect_jobs(stack.address("job-service"), token=token) as jobs:
        await backlog.submit(jobs, 20000, "volumes")
        await backlog.wait_until_some_done(stack)
    stack.compose("down")
    assert stack.ps() == []
    stack.compose("up", "--detach", "--wait")
    # The token from before `down` still works: the signing keys are in the `secrets` volume too.
    # (A new connection: the tests give the job service a port range, and the new container may
    # have taken another port of it.)
    async with connect_jobs(stack.address("job-service"), token=token) as jobs:
        await backlog.submit(jobs, 1000, "after up")
    await backlog.wait_all_completed(stack)

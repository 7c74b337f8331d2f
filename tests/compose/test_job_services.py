"""Two job-service replicas under compose, tested like the workers: both take work, one killed loses nothing.

The replicas are one scaled service (`--scale job-service=2`) with client-side round
robin: workers reach them by name (`JOB_SERVICE_ADDR=dns:///job-service:5002`, each
replica one address in Docker's DNS), and each replica has its own host port for
the API's clients. A replica added while the workers run gets their reports once
the job service ages their connections out (the suite sets MAX_CONNECTION_AGE_SECONDS=5).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from jobqueue.client import connect_jobs
from tests.compose.stack import Backlog, Stack, new_token

pytestmark = pytest.mark.timeout(1800)

#: Counted by the job service for each worker report that starts an attempt.
CLAIMS = "jobqueue_attempts_started_total"


async def test_two_job_services_both_serve_and_one_killed_loses_nothing(stack: Stack) -> None:
    # The second replica starts while the worker runs, connected to the first one only.
    assert len(stack.containers("worker-service")) == 1
    stack.compose("up", "--detach", "--wait", "--no-recreate", "--scale", "job-service=2")
    replicas = [c["ID"] for c in stack.containers("job-service")]
    assert len(replicas) == 2
    addresses = {stack.address("job-service", replica) for replica in (1, 2)}
    assert len(addresses) == 2, addresses
    before = {replica: stack.metric(replica, CLAIMS) for replica in replicas}

    token = await new_token(stack)
    async with connect_jobs(stack.address("job-service"), token=token) as first:
        # The same user through each replica: either one accepts any call.
        spread = Backlog()
        for address in sorted(addresses):
            async with connect_jobs(address, token=token) as jobs:
                await spread.submit(jobs, 10000, f"via {address}")
        await spread.wait_all_completed(stack)
        took = {replica[:12]: stack.metric(replica, CLAIMS) - before[replica] for replica in replicas}
        # The new replica gets reports only once the worker resolves the name again, when the job
        # service has aged its connection out.
        assert all(count > 0 for count in took.values()), f"a replica took no worker report: {took}"

        crash = Backlog()
        await crash.submit(first, 20000, "replica crash")
        await crash.wait_until_some_done(stack)
        victim = stack.inspect(replicas[0])
        restarts = int(victim["RestartCount"])
        # A crash: the replica's process dies by SIGKILL, with reports and claims in flight.
        os.kill(int(victim["State"]["Pid"]), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while int(stack.inspect(replicas[0])["RestartCount"]) == restarts:
            assert time.monotonic() < deadline, "the killed replica was not restarted"
            time.sleep(0.2)
        await crash.wait_all_completed(stack)

        draining = Backlog()
        await draining.submit(first, 20000, "replica stop")
        await draining.wait_until_some_done(stack)
        # Back to one replica while jobs are in flight: the stopped replica's
        # calls finish or fail over to the other, and nothing is lost.
        stack.compose("up", "--detach", "--wait", "--no-recreate", "--scale", "job-service=1")
        assert len(stack.containers("job-service")) == 1
        await draining.wait_all_completed(stack)
    stack.wait_healthy()

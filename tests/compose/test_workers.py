"""Workers under compose: `--scale` spreads the work, scaling down drains, a crashed worker is restarted.

Each test submits a backlog of its own user's jobs and checks, in PostgreSQL,
that every one of them ends COMPLETED with its own result: nothing lost, nothing
done wrong.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.compose.stack import Backlog, Stack, new_user

pytestmark = pytest.mark.timeout(1800)

COMPLETED = "jobqueue_worker_jobs_total"


async def test_five_workers_all_take_work_and_scaling_back_to_one_loses_nothing(stack: Stack) -> None:
    stack.compose("up", "--detach", "--wait", "--no-recreate", "--scale", "worker-service=5")
    workers = [c["ID"] for c in stack.containers("worker-service")]
    assert len(workers) == 5
    before = {worker: stack.metric(worker, COMPLETED) for worker in workers}

    async with await new_user(stack) as jobs:
        spread = Backlog()
        await spread.submit(jobs, 5000, "spread")
        await spread.wait_all_completed(stack)
        took = {worker[:12]: stack.metric(worker, COMPLETED) - before[worker] for worker in workers}
        assert all(count > 0 for count in took.values()), took
        assert sum(took.values()) >= 5000, took

        draining = Backlog()
        await draining.submit(jobs, 20000, "drain")
        await draining.wait_until_some_done(stack)
        # Compose stops four workers with SIGTERM: each finishes or hands back what it holds.
        stack.compose("up", "--detach", "--wait", "--no-recreate", "--scale", "worker-service=1")
        left = await draining.statuses(stack)
        assert len(stack.containers("worker-service")) == 1
        assert left["COMPLETED"] < len(draining.expected), f"nothing was in flight when scaling down: {left}"
        await draining.wait_all_completed(stack)


async def test_a_killed_worker_is_restarted_by_its_policy_and_nothing_is_lost(stack: Stack) -> None:
    [worker] = stack.containers("worker-service")
    state = stack.inspect(worker["ID"])
    restarts = int(state["RestartCount"])
    async with await new_user(stack) as jobs:
        backlog = Backlog()
        await backlog.submit(jobs, 20000, "crash")
        await backlog.wait_until_some_done(stack)
        # A crash, not an operator's stop: the worker process dies by SIGKILL (as the OOM killer does it).
        os.kill(int(state["State"]["Pid"]), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while int(stack.inspect(worker["ID"])["RestartCount"]) == restarts:
            assert time.monotonic() < deadline, "the killed worker was not restarted"
            time.sleep(0.2)
        await backlog.wait_all_completed(stack)
    stack.wait_healthy()

"""Every service serves Prometheus metrics on METRICS_PORT, and they count what really happened."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from jobqueue.client import JobQueueError, connect_auth, connect_jobs
from tests.support.metrics import Samples, scrape
from tests.support.processes import free_port
from tests.support.system import System


@pytest.fixture
def system_with_metrics(service_env: dict[str, str], tmp_path: Path, purge_queues: None) -> Iterator[System]:
    running = System(service_env, tmp_path)
    running.start_auth(METRICS_PORT=str(free_port()))
    running.start_jobs(METRICS_PORT=str(free_port()))
    running.start_worker(METRICS_PORT=str(free_port()))
    yield running
    codes = running.stop()
    assert all(code == 0 for code in codes.values()), f"not every service stopped cleanly: {codes}"


async def use_the_system(system: System) -> None:
    async with connect_auth(system.auth_address) as auth:
        await auth.register("ada@example.com", "correct horse battery", "Ada")
        with pytest.raises(JobQueueError):
            await auth.login("ada@example.com", "wrong password")
        token = await auth.login("ada@example.com", "correct horse battery")
    async with connect_jobs(system.job_address, token=token) as jobs:
        for text in ("abc", "xyz"):
            await jobs.submit_and_wait("reverse_string", text, timeout=30)
        await jobs.submit_and_wait("fibonacci_calc", 10, timeout=30)
        with pytest.raises(JobQueueError) as refused:
            await jobs.submit("fibonacci_calc", -1)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_each_service_counts_its_calls_and_jobs(system_with_metrics: System) -> None:
    system = system_with_metrics
    asyncio.run(use_the_system(system))
    assert system.auth is not None
    assert system.jobs is not None
    auth, jobs, worker = scrape(system.auth.env), scrape(system.jobs.env), scrape(system.workers[0].env)

    def calls(samples: Samples, method: str, code: str) -> float:
        service = "jobqueue.auth.v1.AuthService" if method in ("Register", "Login") else "jobqueue.jobs.v1.JobService"
        key = (("grpc_code", code), ("grpc_method", method), ("grpc_service", service))
        return samples.get(("grpc_server_handled_total", key), 0.0)

    assert calls(auth, "Register", "OK") == 1
    assert calls(auth, "Login", "OK") == 1
    assert calls(auth, "Login", "UNAUTHENTICATED") == 1
    assert calls(jobs, "CreateJob", "OK") == 3
    assert calls(jobs, "CreateJob", "INVALID_ARGUMENT") == 1
    assert jobs[("jobqueue_jobs_created_total", (("type", "reverse_string"),))] == 2
    assert jobs[("jobqueue_jobs_created_total", (("type", "fibonacci_calc"),))] == 1
    assert jobs[("jobqueue_attempts_started_total", (("type", "reverse_string"),))] == 2
    assert jobs[("jobqueue_job_outcomes_total", (("outcome", "completed"), ("type", "reverse_string")))] == 2
    assert jobs[("jobqueue_job_outcomes_total", (("outcome", "completed"), ("type", "fibonacci_calc")))] == 1
    assert jobs[("jobqueue_outbox_published_total", ())] == 3
    assert worker[("jobqueue_worker_jobs_total", (("outcome", "completed"), ("type", "reverse_string")))] == 2
    assert worker[("jobqueue_worker_handler_seconds_count", (("type", "fibonacci_calc"),))] == 1
    # The workers' claims and reports reached the job service as UpdateJobs calls, all accepted.
    assert calls(jobs, "UpdateJobs", "OK") >= 1
    assert not [key for key in jobs if key[0] == "grpc_server_handled_total" and ("grpc_code", "INTERNAL") in key[1]]

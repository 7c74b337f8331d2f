"""Every service serves Prometheus metrics on METRICS_PORT: counters count what really happened, gauges say what is."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from jobqueue.client import JobQueueError, connect_auth, connect_jobs
from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from jobqueue.runtime.rabbitmq import Topology
from jobqueue.worker.declare import to_proto
from tests.support import flaky_jobs
from tests.support.clients import mint_token, worker_metadata
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


#: Gauges refreshed five times a second, finished jobs included, and job types that fail.
GAUGE_ENV = {
    "JOB_COUNT_SECONDS": "0.2",
    "FINISHED_COUNT_SECONDS": "0.2",
    "WORKER_APP": "tests.support.flaky_jobs:worker",
}
STATUSES = ("QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")
#: The job types whose queues the test watches.
WATCHED = ("reverse_string", "always_fails")


def gauges(samples: Samples, queue: str) -> dict[str, float | None]:
    """The job service's gauges in one flat dict: jobs by status, then the queues' counts."""
    values = {status: samples.get(("jobqueue_jobs", (("status", status),))) for status in STATUSES}
    for name in (*(Topology(queue).job_queue(job_type) for job_type in WATCHED), f"{queue}.dead"):
        values[f"{name} ready"] = samples.get(("jobqueue_queue_messages_ready", (("queue", name),)))
        values[f"{name} consumers"] = samples.get(("jobqueue_queue_consumers", (("queue", name),)))
    return values


def database_counts(database_url: str) -> dict[str, float]:
    """Jobs by status, counted row by row: the truth the gauges must show."""

    async def count() -> dict[str, float]:
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
        finally:
            await connection.close()
        found = {row["status"]: float(row["n"]) for row in rows}
        return {status: found.get(status, 0.0) for status in STATUSES}

    return asyncio.run(count())


def settle(read: Callable[[], list[dict[str, float | None]]], want: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Wait until every replica's gauges (``read``) equal ``want``'s truth (both may still move); returns it."""
    deadline = time.monotonic() + 20
    while True:
        truth, seen = want(), read()
        if all(replica == truth for replica in seen) or time.monotonic() > deadline:
            assert seen == [truth] * len(seen)
            return truth
        time.sleep(0.2)


def test_gauges_match_the_database_and_the_broker_on_every_replica_and_after_a_restart(
    service_env: dict[str, str], tmp_path: Path, purge_queues: None, secrets_dir: Path
) -> None:
    system = System(service_env, tmp_path)
    token = mint_token(secrets_dir)
    queue = service_env["RABBITMQ_QUEUE"]
    ports = [free_port(), free_port()]
    try:
        system.start_jobs(METRICS_PORT=str(ports[0]), **GAUGE_ENV)
        system.start_another_job_service(METRICS_PORT=str(ports[1]), **GAUGE_ENV)
        before = database_counts(system.direct_database_url)  # jobs an earlier test of this module left

        def both_replicas() -> list[dict[str, float | None]]:
            # Each replica reports the same database- and broker-wide values (aggregate with max(), not sum()).
            return [gauges(scrape({"METRICS_PORT": str(port)}), queue) for port in ports]

        def expect(ready: tuple[int, int], consumers: int, dead: int) -> Callable[[], dict[str, float]]:
            """The truth, where the WATCHED types' queues hold ``ready`` messages and ``consumers`` consumers each."""

            def truth() -> dict[str, float]:
                counts: dict[str, float] = database_counts(system.direct_database_url)
                for job_type, waiting in zip(WATCHED, ready, strict=True):
                    counts[f"{Topology(queue).job_queue(job_type)} ready"] = waiting
                    counts[f"{Topology(queue).job_queue(job_type)} consumers"] = consumers
                return {**counts, f"{queue}.dead ready": dead, f"{queue}.dead consumers": 0}

            return truth

        # The test types are declared as their worker would declare them, but no worker consumes yet.
        with grpc.insecure_channel(system.job_address) as channel:
            declaration = [to_proto(job_type) for job_type in flaky_jobs.worker.types.values()]
            jobs_pb2_grpc.JobServiceStub(channel).DeclareJobTypes(
                jobs_pb2.DeclareJobTypesRequest(job_types=declaration), metadata=worker_metadata(secrets_dir)
            )

        async def submit_with_no_worker_yet() -> list[str]:
            async with connect_jobs(system.job_address, token=token) as jobs:
                ids = [(await jobs.submit("reverse_string", text)).id for text in ("a", "b", "c")]
                ids.append((await jobs.submit("always_fails", "x", max_attempts=1)).id)
                cancelled = await jobs.submit("reverse_string", "d")
                await jobs.cancel(cancelled.id)
                return ids

        ids = asyncio.run(submit_with_no_worker_yet())
        # Five messages published, each to its type's queue (the cancelled job's too: a worker drops it),
        # nobody consuming yet.
        waiting = settle(both_replicas, expect(ready=(4, 1), consumers=0, dead=0))
        assert waiting["QUEUED"] == before["QUEUED"] + 4
        assert waiting["CANCELLED"] == before["CANCELLED"] + 1

        system.start_worker(WORKER_APP=GAUGE_ENV["WORKER_APP"])

        async def wait_for_all() -> None:
            async with connect_jobs(system.job_address, token=token) as jobs:
                for job_id in ids:
                    await jobs.wait(job_id, timeout=30)

        asyncio.run(wait_for_all())
        # The failed job's message went to the dead-letter queue; the worker consumes each type's queue.
        done = settle(both_replicas, expect(ready=(0, 0), consumers=1, dead=1))
        assert (done["QUEUED"], done["RUNNING"]) == (0, 0)
        assert done["COMPLETED"] == before["COMPLETED"] + 3
        assert done["FAILED"] == before["FAILED"] + 1

        assert system.jobs is not None
        assert system.jobs.stop() == 0
        ports[0] = free_port()
        system.start_jobs(METRICS_PORT=str(ports[0]), **GAUGE_ENV)
        restarted = scrape({"METRICS_PORT": str(ports[0])})
        # The restarted process's counters start again from nothing; its gauges still tell the truth.
        assert not [key for key in restarted if key[0] == "jobqueue_job_outcomes_total"]
        assert settle(both_replicas, expect(ready=(0, 0), consumers=1, dead=1)) == done
    finally:
        codes = system.stop()
    assert all(code == 0 for code in codes.values()), f"not every service stopped cleanly: {codes}"

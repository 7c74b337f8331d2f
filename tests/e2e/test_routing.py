"""Routing: each job type has a queue of its own, so a pool of workers can serve a type alone (JOB_TYPES).

Real services and two worker pools, each a process of its own running the test app
(tests/support/flaky_jobs.py) with a different JOB_TYPES: a slow pool for ``sleeps``
(one handler process, so a few jobs saturate it) and a fast pool for
``reverse_string`` and ``uppercase_text``. Fast jobs complete promptly while the slow
pool is saturated, a worker never receives a type it does not serve, and moving
``sleeps`` to another pool (stop the one serving it, start one with it) completes
the jobs that waited.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from jobqueue.worker.declare import to_proto
from tests.support import flaky_jobs
from tests.support.clients import mint_token, worker_metadata
from tests.support.load import Spec, list_all, submit, wait_all_final
from tests.support.metrics import scrape
from tests.support.processes import ServiceProcess, free_port
from tests.support.queues import jobs_waiting
from tests.support.system import System

APP = "tests.support.flaky_jobs:worker"
FAST_TYPES = ("reverse_string", "uppercase_text")
#: Seconds each slow job sleeps: the slow pool, one at a time, is busy for SLOW_JOBS times this.
SLEEP_SECONDS = 6
SLOW_JOBS = 4
#: How long a fast job may take while the slow pool is saturated (it takes milliseconds when alone).
PROMPTLY_SECONDS = 10.0


def _fast_specs(count: int, tag: str) -> list[Spec]:
    return [Spec(FAST_TYPES[i % 2], f"{tag} {i}") for i in range(count)]


def _statuses(system: System, token: str, ids: set[str]) -> list[str]:
    jobs = asyncio.run(list_all(system.job_address, token))
    return sorted(jobs_pb2.JobStatus.Name(jobs[i].status) for i in ids)


def _types_run(worker: ServiceProcess) -> set[str]:
    """The job types a worker's metrics count deliveries of."""
    return {dict(labels)["type"] for (name, labels) in scrape(worker.env) if name == "jobqueue_worker_jobs_total"}


def _completed_within(system: System, token: str, specs: list[Spec], seconds: float) -> None:
    began = time.monotonic()
    ids = set(asyncio.run(submit(system.job_address, token, specs)))
    jobs = asyncio.run(wait_all_final(system.job_address, token, ids, timeout=seconds))
    assert {job.status for job in jobs.values()} == {jobs_pb2.JOB_STATUS_COMPLETED}
    assert time.monotonic() - began < seconds


def test_a_type_served_by_its_own_pool_never_delays_the_others_and_can_be_moved(
    system: System, secrets_dir: Path, rabbitmq_url: str, queue_name: str
) -> None:
    token = mint_token(secrets_dir)
    # ``sleeps`` known to the job service, as a pool serving it would have declared it, though none runs yet.
    with grpc.insecure_channel(system.job_address) as channel:
        jobs_pb2_grpc.JobServiceStub(channel).DeclareJobTypes(
            jobs_pb2.DeclareJobTypesRequest(job_types=[to_proto(flaky_jobs.worker.types["sleeps"])]),
            metadata=worker_metadata(secrets_dir),
        )
    fast = system.start_worker(WORKER_APP=APP, JOB_TYPES=",".join(FAST_TYPES), METRICS_PORT=str(free_port()))

    # Only the fast pool runs: the slow jobs wait in their queue, delivered to nobody, while fast jobs complete.
    slow = set(asyncio.run(submit(system.job_address, token, [Spec("sleeps", SLEEP_SECONDS)] * SLOW_JOBS)))
    _completed_within(system, token, _fast_specs(30, "alone"), PROMPTLY_SECONDS)
    assert _statuses(system, token, slow) == ["JOB_STATUS_QUEUED"] * SLOW_JOBS
    assert asyncio.run(jobs_waiting(rabbitmq_url, queue_name, ["sleeps"])) == SLOW_JOBS
    assert _types_run(fast) == set(FAST_TYPES)
    assert '"job_types": ["reverse_string", "uppercase_text"]' in fast.output()

    # The slow pool, saturated by them: one runs, the rest wait; fast jobs still complete promptly.
    slow_pool = system.start_worker(WORKER_APP=APP, JOB_TYPES="sleeps", SHUTDOWN_GRACE_SECONDS="1")
    deadline = time.monotonic() + 30
    while "JOB_STATUS_RUNNING" not in _statuses(system, token, slow):
        assert time.monotonic() < deadline, "the slow pool never started a slow job"
        time.sleep(0.1)
    _completed_within(system, token, _fast_specs(30, "busy"), PROMPTLY_SECONDS)
    assert _statuses(system, token, slow).count("JOB_STATUS_COMPLETED") < SLOW_JOBS - 1, "the slow pool was not busy"
    assert _types_run(fast) == set(FAST_TYPES)

    # Moving ``sleeps``: the pool serving it stops (handing back what it held), another starts with it.
    assert slow_pool.stop() == 0, slow_pool.output()
    left = [status for status in _statuses(system, token, slow) if status != "JOB_STATUS_COMPLETED"]
    assert left, "every slow job finished before the move; the move proves nothing"
    system.start_worker(WORKER_APP=APP, JOB_TYPES="sleeps,reverse_string", HANDLER_PROCESSES=str(SLOW_JOBS))
    jobs = asyncio.run(wait_all_final(system.job_address, token, slow, timeout=60))
    assert {job.status for job in jobs.values()} == {jobs_pb2.JOB_STATUS_COMPLETED}
    assert _types_run(fast) == set(FAST_TYPES)

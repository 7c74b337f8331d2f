"""The job service under fault: SIGTERM and SIGKILL while jobs are submitted and run, and two of them at once.

Each scenario runs 1,000 mixed jobs through the real processes and settles
(tests/faults/scenario.py): exactly one terminal state per job, the right
result, on its first attempt, none lost, none duplicated, none stuck.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import grpc

from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from tests.faults.scenario import JOBS, seconds, settle, start_workers
from tests.support.clients import bearer, mint_token
from tests.support.load import Spec, list_all, mixed, submit, wait_started
from tests.support.system import System


async def _submit_retrying(address: str, token: str, specs: list[Spec]) -> dict[str, Spec]:
    """CreateJob for each spec, retried with its request_id until accepted, as a careful client would."""
    accepted: dict[str, Spec] = {}
    refusals: Counter[grpc.StatusCode] = Counter()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        limit = asyncio.Semaphore(16)

        async def one(spec: Spec) -> None:
            request = jobs_pb2.CreateJobRequest(type=spec.type, payload=spec.value, request_id=str(uuid.uuid4()))
            async with limit:
                for _ in range(300):
                    try:
                        reply = await stub.CreateJob(request, metadata=bearer(token), timeout=5)
                    except grpc.aio.AioRpcError as error:
                        refusals[error.code()] += 1
                        await asyncio.sleep(0.2)
                        continue
                    accepted[reply.job.id] = spec
                    return

        await asyncio.gather(*(one(s) for s in specs))
    # A stopping service refuses new calls (UNAVAILABLE) or drops ones it had not started (CANCELLED);
    # a killed one's calls fail UNAVAILABLE. Either way the request_id makes the retry safe.
    assert set(refusals) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, refusals
    return accepted


def _load_while(system: System, token: str, fault: Literal["SIGTERM", "SIGKILL"]) -> None:
    """Submit the backlog with a retrying client, stop the job service by ``fault`` mid-load, restart it, settle."""
    start_workers(system, 2)
    assert system.jobs is not None
    stopping = system.jobs
    loader = ThreadPoolExecutor(1).submit(lambda: asyncio.run(_submit_retrying(system.job_address, token, mixed(JOBS))))
    wait_started(system.job_address, token, 100)
    if fault == "SIGTERM":
        assert stopping.stop() == 0, stopping.output()  # while CreateJob calls are in flight
    else:
        stopping.kill()
        time.sleep(2)  # workers meet a dead job service: their reports must wait, not get lost
    system.start_jobs()
    restarted_at = time.time()
    specs = loader.result(timeout=120)
    assert len(specs) == JOBS, "a retried CreateJob created a second job"
    label = "job service SIGTERM under load" if fault == "SIGTERM" else "job service SIGKILL, restart mid-load"
    # The relay publishes a batch, then deletes its outbox rows: a service stopped
    # in between publishes those messages again (at-least-once), and a copy that
    # finds its job RUNNING takes it over, a second attempt. Only a job created
    # before the restart can have such a copy.
    settle(
        system,
        token,
        specs,
        label,
        restarted_at,
        attempts=lambda job: (1, 2) if seconds(job.created_at) < restarted_at else (1,),
    )
    assert all(worker.process.poll() is None for worker in system.workers), "a worker died with the job service"


def test_job_service_sigterm_under_load_drains_and_loses_nothing(system: System, secrets_dir: Path) -> None:
    _load_while(system, mint_token(secrets_dir), "SIGTERM")


def test_job_service_killed_and_restarted_mid_load_loses_nothing(system: System, secrets_dir: Path) -> None:
    _load_while(system, mint_token(secrets_dir), "SIGKILL")


def test_two_job_services_share_the_database_and_the_queue(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    second = system.start_another_job_service()
    start_workers(system, 1)
    start_workers(system, 1, JOB_SERVICE_ADDR=second)  # each service takes reports, too
    began = time.time()

    async def both() -> dict[str, Spec]:
        half = JOBS // 2
        first, other = await asyncio.gather(
            submit(system.job_address, token, mixed(JOBS)[:half]), submit(second, token, mixed(JOBS)[half:])
        )
        return first | other

    specs = asyncio.run(both())
    jobs = settle(system, token, specs, "two job services", began)
    seen_by_second = asyncio.run(list_all(second, token))
    assert {i: seen_by_second[i] for i in specs} == jobs, "the two job services disagree"

"""Outages of 30 s: RabbitMQ cut while jobs are submitted and run, PostgreSQL cut while jobs are processed.

Each scenario runs 1,000 mixed jobs through the real processes, cuts a
dependency with a proxy the test owns, and checks every job reaches exactly one
terminal state with the right result: none lost, none duplicated, none stuck.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from tests.faults.conftest import FaultRow, record
from tests.support.clients import bearer, mint_token
from tests.support.load import FINAL, Spec, check_outcomes, list_all, mixed, submit, wait_started
from tests.support.processes import health_status
from tests.support.system import System

OUTAGE_SECONDS = 30
JOBS = 1000
NOT_SERVING = 2


def accepted_completions(system: System) -> Counter[str]:
    """How many COMPLETED reports the job service accepted per job, from the workers' DEBUG logs."""
    return Counter(
        entry["job_id"]
        for line in system.worker_logs().splitlines()
        if line.startswith("{") and (entry := json.loads(line)).get("msg") == "job completed"
    )


def settle(system: System, token: str, specs: dict[str, Spec], scenario: str, restored_at: float) -> None:
    """Wait for every job to be final, record the scenario's row, then check it."""
    deadline = time.monotonic() + 120
    while True:
        jobs = asyncio.run(list_all(system.job_address, token))
        pending = [i for i in specs if i not in jobs or jobs[i].status not in FINAL]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    recovered = time.monotonic() - restored_at
    completions = accepted_completions(system)
    row = FaultRow(
        scenario=scenario,
        jobs=len(specs),
        lost=sum(i not in jobs for i in specs),
        duplicated=sum(n > 1 for n in completions.values()),
        stuck=len(pending),
        recover_seconds=recovered,
    )
    record(row)
    assert (row.lost, row.duplicated, row.stuck) == (0, 0, 0), row
    check_outcomes({i: jobs[i] for i in specs}, specs)


def test_rabbitmq_cut_for_30_seconds_during_submits(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    for _ in range(2):
        system.start_worker(LOG_LEVEL="DEBUG")
    system.broker_proxy.cut()
    started = time.monotonic()
    specs = asyncio.run(submit(system.job_address, token, mixed(JOBS)))  # every CreateJob succeeds
    while health_status(system.job_address, "rabbitmq") != NOT_SERVING:
        time.sleep(0.1)
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))
    assert all(w.process.poll() is None for w in system.workers), "a worker died during the outage"
    system.broker_proxy.restore()
    settle(system, token, specs, "rabbitmq cut 30 s during submits", time.monotonic())


def test_postgresql_cut_for_30_seconds_during_processing(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(system.job_address, token, mixed(JOBS)))
    for _ in range(2):
        system.start_worker(LOG_LEVEL="DEBUG")
    wait_started(system.job_address, token, 100)
    system.database_proxy.cut()
    deadline = time.monotonic() + 15
    while health_status(system.job_address) != NOT_SERVING:
        assert time.monotonic() < deadline, "the job service never reported NOT_SERVING"
        time.sleep(0.1)
    time.sleep(OUTAGE_SECONDS)
    assert system.jobs is not None
    assert system.jobs.process.poll() is None, "the job service died during the outage"
    assert all(w.process.poll() is None for w in system.workers), "a worker died during the outage"
    system.database_proxy.restore()
    settle(system, token, specs, "postgresql cut 30 s during processing", time.monotonic())


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
    # either way the request_id makes the retry safe.
    assert set(refusals) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, refusals
    return accepted


def test_job_service_sigterm_under_load_drains_and_loses_nothing(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    for _ in range(2):
        system.start_worker(LOG_LEVEL="DEBUG")
    assert system.jobs is not None
    loader = ThreadPoolExecutor(1).submit(lambda: asyncio.run(_submit_retrying(system.job_address, token, mixed(JOBS))))
    wait_started(system.job_address, token, 100)
    assert system.jobs.stop() == 0, system.jobs.output()  # SIGTERM while CreateJob calls are in flight
    restarted_at = time.monotonic()
    system.start_jobs()
    specs = loader.result(timeout=120)
    assert len(specs) == JOBS  # one job per submission, however often it was retried
    settle(system, token, specs, "job service SIGTERM under load", restarted_at)

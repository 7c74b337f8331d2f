"""Outages of 30 s: RabbitMQ cut while jobs are submitted, PostgreSQL cut while jobs are processed.

Each scenario runs 1,000 mixed jobs through the real processes, cuts a
dependency with a proxy the test owns, and settles (tests/faults/scenario.py):
every job reaches exactly one terminal state with the right result, on its
first attempt, none lost, none duplicated, none stuck.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from jobqueue.jobs.v1 import jobs_pb2
from tests.faults.scenario import JOBS, settle, start_workers
from tests.support.clients import mint_token
from tests.support.load import list_all, mixed, submit, wait_started
from tests.support.processes import health_status
from tests.support.system import System

OUTAGE_SECONDS = 30
NOT_SERVING = 2


def test_rabbitmq_cut_for_30_seconds_during_submits(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    workers = start_workers(system, 2)
    system.broker_proxy.cut()
    started = time.monotonic()
    specs = asyncio.run(submit(system.job_address, token, mixed(JOBS)))  # every CreateJob succeeds
    while health_status(system.job_address, "rabbitmq") != NOT_SERVING:
        time.sleep(0.1)
    for worker in workers:
        address = worker.address
        while health_status(address) != NOT_SERVING:
            assert time.monotonic() - started < OUTAGE_SECONDS, f"a worker stayed SERVING without RabbitMQ: {address}"
            time.sleep(0.1)
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))
    assert all(w.process.poll() is None for w in system.workers), "a worker died during the outage"
    listed = asyncio.run(list_all(system.job_address, token))
    assert all(listed[i].status == jobs_pb2.JOB_STATUS_QUEUED for i in specs), "jobs ran without the broker"
    system.broker_proxy.restore()
    settle(system, token, specs, "rabbitmq cut 30 s during submits", time.time())


def test_postgresql_cut_for_30_seconds_during_processing(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(system.job_address, token, mixed(JOBS)))
    # Prefetch 10, not the default 100, so that the backlog outlasts the moment of the cut.
    start_workers(system, 2, PREFETCH_COUNT="10")
    started = wait_started(system.job_address, token, 100)
    system.database_proxy.cut()
    assert started < len(specs), "the backlog finished before the cut; the test proves nothing"
    deadline = time.monotonic() + 15
    while health_status(system.job_address) != NOT_SERVING:
        assert time.monotonic() < deadline, "the job service never reported NOT_SERVING"
        time.sleep(0.1)
    time.sleep(OUTAGE_SECONDS)
    assert system.jobs is not None
    assert system.jobs.process.poll() is None, "the job service died during the outage"
    assert all(w.process.poll() is None for w in system.workers), "a worker died during the outage"
    system.database_proxy.restore()
    settle(system, token, specs, "postgresql cut 30 s during processing", time.time())

"""Outages of 30 s: RabbitMQ cut while jobs are submitted and run, PostgreSQL cut while jobs are processed.

Each scenario runs 1,000 mixed jobs through the real processes, cuts a
dependency with a proxy the test owns, and checks every job reaches exactly one
terminal state with the right result: none lost, none duplicated, none stuck.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

from tests.faults.conftest import FaultRow, record
from tests.support.clients import mint_token
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

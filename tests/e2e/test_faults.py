"""Faults the issue names: a worker killed mid-backlog, and RabbitMQ cut off while jobs are submitted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from jobqueue.jobs.v1 import jobs_pb2
from tests.support.clients import mint_token
from tests.support.load import check_outcomes, list_all, mixed, submit, wait_all_final
from tests.support.system import System


def test_a_worker_killed_mid_backlog_loses_nothing(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(system.job_address, token, mixed(1200)))
    doomed = system.start_worker()
    system.start_worker()

    # Kill one worker while the backlog is being worked through, with messages in flight.
    deadline = time.monotonic() + 60
    while True:
        listed = asyncio.run(list_all(system.job_address, token)).values()
        done = sum(j.status != jobs_pb2.JOB_STATUS_QUEUED for j in listed)
        if done >= 200:
            break
        assert time.monotonic() < deadline, "workers made no progress"
        time.sleep(0.05)
    doomed.kill()
    assert done < len(specs), "the backlog finished before the kill; the test proves nothing"

    jobs = asyncio.run(wait_all_final(system.job_address, token, set(specs), timeout=180))
    check_outcomes(jobs, specs)
    assert all(job.attempts >= 1 for job in jobs.values())


def test_jobs_submitted_while_the_broker_is_cut_all_complete(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    system.start_worker()
    system.start_worker()
    system.broker_proxy.cut()
    try:
        specs = asyncio.run(submit(system.job_address, token, mixed(300)))  # every CreateJob succeeds
        time.sleep(1)
        stuck = asyncio.run(list_all(system.job_address, token))
        queued = [j for j in stuck.values() if j.status == jobs_pb2.JOB_STATUS_QUEUED]
        assert len(queued) == len(specs), "jobs ran while the broker was unreachable"
    finally:
        system.broker_proxy.restore()
    jobs = asyncio.run(wait_all_final(system.job_address, token, set(specs), timeout=120))
    check_outcomes(jobs, specs)

"""Workers under fault: SIGKILL and SIGTERM mid-backlog, a dropped broker connection, a hang, a handler process killed.

Each scenario runs 1,000 mixed jobs through the real processes and settles
(tests/faults/scenario.py). The retry policy decides the attempt counts: a job
a dead or hung worker held is run again (attempt 2), a job whose handler
process died is retried (attempt 2), every other job runs once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from jobqueue.jobs.v1 import jobs_pb2
from jobqueue.runtime.rabbitmq import HEARTBEAT_SECONDS
from tests.faults.scenario import JOBS, running, running_once_quiet, settle, start_workers
from tests.support.clients import mint_token
from tests.support.load import MIXED_TYPES, Spec, list_all, mixed, submit, wait_all_final, wait_started
from tests.support.processes import alive, children, handler_processes
from tests.support.queues import jobs_waiting
from tests.support.system import System

#: The PREFETCH_COUNT of a worker that is killed or stopped: the most messages it holds at once.
#: Smaller than the default (100), so that 1,000 jobs are a backlog that lasts until the kill.
PREFETCH = 10


def test_a_worker_killed_mid_backlog_loses_nothing(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(system.job_address, token, pool_bound(mixed(JOBS))))
    doomed, survivor = start_workers(system, 2, PREFETCH_COUNT=str(PREFETCH))

    # Kill one worker while the backlog is being worked through, with messages in flight.
    started = wait_started(system.job_address, token, 200)
    its_children = children(doomed.pid)
    [pool_process] = handler_processes(doomed.pid)
    # Its handler process is frozen first, so the kill is sure to find a claimed job unfinished
    # (the one the pool process holds) rather than, by chance, only claims still on the wire.
    os.kill(pool_process, signal.SIGSTOP)
    time.sleep(0.5)
    # The survivor is frozen for the kill, so the RUNNING jobs listed once the
    # claims already sent have landed are all the jobs the doomed worker held
    # (and the survivor's own few).
    os.kill(survivor.pid, signal.SIGSTOP)
    try:
        doomed.kill()
        held = running_once_quiet(system, token)
    finally:
        os.kill(survivor.pid, signal.SIGCONT)
    killed_at = time.time()
    assert started < len(specs), "the backlog finished before the kill; the test proves nothing"

    jobs = settle(
        system,
        token,
        specs,
        "worker SIGKILL mid-backlog",
        killed_at,
        attempts=dict.fromkeys(held, (1, 2)),
    )
    redelivered = [job for job in jobs.values() if job.attempts == 2]
    assert redelivered, "no job was redelivered: the kill hit no message in flight"
    assert len(redelivered) <= PREFETCH, "more jobs were run again than the killed worker could hold"
    assert not [pid for pid in its_children if alive(pid)], "the killed worker left its handler processes"


def test_a_worker_stopped_with_sigterm_mid_backlog_drains_and_exits_zero(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(system.job_address, token, mixed(JOBS)))
    [first] = start_workers(system, 1, PREFETCH_COUNT=str(PREFETCH))
    started = wait_started(system.job_address, token, 100)
    assert first.stop() == 0, first.output()
    stopped_at = time.time()
    assert started < len(specs), "the backlog finished before the stop; the test proves nothing"
    assert running(system, token) == set(), "a stopped worker left jobs RUNNING"
    start_workers(system, 1)
    settle(system, token, specs, "worker SIGTERM mid-backlog", stopped_at)


def test_a_worker_whose_broker_connection_drops_runs_no_job_twice(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(system.job_address, token, pool_bound(mixed(JOBS))))
    # One worker holds the whole backlog, most of it waiting for its pool process; a second,
    # idle, reaches RabbitMQ directly, so the cut below drops only the first one's connection.
    start_workers(system, 1, PREFETCH_COUNT=str(2 * JOBS))
    started = wait_started(system.job_address, token, 100)
    start_workers(system, 1, RABBITMQ_URL=system.direct_rabbitmq_url)
    unclaimed = unclaimed_deliveries(system, token)
    assert unclaimed >= 100, f"the holder had {unclaimed} unclaimed messages; the test proves little"
    # RabbitMQ hands the holder's messages to the idle worker at once, and the holder,
    # reconnected, gets the rest again behind the copies it still holds.
    system.broker_proxy.cut()
    system.broker_proxy.restore()
    dropped_at = time.time()
    assert started < len(specs), "the backlog finished before the cut; the test proves nothing"
    jobs = settle(system, token, specs, "rabbitmq drops a worker mid-backlog", dropped_at, attempts=lambda _: (1, 2))
    # A job the holder had claimed at the drop may be claimed again from its redelivered copy
    # while it still runs: the one in its pool process, and a claim it had on the wire. Any
    # other job runs once, because the holder drops the copies it held unclaimed instead of
    # claiming them while their redelivered twins run on the other worker.
    twice = [job.type for job in jobs.values() if job.attempts == 2]
    assert len(twice) <= 2, f"{len(twice)} jobs ran twice: {twice[:10]}"


def pool_bound(specs: list[Spec]) -> list[Spec]:
    """``specs`` with each Fibonacci number too large to compute inline, so it waits for a pool process."""
    return [
        Spec("fibonacci_calc", 90_000 + i) if spec.type == "fibonacci_calc" else spec for i, spec in enumerate(specs)
    ]


def test_a_hung_worker_does_not_keep_its_jobs_running(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    # Fibonacci numbers too large to compute inline, so the hung worker holds messages waiting for
    # its pool process; a short timeout, so its claims expire (timeout + LEASE_GRACE_SECONDS) in seconds.
    specs = asyncio.run(submit(system.job_address, token, pool_bound(mixed(JOBS)), timeout_seconds=2))
    [hung] = start_workers(system, 1)
    wait_started(system.job_address, token, 20)
    # Its one pool process runs a job at a time: a stop that lands between two jobs finds it holding
    # no claim, which would prove nothing. Then it is continued and stopped again, a moment later.
    for _ in range(20):
        os.kill(hung.pid, signal.SIGSTOP)
        hung_at = time.time()
        held = running_once_quiet(system, token)
        if held:
            break
        os.kill(hung.pid, signal.SIGCONT)
        time.sleep(0.2)
    try:
        assert held, "the hung worker held no RUNNING job; the test proves nothing"
        assert unclaimed_deliveries(system, token) > 0, "the hung worker held no unclaimed message; proves nothing"
        start_workers(system, 1)
        # While the first worker is still hung the whole backlog finishes elsewhere: its RUNNING
        # jobs are taken back once their claims expire, and the messages it held unclaimed (waiting
        # for its pool process) once RabbitMQ drops its silent connection. RabbitMQ's own heartbeat
        # (60 s) would take too long; the services ask for HEARTBEAT_SECONDS.
        finished = asyncio.run(wait_all_final(system.job_address, token, set(specs), timeout=4 * HEARTBEAT_SECONDS))
        taken_back = [finished[job_id] for job_id in held]
        summary = sorted((jobs_pb2.JobStatus.Name(j.status), j.attempts, j.error[:60]) for j in taken_back)
        assert all(j.status == jobs_pb2.JOB_STATUS_COMPLETED for j in taken_back), summary
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    settle(
        system,
        token,
        specs,
        "worker SIGSTOP, SIGCONT after its jobs moved",
        hung_at,  # the jobs must recover while the worker is still hung
        attempts=dict.fromkeys(held, (2,)),
    )
    assert hung.process.poll() is None, "the hung worker died of being continued"
    assert hung.stop() == 0, hung.output()[-3000:]


def unclaimed_deliveries(system: System, token: str) -> int:
    """How many QUEUED jobs have their message delivered, not ready: held by a worker that has not claimed them.

    For a moment when every job is published and no retry is due.
    """
    jobs = asyncio.run(list_all(system.job_address, token))
    queued = sum(job.status == jobs_pb2.JOB_STATUS_QUEUED for job in jobs.values())
    waiting = jobs_waiting(system.env["RABBITMQ_URL"], system.env["RABBITMQ_QUEUE"], MIXED_TYPES)
    return queued - asyncio.run(waiting)


def test_a_handler_process_that_dies_mid_job_gets_the_job_retried(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    # Large Fibonacci numbers keep the handler process busy, so the kill finds jobs in it.
    backlog = [
        Spec("fibonacci_calc", 60_000 + i) if spec.type == "fibonacci_calc" else spec
        for i, spec in enumerate(mixed(JOBS))
    ]
    specs = asyncio.run(submit(system.job_address, token, backlog))
    [worker] = start_workers(system, 1, PREFETCH_COUNT="20")
    wait_started(system.job_address, token, 10)
    [pool_process] = handler_processes(worker.pid)
    os.kill(pool_process, signal.SIGKILL)  # as the OOM killer would
    killed_at = time.time()
    in_the_pool = {job_id for job_id, spec in specs.items() if spec.type == "fibonacci_calc"}
    jobs = settle(
        system,
        token,
        specs,
        "handler process SIGKILL mid-job",
        killed_at,
        # Only CPU-heavy jobs run in the pool; each one there when it died fails once, retryably.
        attempts=dict.fromkeys(in_the_pool, (1, 2)),
    )
    retried = [job for job in jobs.values() if job.attempts == 2]
    assert retried, "no job was running in the killed handler process"
    assert len(retried) <= 20, "more jobs were retried than the worker could hold"
    assert worker.process.poll() is None

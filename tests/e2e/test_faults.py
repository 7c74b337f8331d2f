"""Faults the issue names: a worker killed mid-backlog, and RabbitMQ cut off while jobs are submitted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aio_pika

from jobqueue.jobs.v1 import jobs_pb2
from tests.support.clients import mint_token
from tests.support.load import Spec, check_outcomes, list_all, mixed, submit, wait_all_final, wait_started
from tests.support.processes import alive, children
from tests.support.queues import publish_raw, queue_depth
from tests.support.system import System


def log_entries(text: str) -> list[dict[str, Any]]:
    """The JSON log lines in a service's output."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_worker_killed_mid_backlog_loses_nothing(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(system.job_address, token, mixed(1200)))
    # DEBUG logs a line for each COMPLETED report the job service accepted.
    doomed = system.start_worker(LOG_LEVEL="DEBUG")
    system.start_worker(LOG_LEVEL="DEBUG")

    # Kill one worker while the backlog is being worked through, with messages in flight.
    started = wait_started(system.job_address, token, 200)
    handler_processes = children(doomed.pid)
    assert handler_processes, "the worker has no handler process"
    doomed.kill()
    assert started < len(specs), "the backlog finished before the kill; the test proves nothing"

    jobs = asyncio.run(wait_all_final(system.job_address, token, set(specs), timeout=180))
    check_outcomes(jobs, specs)
    assert all(job.attempts >= 1 for job in jobs.values())
    assert not [pid for pid in handler_processes if alive(pid)], "the killed worker left its handler processes"
    # Exactly once: no job had two COMPLETED reports accepted. (A job the killed
    # worker completed just before dying may have no log line; its status says it.)
    accepted = Counter(
        entry["job_id"] for entry in log_entries(system.worker_logs()) if entry.get("msg") == "job completed"
    )
    assert max(accepted.values()) == 1
    assert set(accepted) <= set(specs)
    assert len(accepted) >= len(specs) - 10  # at most the killed worker's prefetch went unlogged
    redelivered = [job for job in jobs.values() if job.attempts > 1]
    assert redelivered, "no job was redelivered: the kill hit no message in flight"


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


def test_malformed_messages_are_dead_lettered_and_never_block_a_worker(
    system: System, secrets_dir: Path, rabbitmq_url: str, queue_name: str
) -> None:
    token = mint_token(secrets_dir)
    worker = system.start_worker(PREFETCH_COUNT="1")
    garbage = [b"", b"\xff\x00 not protobuf", b"\x0a\x03abc", b'{"type": "reverse_string", "payload": "json"}']
    asyncio.run(publish_raw(rabbitmq_url, queue_name, garbage))
    specs = asyncio.run(submit(system.job_address, token, mixed(30)))
    jobs = asyncio.run(wait_all_final(system.job_address, token, set(specs), timeout=60))
    check_outcomes(jobs, specs)
    assert asyncio.run(queue_depth(rabbitmq_url, f"{queue_name}.dead")) == len(garbage)
    assert worker.process.poll() is None
    assert sum(e.get("msg") == "malformed message dead-lettered" for e in log_entries(worker.output())) == len(garbage)


def test_a_worker_stopped_with_sigterm_mid_backlog_drains_and_exits_zero(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(system.job_address, token, mixed(600)))
    first = system.start_worker()
    wait_started(system.job_address, token, 100)
    assert first.stop() == 0, first.output()
    running = [
        j for j in asyncio.run(list_all(system.job_address, token)).values() if j.status == jobs_pb2.JOB_STATUS_RUNNING
    ]
    assert running == [], "a stopped worker left jobs RUNNING"
    system.start_worker()
    jobs = asyncio.run(wait_all_final(system.job_address, token, set(specs), timeout=120))
    check_outcomes(jobs, specs)


def test_two_job_services_share_the_database_and_the_queue(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    second = system.start_another_job_service()
    system.start_worker()
    system.start_worker()
    specs = asyncio.run(submit(system.job_address, token, mixed(300)))
    specs.update(asyncio.run(submit(second, token, mixed(300))))
    jobs = asyncio.run(wait_all_final(second, token, set(specs), timeout=120))
    check_outcomes(jobs, specs)


def test_the_job_service_killed_and_restarted_mid_load_loses_nothing(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(system.job_address, token, mixed(1000)))
    system.start_worker()
    system.start_worker()
    wait_started(system.job_address, token, 150)
    assert system.jobs is not None
    system.jobs.kill()
    time.sleep(2)  # workers meet a dead job service: their reports must wait, not get lost
    system.start_jobs()
    jobs = asyncio.run(wait_all_final(system.job_address, token, set(specs), timeout=180))
    check_outcomes(jobs, specs)
    assert all(worker.process.poll() is None for worker in system.workers)


async def _duplicate_queue(url: str, queue: str, copies: int) -> int:
    """Take every message off ``queue`` and put ``copies`` of each back; returns how many were taken."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue)
        bodies = []
        while (message := await source.get(fail=False)) is not None:
            bodies.append(message.body)
            await message.ack()
        for body in bodies * copies:
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
        return len(bodies)


def test_duplicate_deliveries_have_exactly_one_outcome(
    system: System, secrets_dir: Path, rabbitmq_url: str, queue_name: str
) -> None:
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(system.job_address, token, mixed(60)))
    deadline = time.monotonic() + 30
    while asyncio.run(queue_depth(rabbitmq_url, queue_name)) < len(specs):
        assert time.monotonic() < deadline, "the outbox was not published"
        time.sleep(0.1)
    assert asyncio.run(_duplicate_queue(rabbitmq_url, queue_name, copies=3)) == len(specs)
    system.start_worker(LOG_LEVEL="DEBUG")
    system.start_worker(LOG_LEVEL="DEBUG")
    jobs = asyncio.run(wait_all_final(system.job_address, token, set(specs), timeout=60))
    check_outcomes(jobs, specs)
    deadline = time.monotonic() + 30
    while asyncio.run(queue_depth(rabbitmq_url, queue_name)) > 0:  # every copy consumed and settled
        assert time.monotonic() < deadline, "duplicate copies were left in the queue"
        time.sleep(0.1)
    completed = Counter(e["job_id"] for e in log_entries(system.worker_logs()) if e.get("msg") == "job completed")
    assert completed == Counter(dict.fromkeys(specs, 1)), "a job had more than one accepted outcome"


def _handler_processes(worker_pid: int) -> list[int]:
    """The worker's process-pool children that run handlers (not multiprocessing's resource tracker)."""
    return [pid for pid in children(worker_pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_a_handler_process_that_dies_mid_job_gets_the_job_retried(
    system: System, secrets_dir: Path, rabbitmq_url: str, queue_name: str
) -> None:
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(system.job_address, token, [Spec("fibonacci_calc", 60_000 + i) for i in range(150)]))
    worker = system.start_worker(PREFETCH_COUNT="20")
    wait_started(system.job_address, token, 10)
    [pool_process] = _handler_processes(worker.pid)
    os.kill(pool_process, signal.SIGKILL)  # as the OOM killer would
    jobs = asyncio.run(wait_all_final(system.job_address, token, set(specs), timeout=120))
    check_outcomes(jobs, specs)
    retried = [job for job in jobs.values() if job.attempts == 2]
    assert retried, "no job was running in the killed handler process"
    assert all(not job.HasField("error") for job in retried)
    assert worker.process.poll() is None
    assert asyncio.run(queue_depth(rabbitmq_url, f"{queue_name}.dead")) == 0


def test_a_hung_worker_does_not_keep_its_jobs_running(system: System, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    slow = [Spec("fibonacci_calc", 50_000 + i) for i in range(200)]
    specs = asyncio.run(submit(system.job_address, token, slow, timeout_seconds=2))
    hung = system.start_worker(PREFETCH_COUNT="10")
    wait_started(system.job_address, token, 20)
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        time.sleep(0.5)  # reports already on the wire when it stopped land first
        listed = asyncio.run(list_all(system.job_address, token))
        held = {job_id for job_id, job in listed.items() if job.status == jobs_pb2.JOB_STATUS_RUNNING}
        assert held, "the hung worker held no RUNNING job; the test proves nothing"
        system.start_worker()
        # While the first worker is still hung, its RUNNING jobs are taken back and finished elsewhere.
        jobs = asyncio.run(wait_all_final(system.job_address, token, held, timeout=60))
        summary = sorted((jobs_pb2.JobStatus.Name(j.status), j.attempts, j.error[:60]) for j in jobs.values())
        assert all(job.status == jobs_pb2.JOB_STATUS_COMPLETED and job.attempts >= 2 for job in jobs.values()), summary
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    jobs = asyncio.run(wait_all_final(system.job_address, token, set(specs), timeout=120))
    check_outcomes(jobs, specs)
    assert hung.process.poll() is None

"""A running job that is cancelled, or runs past its timeout, is stopped in the worker: its handler process is
killed and replaced, and the worker goes on at once with the next job.

The test job type ``sleeps`` (tests/support/flaky_jobs.py) runs in a handler process and sleeps as long
as its payload says; the worker here has one handler process, so a handler left running would hold up
every later job for that long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from tests.support.clients import bearer, mint_token
from tests.support.load import decimal, fibonacci, wait_all_final
from tests.support.processes import ServiceProcess, alive, handler_processes
from tests.support.system import System

#: Far longer than the test's patience: a handler that is not stopped is still asleep when the test ends.
ASLEEP = 3600
#: Large enough to run in the handler process, not inline.
N = 30_000

Stub = jobs_pb2_grpc.JobServiceStub


@pytest.fixture
def service_env(service_env: dict[str, str]) -> dict[str, str]:
    """The session's service environment, with workers running the test job types (``sleeps``)."""
    return {**service_env, "WORKER_APP": "tests.support.flaky_jobs:worker"}


@pytest.fixture
def stub(system: System) -> Iterator[jobs_pb2_grpc.JobServiceStub]:
    with grpc.insecure_channel(system.job_address) as channel:
        yield jobs_pb2_grpc.JobServiceStub(channel)


def _create(
    stub: Stub, token: str, job_type: str, value: struct_pb2.Value, *, timeout_seconds: int = 0, max_attempts: int = 0
) -> jobs_pb2.Job:
    request = jobs_pb2.CreateJobRequest(
        type=job_type, payload=value, timeout_seconds=timeout_seconds, max_attempts=max_attempts
    )
    return stub.CreateJob(request, metadata=bearer(token)).job


def _get(stub: Stub, token: str, job_id: str) -> jobs_pb2.Job:
    return stub.GetJob(jobs_pb2.GetJobRequest(id=job_id), metadata=bearer(token)).job


def _wait_running(stub: Stub, token: str, job_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _get(stub, token, job_id).status != jobs_pb2.JOB_STATUS_RUNNING:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"handler process {pid} still runs: the handler was not stopped"
        time.sleep(0.1)


def _the_next_job_runs(system: System, stub: Stub, token: str) -> None:
    """A job for the handler process, submitted now, completes with the right result."""
    job = _create(stub, token, "fibonacci_calc", struct_pb2.Value(number_value=N))
    [done] = asyncio.run(wait_all_final(system.job_address, token, {job.id}, timeout=60)).values()
    assert (done.status, done.result) == (jobs_pb2.JOB_STATUS_COMPLETED, decimal(fibonacci(N)))


def _one_worker(system: System) -> tuple[ServiceProcess, int]:
    worker = system.start_worker(HANDLER_PROCESSES="1")
    deadline = time.monotonic() + 30
    while not (found := handler_processes(worker.pid)):
        assert time.monotonic() < deadline, "the worker started no handler process"
        time.sleep(0.1)
    [pid] = found
    return worker, pid


def test_cancelling_a_running_job_stops_its_handler(system: System, stub: Stub, secrets_dir: Path) -> None:
    token = mint_token(secrets_dir)
    worker, handler = _one_worker(system)
    job = _create(stub, token, "sleeps", struct_pb2.Value(number_value=ASLEEP))
    _wait_running(stub, token, job.id)

    cancelled = stub.CancelJob(jobs_pb2.CancelJobRequest(id=job.id), metadata=bearer(token)).job
    assert cancelled.status == jobs_pb2.JOB_STATUS_CANCELLED
    _wait_gone(handler)
    _the_next_job_runs(system, stub, token)

    final = _get(stub, token, job.id)
    assert (final.status, final.attempts, final.result) == (jobs_pb2.JOB_STATUS_CANCELLED, 1, "")
    assert "job cancelled while running; handler stopped" in worker.output()
    assert worker.process.poll() is None


def test_a_job_past_its_timeout_is_stopped_and_retried_until_its_attempts_run_out(
    system: System, stub: Stub, secrets_dir: Path
) -> None:
    token = mint_token(secrets_dir)
    worker, handler = _one_worker(system)
    job = _create(stub, token, "sleeps", struct_pb2.Value(number_value=ASLEEP), timeout_seconds=1, max_attempts=2)
    [final] = asyncio.run(wait_all_final(system.job_address, token, {job.id}, timeout=60)).values()
    assert (final.status, final.attempts) == (jobs_pb2.JOB_STATUS_FAILED, 2)
    assert "timed out after 1 s" in final.error
    _wait_gone(handler)
    _the_next_job_runs(system, stub, token)
    assert worker.output().count("job timed out; handler stopped") == 2
    assert worker.process.poll() is None

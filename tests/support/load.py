"""Submitting a backlog of mixed jobs and waiting for every one of them to finish."""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from dataclasses import dataclass

import grpc
from google.protobuf import struct_pb2

from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from tests.support.clients import bearer

FINAL = {jobs_pb2.JOB_STATUS_COMPLETED, jobs_pb2.JOB_STATUS_FAILED, jobs_pb2.JOB_STATUS_CANCELLED}


@functools.cache
def fibonacci(n: int) -> int:
    """F(n) by the textbook doubling identities (kept independent of the worker's code)."""
    if n <= 2:
        return (0, 1, 1)[n]
    half = fibonacci(n // 2)
    next_half = fibonacci(n // 2 + 1)
    if n % 2 == 0:
        return half * (2 * next_half - half)
    return half * half + next_half * next_half


def decimal(n: int) -> str:
    """All the digits of ``n``, past Python's default int-to-str limit."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return str(n)
    finally:
        sys.set_int_max_str_digits(limit)


@dataclass(frozen=True)
class Spec:
    """One job to submit and the result it must end with."""

    type: str
    payload: str | float

    @property
    def value(self) -> struct_pb2.Value:
        if isinstance(self.payload, str):
            return struct_pb2.Value(string_value=self.payload)
        return struct_pb2.Value(number_value=self.payload)

    @property
    def expected(self) -> str:
        if self.type == "sleeps":  # tests/support/flaky_jobs.py
            return f"slept {float(self.payload):g} s"
        if self.type == "reverse_string":
            return str(self.payload)[::-1]
        if self.type == "uppercase_text":
            return str(self.payload).upper()
        return decimal(fibonacci(int(self.payload)))


#: The job types mixed() cycles through.
MIXED_TYPES = ("reverse_string", "uppercase_text", "fibonacci_calc")


def mixed(count: int) -> list[Spec]:
    """``count`` jobs cycling through the three MIXED_TYPES."""
    specs = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            specs.append(Spec("reverse_string", f"job number {i} ünïcode"))
        elif kind == 1:
            specs.append(Spec("uppercase_text", f"job number {i} straße"))
        else:
            specs.append(Spec("fibonacci_calc", i % 300))
    return specs


async def submit(
    address: str,
    token: str,
    specs: list[Spec],
    concurrency: int = 32,
    timeout_seconds: int = 0,
    *,
    max_attempts: int = 0,
) -> dict[str, Spec]:
    """CreateJob for every spec (a limit of 0: the service's default); returns job id -> spec. All must succeed."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        limit = asyncio.Semaphore(concurrency)

        async def one(spec: Spec) -> tuple[str, Spec]:
            async with limit:
                reply = await stub.CreateJob(
                    jobs_pb2.CreateJobRequest(
                        type=spec.type, payload=spec.value, timeout_seconds=timeout_seconds, max_attempts=max_attempts
                    ),
                    metadata=bearer(token),
                    timeout=10,
                )
                return reply.job.id, spec

        return dict(await asyncio.gather(*(one(s) for s in specs)))


async def list_all(address: str, token: str) -> dict[str, jobs_pb2.Job]:
    """Every job of the token's user, by id."""
    jobs: dict[str, jobs_pb2.Job] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        page_token = ""
        while True:
            page = await stub.ListJobs(
                jobs_pb2.ListJobsRequest(page_size=500, page_token=page_token), metadata=bearer(token), timeout=10
            )
            jobs.update((j.id, j) for j in page.jobs)
            page_token = page.next_page_token
            if not page_token:
                return jobs


async def wait_all_final(address: str, token: str, ids: set[str], timeout: float) -> dict[str, jobs_pb2.Job]:
    """Poll until every job in ``ids`` is final; returns them (raises AssertionError on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = await list_all(address, token)
        pending = [i for i in ids if i not in jobs or jobs[i].status not in FINAL]
        if not pending:
            return {i: jobs[i] for i in ids}
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(pending)} of {len(ids)} jobs not final after {timeout} s, e.g. {pending[:3]}")
        await asyncio.sleep(0.5)


def check_outcomes(jobs: dict[str, jobs_pb2.Job], specs: dict[str, Spec]) -> None:
    """Every job COMPLETED with exactly the result its spec promises."""
    wrong = [
        (job_id, jobs_pb2.JobStatus.Name(job.status), job.result[:40], job.error[:80])
        for job_id, job in jobs.items()
        if job.status != jobs_pb2.JOB_STATUS_COMPLETED or job.result != specs[job_id].expected
    ]
    assert not wrong, f"{len(wrong)} jobs wrong, e.g. {wrong[:3]}"


def wait_started(address: str, token: str, count: int, timeout: float = 60) -> int:
    """Wait until at least ``count`` of the token's jobs have left QUEUED; returns how many have."""
    deadline = time.monotonic() + timeout
    while True:
        listed = asyncio.run(list_all(address, token)).values()
        started = sum(j.status != jobs_pb2.JOB_STATUS_QUEUED for j in listed)
        if started >= count:
            return started
        assert time.monotonic() < deadline, "workers made no progress"
        time.sleep(0.05)

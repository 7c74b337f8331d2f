"""Priorities: a worker takes the most urgent waiting job first, whatever the order of submission."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
from google.protobuf import struct_pb2

from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from tests.support.clients import bearer, mint_token
from tests.support.load import wait_all_final
from tests.support.queues import jobs_waiting
from tests.support.system import System


async def _submit(address: str, token: str, count: int, priority: jobs_pb2.JobPriority.ValueType) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        replies = [
            await stub.CreateJob(
                jobs_pb2.CreateJobRequest(
                    type="uppercase_text", payload=struct_pb2.Value(string_value=f"job {i}"), priority=priority
                ),
                metadata=bearer(token),
            )
            for i in range(count)
        ]
        return [reply.job.id for reply in replies]


def test_a_high_priority_job_starts_before_a_thousand_queued_normal_ones(
    system: System, secrets_dir: Path, rabbitmq_url: str, queue_name: str
) -> None:
    token = mint_token(secrets_dir)
    [low] = asyncio.run(_submit(system.job_address, token, 1, jobs_pb2.JOB_PRIORITY_LOW))
    normal = asyncio.run(_submit(system.job_address, token, 1000, jobs_pb2.JOB_PRIORITY_UNSPECIFIED))
    [high] = asyncio.run(_submit(system.job_address, token, 1, jobs_pb2.JOB_PRIORITY_HIGH))
    deadline = time.monotonic() + 30
    while asyncio.run(jobs_waiting(rabbitmq_url, queue_name, ["uppercase_text"])) < 1002:  # all published, none taken
        assert time.monotonic() < deadline, "the outbox was not published"
        time.sleep(0.1)

    system.start_worker(PREFETCH_COUNT="1")
    jobs = asyncio.run(wait_all_final(system.job_address, token, {low, high, *normal}, timeout=120))
    assert all(job.status == jobs_pb2.JOB_STATUS_COMPLETED for job in jobs.values())
    started = {job_id: job.started_at.ToDatetime() for job_id, job in jobs.items()}
    assert started[high] < min(started[n] for n in normal), "the high-priority job waited behind normal ones"
    assert started[low] > max(started[n] for n in normal), "the low-priority job ran before normal ones"

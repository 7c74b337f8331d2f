"""A burst of calls far beyond what the job service handles at once: each gets an answer, none is dropped.

gRPC's core cancels calls at random (status CANCELLED, which says nothing useful and looks like the
client's own doing) once more than 1,000 wait for the application to take them; gen/jobqueue/runtime/server.py
raises that backlog and caps the calls in progress instead, so a burst is served or refused with
RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import grpc

from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from tests.integration.jobservice import JobService, text
from tests.support.clients import bearer, mint_token
from tests.support.load import list_all

BURST = 3000


async def burst(address: str, token: str) -> tuple[Counter[str], set[str]]:
    codes: Counter[str] = Counter()
    created: set[str] = set()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)

        async def create(i: int) -> None:
            request = jobs_pb2.CreateJobRequest(type="reverse_string", payload=text(f"burst {i}"))
            try:
                reply = await stub.CreateJob(request, metadata=bearer(token), timeout=120)
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] += 1
            else:
                codes["OK"] += 1
                created.add(reply.job.id)

        await asyncio.gather(*(create(i) for i in range(BURST)))
    return codes, created


def test_a_burst_of_concurrent_calls_is_served_or_refused_never_cancelled(jobs: JobService, secrets_dir: Path) -> None:
    owner = uuid.uuid4()
    token = mint_token(secrets_dir, owner)

    codes, created = asyncio.run(burst(jobs.address, token))

    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert codes["OK"] >= BURST // 2, codes  # the cap refuses only what exceeds it, not the burst
    assert len(created) == codes["OK"]
    # Every job answered OK is stored, and no refused call stored one: the owner's jobs are exactly those.
    stored = asyncio.run(list_all(jobs.address, token))
    assert set(stored) == created, (len(stored), len(created))

"""A flood of jobs from one user is refused before the database; the cap on unfinished jobs holds across replicas.

The job services here run with the per-user limits' defaults (read from job_svc/settings.py) or with
values of the test's own; every other test lifts them (tests/conftest.py). Each refusal must be
RESOURCE_EXHAUSTED with an ErrorInfo reason and a RetryInfo, counted in jobqueue_limit_refusals_total,
and must write nothing; meanwhile another user's calls are answered as usual. Users are tokens
minted with the dev key, so auth's own limits play no part.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import asyncpg
import grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from job_svc.limits import UNFINISHED_RETRY_SECONDS
from job_svc.settings import Settings
from jobqueue.client import JobPriority, JobStatus, connect_jobs
from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from jobqueue.runtime.settings import env_name
from tests.conftest import UNLIMITED_JOBS
from tests.support.clients import bearer, error_info, mint_token
from tests.support.metrics import scrape
from tests.support.processes import free_port
from tests.support.system import System

#: The defaults of the job limits the other tests lift, by variable.
DEFAULTS = {env_name(f): str(f.default) for f in dataclasses.fields(Settings) if env_name(f) in UNLIMITED_JOBS}


Priority: TypeAlias = jobs_pb2.JobPriority.ValueType
Message: TypeAlias = jobs_pb2.CreateJobRequest | jobs_pb2.BatchCreateJobsRequest


def request(priority: Priority = jobs_pb2.JOB_PRIORITY_UNSPECIFIED) -> jobs_pb2.CreateJobRequest:
    return jobs_pb2.CreateJobRequest(
        type="reverse_string",
        payload=struct_pb2.Value(string_value="flood"),
        request_id=str(uuid.uuid4()),
        priority=priority,
    )


def batch(size: int, priority: Priority = jobs_pb2.JOB_PRIORITY_UNSPECIFIED) -> jobs_pb2.BatchCreateJobsRequest:
    return jobs_pb2.BatchCreateJobsRequest(requests=[request(priority) for _ in range(size)])


def retry_after(error: grpc.RpcError) -> float | None:
    """The RetryInfo delay of a failed call, in seconds; None without one."""
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToNanoseconds() / 1e9)
    return None


@dataclasses.dataclass
class Outcomes:
    """What a set of calls got: jobs stored, refusals by reason, their RetryInfo delays, each call's seconds."""

    stored: int = 0
    refused: Counter[str] = dataclasses.field(default_factory=Counter)
    delays: list[float] = dataclasses.field(default_factory=list)
    refusal_seconds: list[float] = dataclasses.field(default_factory=list)
    refused_jobs: int = 0
    codes: Counter[grpc.StatusCode] = dataclasses.field(default_factory=Counter)

    def check_refusals(self) -> None:
        """Every refusal was RESOURCE_EXHAUSTED with a RetryInfo (a refusal without one counts -1 s)."""
        assert set(self.codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}, self.codes
        assert all(delay > 0 for delay in self.delays), "a refusal without a RetryInfo"

    async def call(self, stub: jobs_pb2_grpc.JobServiceAsyncStub, token: str, message: Message) -> None:
        started = time.monotonic()
        try:
            if isinstance(message, jobs_pb2.BatchCreateJobsRequest):
                stored = len((await stub.BatchCreateJobs(message, metadata=bearer(token), timeout=60)).jobs)
            else:
                await stub.CreateJob(message, metadata=bearer(token), timeout=60)
                stored = 1
        except grpc.aio.AioRpcError as error:
            code, reason, _ = error_info(error)
            delay = retry_after(error)
            self.codes[code] += 1
            self.refused[reason] += 1
            self.delays.append(-1.0 if delay is None else delay)
            self.refused_jobs += len(message.requests) if isinstance(message, jobs_pb2.BatchCreateJobsRequest) else 1
            self.refusal_seconds.append(time.monotonic() - started)
        else:
            self.stored += stored


async def stored_jobs(database_url: str, owner: str) -> Counter[str]:
    """How many jobs ``owner`` has in the database, by status."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT status, count(*) FROM jobs WHERE owner_id = $1 GROUP BY status", owner)
    finally:
        await connection.close()
    return Counter({row["status"]: row["count"] for row in rows})


def refusals(metrics_port: int) -> Counter[str]:
    """jobqueue_limit_refusals_total by reason, from the job service behind ``metrics_port``."""
    samples = scrape({"METRICS_PORT": str(metrics_port)})
    return Counter(
        {
            dict(labels)["reason"]: int(value)
            for (name, labels), value in samples.items()
            if name == "jobqueue_limit_refusals_total"
        }
    )


SINGLES = 900


def owner_of(token_subject: uuid.UUID) -> str:
    return str(token_subject)


def test_a_flood_from_one_user_is_refused_at_once_while_another_user_is_served(
    system: System, secrets_dir: Path
) -> None:
    metrics_port = free_port()
    address = system.start_another_job_service(**DEFAULTS, METRICS_PORT=str(metrics_port))
    flooder, other = uuid.uuid4(), uuid.uuid4()
    flood_token, other_token = mint_token(secrets_dir, flooder), mint_token(secrets_dir, other)
    rate, burst = int(DEFAULTS["JOBS_PER_SECOND_PER_USER"]), int(DEFAULTS["JOB_BURST_PER_USER"])

    async def run() -> tuple[Outcomes, float, list[float]]:
        flood = Outcomes()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            # 20,900 jobs at once: 20 batches of 1,000 and 900 single CreateJobs, so the other user's
            # call stays within the server's 1,000 calls at once whatever the limits do. (Without the
            # rate limit, these calls all reached the database, and 2,000 singles made the other
            # user's CreateJob fail with "Concurrent RPC limit exceeded".)
            messages: list[Message] = [batch(1000) for _ in range(20)] + [request() for _ in range(SINGLES)]
            started = time.monotonic()
            flooding = asyncio.gather(*(flood.call(stub, flood_token, m) for m in messages))
            others: list[float] = []
            while not flooding.done():
                # Another user, on the same connection, during the flood: answered as usual.
                call_started = time.monotonic()
                reply = await stub.CreateJob(request(), metadata=bearer(other_token), timeout=10)
                others.append(time.monotonic() - call_started)
                assert reply.job.status == jobs_pb2.JOB_STATUS_QUEUED
                await asyncio.sleep(0.05)
            await flooding
            return flood, time.monotonic() - started, others

    flood, seconds, others = asyncio.run(run())
    flood.check_refusals()
    # At most the burst and what the rate refilled while the flood lasted; the rest refused, and fast.
    assert burst <= flood.stored <= burst + rate * seconds + 1000, (flood.stored, seconds)
    assert set(flood.refused) == {"TOO_MANY_JOBS"}
    refused_calls = sum(flood.refused.values())
    assert flood.stored + flood.refused_jobs == 20 * 1000 + SINGLES  # every call stored or refused
    assert all(0 < delay <= 1000 / rate + 1 for delay in flood.delays)  # when a token (or a batch's worth) is back
    assert sorted(flood.refusal_seconds)[len(flood.refusal_seconds) // 2] < 5, "refusals must not queue"
    assert others, "the other user was never served during the flood"
    assert max(others) < 5, others
    # Nothing refused was written: the database holds exactly what the calls were told was stored.
    assert sum(asyncio.run(stored_jobs(system.direct_database_url, owner_of(flooder))).values()) == flood.stored
    assert refusals(metrics_port)["TOO_MANY_JOBS"] == refused_calls


def test_high_priority_jobs_have_a_smaller_rate_of_their_own(system: System, secrets_dir: Path) -> None:
    metrics_port = free_port()
    address = system.start_another_job_service(**DEFAULTS, METRICS_PORT=str(metrics_port))
    token = mint_token(secrets_dir)
    high_burst = int(DEFAULTS["HIGH_PRIORITY_BURST_PER_USER"])
    high = jobs_pb2.JOB_PRIORITY_HIGH

    async def run() -> tuple[int, list[tuple[grpc.StatusCode, str, list[str], float | None]], int]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            first = await stub.BatchCreateJobs(batch(high_burst, high), metadata=bearer(token), timeout=30)
            refused = []
            # The bucket is all but empty now: another full batch of HIGH jobs must wait for it to refill.
            for message in (batch(high_burst, high), batch(high_burst + 1, high)):
                try:
                    await stub.BatchCreateJobs(message, metadata=bearer(token), timeout=30)
                except grpc.aio.AioRpcError as error:
                    refused.append((*error_info(error), retry_after(error)))
            normal = await stub.CreateJob(request(), metadata=bearer(token), timeout=30)  # NORMAL goes on
            return len(first.jobs), refused, normal.job.status

    stored, [limited, too_big], normal = asyncio.run(run())
    assert stored == high_burst
    code, reason, _, delay = limited
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_HIGH_PRIORITY_JOBS")
    assert delay is not None
    assert 0 < delay <= high_burst / int(DEFAULTS["HIGH_PRIORITY_JOBS_PER_SECOND_PER_USER"])
    # A batch of more HIGH jobs than the bucket holds could never pass: not a limit to wait out.
    assert too_big[:3] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["requests"])
    assert normal == jobs_pb2.JOB_STATUS_QUEUED
    assert refusals(metrics_port)["TOO_MANY_HIGH_PRIORITY_JOBS"] == 1


CAP = 50


def test_the_cap_on_unfinished_jobs_holds_across_two_replicas(system: System, secrets_dir: Path) -> None:
    ports = [free_port(), free_port()]
    replicas = [
        system.start_another_job_service(MAX_UNFINISHED_JOBS_PER_USER=str(CAP), METRICS_PORT=str(port))
        for port in ports
    ]
    user, other = uuid.uuid4(), uuid.uuid4()
    token = mint_token(secrets_dir, user)

    async def flood(calls: Sequence[tuple[int, Message]]) -> Outcomes:
        outcomes = Outcomes()
        channels = [grpc.aio.insecure_channel(replica) for replica in replicas]
        try:
            stubs = [jobs_pb2_grpc.JobServiceStub(channel) for channel in channels]
            await asyncio.gather(*(outcomes.call(stubs[i], token, message) for i, message in calls))
        finally:
            for channel in channels:
                await channel.close()
        return outcomes

    # Both replicas at once, single jobs and batches of 5 mixed: 600 jobs asked for, CAP may be stored.
    calls = [(i % 2, batch(5) if i % 3 == 0 else request()) for i in range(300)]
    first = asyncio.run(flood(calls))
    first.check_refusals()
    assert first.stored == CAP, first
    assert set(first.refused) == {"TOO_MANY_UNFINISHED_JOBS"}
    assert all(delay == 5.0 for delay in first.delays)
    assert asyncio.run(stored_jobs(system.direct_database_url, str(user))) == Counter(QUEUED=CAP)
    counted = [refusals(port)["TOO_MANY_UNFINISHED_JOBS"] for port in ports]
    assert sum(counted) == sum(first.refused.values()), counted
    assert all(counted), f"each replica refused some: {counted}"

    async def finish_some() -> None:
        async with connect_jobs(system.job_address, token=token) as jobs:
            listed = [job async for job in jobs.list(status=JobStatus.QUEUED)]
            for job in listed[:10]:
                await jobs.cancel(job.id)
        async with connect_jobs(replicas[1], token=mint_token(secrets_dir, other)) as jobs:
            await jobs.submit("reverse_string", "another user", priority=JobPriority.NORMAL)  # not counted against

    asyncio.run(finish_some())

    # Ten finished: exactly ten more fit, whichever replica takes them.
    second = asyncio.run(flood([(i % 2, request()) for i in range(40)]))
    assert second.stored == 10, second
    assert asyncio.run(stored_jobs(system.direct_database_url, str(user))) == Counter(QUEUED=CAP, CANCELLED=10)


def test_the_client_waits_out_a_refusal_and_submits_again(system: System, secrets_dir: Path) -> None:
    metrics_port = free_port()
    address = system.start_another_job_service(MAX_UNFINISHED_JOBS_PER_USER="3", METRICS_PORT=str(metrics_port))
    token = mint_token(secrets_dir)

    async def run() -> tuple[float, JobStatus]:
        async with connect_jobs(address, token=token) as jobs:
            queued = await jobs.submit_many([("reverse_string", str(i)) for i in range(3)])
            started = time.monotonic()
            submitting = asyncio.ensure_future(jobs.submit("reverse_string", "fourth"))
            await asyncio.sleep(1)  # refused by now, waiting out its RetryInfo (5 s)
            await jobs.cancel(queued[0].id)
            job = await submitting
            return time.monotonic() - started, job.status

    seconds, status = asyncio.run(run())
    assert status == JobStatus.QUEUED
    assert seconds >= UNFINISHED_RETRY_SECONDS  # it came back when it was told to, not sooner
    assert refusals(metrics_port)["TOO_MANY_UNFINISHED_JOBS"] == 1

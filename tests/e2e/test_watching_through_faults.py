"""A client following jobs live (WatchJob, via ``jobs.wait`` and ``jobs.watch``) through the faults of the suite.

The database cut off from the job service (a TcpProxy the test owns) and the job service restarted
both end every watch; the client library opens each again, and reads a fresh snapshot, so a wait
still returns the job's final state, whatever it missed while the watch was down.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from jobqueue.client import JobStatus, connect_jobs
from tests.support.clients import mint_token
from tests.support.system import System

#: The sleep demo type's seconds: long enough to cut and restore things while the jobs run.
SLEEP = 3


async def _submit_sleepers(address: str, token: str, count: int) -> list[str]:
    async with connect_jobs(address, token=token) as jobs:
        return [(await jobs.submit("sleep", SLEEP)).id for _ in range(count)]


def test_waits_end_with_the_final_state_across_a_database_outage(system: System, secrets_dir: Path) -> None:
    system.start_worker(DEMO_JOB_TYPES="true", HANDLER_PROCESSES="4")
    token = mint_token(secrets_dir)

    async def scenario() -> list[JobStatus]:
        ids = await _submit_sleepers(system.job_address, token, 4)
        async with connect_jobs(system.job_address, token=token) as jobs:
            waits = [asyncio.create_task(jobs.wait(job_id, timeout=90)) for job_id in ids]
            await asyncio.sleep(1)  # the watches are open and the jobs running
            system.database_proxy.cut()
            await asyncio.sleep(SLEEP + 1)  # the jobs' outcomes wait in the worker meanwhile
            system.database_proxy.restore()
            return [job.status for job in await asyncio.gather(*waits)]

    assert asyncio.run(scenario()) == [JobStatus.COMPLETED] * 4


def test_a_watch_follows_its_job_across_a_job_service_restart(system: System, secrets_dir: Path) -> None:
    system.start_worker(DEMO_JOB_TYPES="true")
    token = mint_token(secrets_dir)

    async def scenario() -> list[JobStatus]:
        [job_id] = await _submit_sleepers(system.job_address, token, 1)
        seen: list[JobStatus] = []
        async with connect_jobs(system.job_address, token=token) as jobs:

            async def follow() -> None:
                async for job in jobs.watch(job_id):
                    seen.append(job.status)

            following = asyncio.create_task(follow())
            deadline = time.monotonic() + 30
            while JobStatus.RUNNING not in seen:
                assert time.monotonic() < deadline, seen
                await asyncio.sleep(0.05)
            assert system.jobs is not None
            await asyncio.to_thread(system.jobs.stop)
            await asyncio.to_thread(system.start_jobs)
            await asyncio.wait_for(following, 60)
        return seen

    seen = asyncio.run(scenario())
    assert seen[0] in {JobStatus.QUEUED, JobStatus.RUNNING}  # the worker may have started it already
    assert seen[-1] == JobStatus.COMPLETED
    assert seen.count(JobStatus.COMPLETED) == 1

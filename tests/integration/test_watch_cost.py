"""What watching costs the job path: only changes to jobs someone watches are announced (NOTIFY).

A module of its own, so that its database holds no interest left by another test's watch (an
interest outlives its last watcher by LINGER_SECONDS, for page reloads).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg

from job_svc.watch_store import WATCH_LOCK_KEY
from tests.integration.jobservice import JobService, create_job, text
from tests.integration.test_watch import watch_jobs
from tests.support.clients import mint_token


def test_only_changes_to_watched_users_jobs_are_announced(
    jobs: JobService, secrets_dir: Path, database_url: str
) -> None:
    # NOTIFY slows every committing writer, so a user's open watch must not make other users' jobs
    # pay for it: the trigger announces only changes to jobs whose owner someone watches.
    watched, unwatched = mint_token(secrets_dir), mint_token(secrets_dir)
    # No process of this module's database watches yet: writers skip the trigger.
    assert asyncio.run(_writer_may_skip(database_url)) is True

    async def announced_owners() -> set[str]:
        listener = await asyncpg.connect(database_url)
        heard: list[str] = []
        await listener.add_listener("jobqueue_job_changes", lambda *args: heard.append(args[-1]))
        try:
            stream = await asyncio.to_thread(watch_jobs, jobs.stub, watched)
            created = [
                await asyncio.to_thread(create_job, jobs, token, "reverse_string", text("abc"))
                for token in (unwatched, watched, unwatched)
            ]
            deadline = time.monotonic() + 10
            while not any(created[1].id in payload for payload in heard):
                assert time.monotonic() < deadline, heard
                await asyncio.sleep(0.05)
            stream.cancel()
            return {payload.split(" ")[1] for payload in heard if payload.split(" ")[0] in {j.id for j in created}}
        finally:
            await listener.close()

    owners = asyncio.run(announced_owners())
    assert owners == {create_job(jobs, watched, "reverse_string", text("x")).owner_id}


def test_while_someone_watches_the_gate_is_shut_to_skipping_and_a_writer_cannot_skip(
    jobs: JobService, secrets_dir: Path, database_url: str
) -> None:
    # The jobs trigger runs only when a writer cannot take WATCH_LOCK_KEY in shared mode; a process with
    # watchers holds it exclusively (or waits for it), so from then on no change skips the trigger.
    token = mint_token(secrets_dir)
    stream = watch_jobs(jobs.stub, token)
    assert asyncio.run(_writer_may_skip(database_url)) is False
    stream.cancel()


async def _writer_may_skip(database_url: str) -> bool:
    """Whether a writer now would skip the jobs trigger (it takes the watch lock in shared mode)."""
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            return bool(await connection.fetchval("SELECT pg_try_advisory_xact_lock_shared($1)", WATCH_LOCK_KEY))
    finally:
        await connection.close()

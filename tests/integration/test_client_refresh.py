"""jobqueue.client against the real job service: an access token that expires mid-session is refreshed.

Tokens are minted with the dev private key, as auth_svc would sign them; the
refresh callables here mint a new one, as `login_with` would get one from auth_svc.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import grpc
import pytest

from job_svc.settings import Settings
from jobqueue.client import JobQueueError, JobStatus, connect_jobs
from jobqueue.jobs.v1 import jobs_pb2
from jobqueue.runtime.settings import load
from tests.integration.jobservice import JobService
from tests.support.clients import bearer, mint_token

#: How long past its ``exp`` the job service (`jobs` runs it with the default JWT_LEEWAY_SECONDS) accepts a token.
LEEWAY = load(Settings, {}).jwt_leeway_seconds


async def _until_past(instant: int) -> None:
    """Sleep until the wall clock is past ``instant`` (whole seconds)."""
    await asyncio.sleep(max(0.0, instant - time.time()) + 0.2)


async def test_a_token_that_expires_mid_session_is_refreshed_once_and_the_calls_succeed(
    jobs: JobService, secrets_dir: Path
) -> None:
    owner = uuid.uuid4()
    refused_from = int(time.time()) + 3  # the token's exp plus the leeway: the service refuses it from then on
    short_lived = mint_token(secrets_dir, owner, iat=refused_from - 600, exp=refused_from - LEEWAY)
    minted: list[str] = []

    async def refresh() -> str:
        await asyncio.sleep(0.2)  # a login's round trip (and bcrypt): the other calls fail meanwhile
        minted.append(mint_token(secrets_dir, owner))
        return minted[-1]

    async with connect_jobs(jobs.address, token=short_lived, refresh=refresh) as client:
        job = await client.submit("reverse_string", "hello")
        assert minted == []  # the first token was good
        await _until_past(refused_from)

        # The service does refuse the old token now: without the refresh these calls would fail.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.stub.GetJob(jobs_pb2.GetJobRequest(id=job.id), metadata=bearer(short_lived))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # Many calls meet the expired token at once; one refresh serves them all.
        seen = await asyncio.gather(*(client.get(job.id) for _ in range(10)))
        assert {(found.id, found.owner_id) for found in seen} == {(job.id, str(owner))}
        assert len(minted) == 1
        assert client.metadata == bearer(minted[0])

        # The new token is kept: later calls (a write among them) need no refresh.
        assert [listed.id async for listed in client.list()] == [job.id]
        assert (await client.cancel(job.id)).status == JobStatus.CANCELLED
        assert len(minted) == 1


async def test_a_refresh_that_does_not_help_raises_the_second_unauthenticated(
    jobs: JobService, secrets_dir: Path
) -> None:
    expired = int(time.time()) - 10 - LEEWAY
    handed_out: list[str] = []

    async def refresh() -> str:
        handed_out.append(mint_token(secrets_dir, exp=expired))
        return handed_out[-1]

    async with connect_jobs(jobs.address, token=mint_token(secrets_dir, exp=expired), refresh=refresh) as client:
        with pytest.raises(JobQueueError) as caught:
            await client.get(str(uuid.uuid4()))
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")
    assert len(handed_out) == 1

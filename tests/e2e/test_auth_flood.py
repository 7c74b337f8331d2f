"""A Register flood from one client is refused at once; another client logs in and gets its job done.

Run with the auth service's default limits and real bcrypt cost (12), as in production. Before the
limits, 300 concurrent Registers from one client were all accepted (300 accounts, each a full
bcrypt) and a real user's Login did not answer within 30 s. Client B reaches the services through a
proxy of the test's own that connects from 127.0.0.2, so the services see it as another host.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from auth_svc.settings import AuthSettings
from jobqueue.auth.v1 import auth_pb2, auth_pb2_grpc
from jobqueue.client import JobQueueError, JobStatus, connect_auth, connect_jobs
from jobqueue.runtime.settings import env_name
from tests.conftest import UNLIMITED_ATTEMPTS
from tests.e2e.conftest import RunningSystem
from tests.support.proxy import TcpProxy

FLOOD = 300
PASSWORD = "correct horse battery"
#: The defaults of the limits the other tests lift (tests/conftest.py), by variable.
DEFAULTS = {env_name(f): str(f.default) for f in dataclasses.fields(AuthSettings) if env_name(f) in UNLIMITED_ATTEMPTS}


@pytest.fixture
def make_run_env() -> dict[str, str]:
    return {**DEFAULTS, "BCRYPT_ROUNDS": "12"}


@pytest.fixture
def other_host(make_run: RunningSystem) -> Iterator[tuple[str, str]]:
    """Addresses of auth and jobs as seen from another host (127.0.0.2): (auth, jobs)."""
    proxies = [
        TcpProxy("127.0.0.1", int(make_run.env[port]), source_address="127.0.0.2") for port in ("AUTH_PORT", "JOB_PORT")
    ]
    try:
        yield tuple(f"127.0.0.1:{proxy.start()}" for proxy in proxies)  # type: ignore[misc]
    finally:
        for proxy in proxies:
            proxy.stop()


async def flood(address: str) -> tuple[Counter[str], float]:
    """FLOOD concurrent Registers of new emails, without the client library's retries: outcomes, seconds."""
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)

        async def register(i: int) -> None:
            request = auth_pb2.RegisterRequest(
                email=f"flood-{uuid.uuid4().hex}@example.com", password=PASSWORD, name="x"
            )
            try:
                await stub.Register(request, timeout=120)
            except grpc.aio.AioRpcError as error:
                refusal = JobQueueError.from_rpc_error(error)
                outcomes[f"{refusal.code.name} {refusal.reason} retry={refusal.retry_after is not None}"] += 1
            else:
                outcomes["OK"] += 1

        await asyncio.gather(*(register(i) for i in range(FLOOD)))
    return outcomes, time.monotonic() - started


async def test_a_register_flood_is_refused_quickly_while_another_client_is_served(
    make_run: RunningSystem, other_host: tuple[str, str]
) -> None:
    auth_b, jobs_b = other_host
    email = f"b-{uuid.uuid4().hex[:8]}@example.com"
    async with connect_auth(auth_b) as auth:
        await auth.register(email, PASSWORD, "B")

    async def client_b() -> tuple[float, JobStatus]:
        await asyncio.sleep(0.2)  # into the flood
        started = time.monotonic()
        async with connect_auth(auth_b) as auth:
            token = await auth.login(email, PASSWORD)
        logged_in = time.monotonic() - started
        async with connect_jobs(jobs_b, token=token) as jobs:
            job = await jobs.submit("reverse_string", "served")
            return logged_in, (await jobs.wait(job.id, timeout=60)).status

    (outcomes, flood_seconds), (login_seconds, status) = await asyncio.gather(
        flood(f"127.0.0.1:{make_run.env['AUTH_PORT']}"), client_b()
    )

    # At most the address's burst was let through to bcrypt (and of those, any that found the bcrypt
    # pool full were refused too); every other call was refused with a reason and a RetryInfo,
    # without being hashed: 290 hashes at cost 12 take over 30 s here.
    burst = int(DEFAULTS["REGISTERS_PER_MINUTE_PER_ADDRESS"])
    assert outcomes["OK"] + outcomes["RESOURCE_EXHAUSTED HASHING_BUSY retry=True"] <= burst, outcomes
    assert outcomes["RESOURCE_EXHAUSTED TOO_MANY_ATTEMPTS retry=True"] >= FLOOD - burst, outcomes
    assert set(outcomes) <= {
        "OK",
        "RESOURCE_EXHAUSTED TOO_MANY_ATTEMPTS retry=True",
        "RESOURCE_EXHAUSTED HASHING_BUSY retry=True",
    }, outcomes
    assert flood_seconds < 15, f"the flood took {flood_seconds:.1f} s to be answered"
    # B, on another address, logged in as usual and got its job done meanwhile.
    assert login_seconds < 5, f"B's Login took {login_seconds:.1f} s"
    assert status == JobStatus.COMPLETED


async def test_logins_for_one_email_are_limited_from_every_address(
    make_run: RunningSystem, other_host: tuple[str, str]
) -> None:
    auth_b, _ = other_host
    email = f"target-{uuid.uuid4().hex[:8]}@example.com"
    async with connect_auth(auth_b) as auth:
        await auth.register(email, PASSWORD, "Target")
    guesses: Counter[str] = Counter()
    started = time.monotonic()
    async with connect_auth(f"127.0.0.1:{make_run.env['AUTH_PORT']}") as attacker:
        for _ in range(20):
            try:
                await attacker.login(email, "wrong password!", attempts=1)
            except JobQueueError as error:
                guesses[f"{error.code.name} {error.reason}"] += 1
    per_email = int(DEFAULTS["LOGINS_PER_MINUTE_PER_EMAIL"])
    # The burst, plus what the bucket refilled while the guesses (a bcrypt check each) took their time.
    refilled = int((time.monotonic() - started) * per_email / 60)
    checked = guesses["UNAUTHENTICATED INVALID_CREDENTIALS"]
    assert per_email <= checked <= per_email + refilled, guesses
    assert guesses["RESOURCE_EXHAUSTED TOO_MANY_ATTEMPTS"] == 20 - checked, guesses
    # The account's limit holds from another address too: password guessing cannot be spread.
    async with connect_auth(auth_b) as auth:
        with pytest.raises(JobQueueError) as caught:
            await auth.login(email, PASSWORD, attempts=1)
    assert caught.value.reason == "TOO_MANY_ATTEMPTS"
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 60

"""Thousands of idle streams opened without a credential starve nobody.

Health/Watch needs no credential and stays open as long as its caller likes. Before the streams
had a budget of their own (gen/jobqueue/runtime/stream_limits.py), 3,000 idle Watch streams held every call slot
of a server: Register, Login, CreateJob and the workers' reports were refused. Here, while a
client tries to hold 3,000 Watch streams on each of auth and jobs (and on a worker's health port),
users register, log in and get their jobs done, and the workers keep reporting.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobqueue.client import connect_auth, connect_jobs
from tests.e2e.conftest import RunningSystem

#: Watch streams tried on each server, over CHANNELS connections.
STREAMS = 3000
CHANNELS = 30
USERS = 20
JOBS_PER_USER = 50


class Watchers:
    """Watch streams held open on one server; how many were admitted and how each refusal read."""

    def __init__(self, address: str) -> None:
        # A connection each: channels to one address share one connection unless told not to.
        self.channels = [
            grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(CHANNELS)
        ]
        self.calls: list[Any] = []
        self.outcomes: Counter[str] = Counter()
        self.details: set[str] = set()

    async def open(self) -> None:
        async def watch(channel: grpc.aio.Channel) -> None:
            # The health stubs' type hints omit the generated methods.
            stub: Any = health_pb2_grpc.HealthStub(channel)
            call = stub.Watch(health_pb2.HealthCheckRequest())
            self.calls.append(call)
            try:
                await call.read()  # an admitted stream sends the status at once, then waits
            except grpc.aio.AioRpcError as error:
                self.outcomes[error.code().name] += 1
                self.details.add(f"{error.code().name}: {error.details()}")
            else:
                self.outcomes["HELD"] += 1

        await asyncio.gather(*(watch(self.channels[i % CHANNELS]) for i in range(STREAMS)))

    def still_held(self) -> int:
        return sum(1 for call in self.calls if not call.done())

    async def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            await channel.close()


async def a_user_gets_work_done(system: RunningSystem) -> int:
    """Register, log in, submit JOBS_PER_USER jobs and wait for them: how many completed."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    async with connect_auth(f"127.0.0.1:{system.env['AUTH_PORT']}") as auth:
        await auth.register(email, "correct horse battery", "Idle Streams")
        token = await auth.login(email, "correct horse battery")
    async with connect_jobs(system.job_address, token=token) as jobs:
        submitted = [await jobs.submit("reverse_string", f"{email} {i}") for i in range(JOBS_PER_USER)]
        done = [await jobs.wait(job.id, timeout=120) for job in submitted]
    return sum(1 for job in done if job.status.name == "COMPLETED")


async def test_idle_watch_streams_starve_no_user_and_no_worker(make_run: RunningSystem) -> None:
    servers = [
        f"127.0.0.1:{make_run.env['AUTH_PORT']}",
        make_run.job_address,
        f"127.0.0.1:{make_run.env['WORKER_HEALTH_PORT']}",
    ]
    watchers = [Watchers(address) for address in servers]
    try:
        await asyncio.gather(*(w.open() for w in watchers))
        for w in watchers:
            # Some are held (the budget is not zero), the rest refused at once, and only with
            # RESOURCE_EXHAUSTED: nothing hangs, nothing is cancelled at random.
            assert set(w.outcomes) == {"HELD", "RESOURCE_EXHAUSTED"}, (w.outcomes, w.details)
            assert sum(w.outcomes.values()) == STREAMS

        completed = await asyncio.gather(*(a_user_gets_work_done(make_run) for _ in range(USERS)))

        assert completed == [JOBS_PER_USER] * USERS
        # The admitted streams stayed open all along: the users were served beside them.
        assert [w.still_held() for w in watchers] == [w.outcomes["HELD"] for w in watchers]
    finally:
        for w in watchers:
            await w.close()

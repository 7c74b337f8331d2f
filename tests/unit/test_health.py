"""Health: statuses follow the probes, and Watch streams end at shutdown so they cannot hold a graceful stop.

A real grpc.aio server on a free port serves the health servicer; nothing else runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.health import NOT_SERVING, SERVICE_UNKNOWN, SERVING, HealthMonitor, HealthServicer


class Served:
    """A health servicer behind a real server, and a client stub for it."""

    def __init__(self, servicer: HealthServicer, stub: Any) -> None:
        self.servicer = servicer
        # The health stubs' type hints omit the generated methods.
        self.stub = stub


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    servicer = HealthServicer()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Served(servicer, health_pb2_grpc.HealthStub(channel))
    await server.stop(None)


async def _statuses(
    call: grpc.aio.UnaryStreamCall[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse],
) -> list[int]:
    return [response.status async for response in call]


async def test_watch_streams_changes_then_ends_once_shutdown_said_not_serving(served: Served) -> None:
    await served.servicer.set("jobqueue.jobs.v1.JobService", SERVING)
    overall = served.stub.Watch(health_pb2.HealthCheckRequest(service=""))
    named = served.stub.Watch(health_pb2.HealthCheckRequest(service="jobqueue.jobs.v1.JobService"))
    never_set = served.stub.Watch(health_pb2.HealthCheckRequest(service="nobody"))
    streams = [asyncio.ensure_future(_statuses(call)) for call in (overall, named, never_set)]
    await asyncio.sleep(0.2)  # let each stream send its first status
    await served.servicer.set("", NOT_SERVING)
    await served.servicer.set("", SERVING)
    await asyncio.sleep(0.2)
    assert not any(stream.done() for stream in streams)  # a Watch lasts while the service runs

    await served.servicer.enter_graceful_shutdown()
    # The library's Watch would wait here forever; ours end, and the server can stop at once.
    overall_seen, named_seen, never_seen = await asyncio.wait_for(asyncio.gather(*streams), timeout=10)
    # Watch may skip statuses that changed back quickly, but it always starts with the current one.
    assert overall_seen[0] == SERVING
    assert overall_seen[-1] == NOT_SERVING
    assert named_seen == [SERVING, NOT_SERVING]
    assert never_seen == [SERVICE_UNKNOWN]
    check = await served.stub.Check(health_pb2.HealthCheckRequest(service=""))
    assert check.status == NOT_SERVING


async def test_monitor_follows_required_dependencies_only(served: Served) -> None:
    up = {"postgres": True, "rabbitmq": True}

    def probe(name: str) -> Callable[[], Awaitable[None]]:
        async def check() -> None:
            if not up[name]:
                raise ConnectionError(f"{name} is down")

        return check

    monitor = HealthMonitor(
        served.servicer,
        ["jobqueue.jobs.v1.JobService"],
        {"postgres": probe("postgres"), "rabbitmq": probe("rabbitmq")},
        required=["postgres"],
    )

    async def status(service: str) -> int:
        return int((await served.stub.Check(health_pb2.HealthCheckRequest(service=service))).status)

    assert await monitor.check_once()
    up["rabbitmq"] = False
    assert await monitor.check_once()  # only informational
    assert (await status(""), await status("rabbitmq")) == (SERVING, NOT_SERVING)
    up["postgres"] = False
    assert not await monitor.check_once()
    assert [await status(s) for s in ("", "jobqueue.jobs.v1.JobService", "postgres")] == [NOT_SERVING] * 3
    up["postgres"] = up["rabbitmq"] = True
    assert await monitor.check_once()
    await monitor.shutdown()
    assert not await monitor.check_once()  # probes cannot bring a stopping service back
    assert await status("") == NOT_SERVING

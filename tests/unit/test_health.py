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

from jobqueue.runtime import health_check
from jobqueue.runtime.health import NOT_SERVING, SERVICE_UNKNOWN, SERVING, HealthMonitor, HealthServicer
from jobqueue.runtime.health_check import HealthCheck, NotServing
from tests.support.processes import free_port


class Served:
    """A health servicer behind a real server, a client stub for it (Watch), and our Check helper."""

    def __init__(self, servicer: HealthServicer, stub: Any, health: HealthCheck, address: str) -> None:
        self.servicer = servicer
        # The health stubs' type hints omit the generated methods.
        self.stub = stub
        self.health = health
        self.address = address


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    servicer = HealthServicer()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    async with grpc.aio.insecure_channel(address) as channel:
        yield Served(servicer, health_pb2_grpc.HealthStub(channel), HealthCheck(channel, timeout=5.0), address)
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
    assert await served.health.status() == NOT_SERVING


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

    status = served.health.status

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


async def test_check_tells_serving_from_not_serving_and_from_unreachable(served: Served) -> None:
    await served.servicer.set("", SERVING)
    await served.servicer.set("postgres", NOT_SERVING)
    assert await served.health.serving()
    await served.health.require_serving()
    assert not await served.health.serving("postgres")
    with pytest.raises(NotServing, match="postgres is NOT_SERVING"):
        await served.health.require_serving("postgres")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        nobody = HealthCheck(channel, timeout=1.0)
        assert not await nobody.serving()
        with pytest.raises(grpc.aio.AioRpcError):
            await nobody.require_serving()


async def test_blocking_check_and_the_command_line_probe(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    # Blocking calls, so off the event loop that runs the server.
    await served.servicer.set("", SERVING)
    assert await asyncio.to_thread(health_check.status_of, served.address) == SERVING
    assert await asyncio.to_thread(health_check.main, [served.address]) == 0
    await served.servicer.set("", NOT_SERVING)
    assert await asyncio.to_thread(health_check.status_of, served.address) == NOT_SERVING
    assert await asyncio.to_thread(health_check.main, [served.address]) == 1
    assert "NOT_SERVING" in capsys.readouterr().err
    unreachable = f"127.0.0.1:{free_port()}"
    assert await asyncio.to_thread(health_check.status_of, unreachable, timeout=1.0) is None
    assert await asyncio.to_thread(health_check.main, [unreachable]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_command_line_probe_reads_the_port_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_PORT", "6123")
    assert health_check._address(["SOME_PORT", "5001"]) == "127.0.0.1:6123"
    monkeypatch.delenv("SOME_PORT")
    assert health_check._address(["SOME_PORT", "5001"]) == "127.0.0.1:5001"
    assert health_check._address(["10.0.0.1:7000"]) == "10.0.0.1:7000"
    with pytest.raises(SystemExit, match="usage"):
        health_check._address([])

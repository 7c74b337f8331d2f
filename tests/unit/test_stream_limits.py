"""Watch and reflection streams are admitted within their own bounds, per address and in all.

The accounting is pure (StreamCounts, client_address); the interceptor is checked on a real
grpc.aio server built by jobqueue.runtime.server.build_server, with small bounds of the test's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from jobqueue.runtime import metrics
from jobqueue.runtime.health import HealthServicer
from jobqueue.runtime.peers import client_address
from jobqueue.runtime.server import build_server
from jobqueue.runtime.stream_limits import REASON, RETRY_AFTER_SECONDS, StreamCounts


def test_the_address_of_a_peer() -> None:
    assert client_address("ipv4:10.0.0.1:5678") == "10.0.0.1"
    assert client_address("ipv6:[::1]:5678") == "::1"
    assert client_address("ipv6:[2001:db8::7]:443") == "2001:db8::7"
    assert client_address("unix:/tmp/socket") == "unix:/tmp/socket"


def test_counts_admit_within_every_bound_and_release() -> None:
    counts = StreamCounts(total=4, per_address=3, per_connection=2)
    assert counts.admit("ipv4:10.0.0.1:1000")
    assert counts.admit("ipv4:10.0.0.1:1000")
    assert not counts.admit("ipv4:10.0.0.1:1000")  # per connection
    assert counts.admit("ipv4:10.0.0.1:1001")
    assert not counts.admit("ipv4:10.0.0.1:1002")  # per address, on a new connection
    assert counts.admit("ipv4:10.0.0.2:1000")
    assert not counts.admit("ipv4:10.0.0.3:1000")  # in all
    counts.release("ipv4:10.0.0.1:1000")
    assert counts.admit("ipv4:10.0.0.3:1000")
    assert counts.open == 4
    for peer in ("ipv4:10.0.0.1:1000", "ipv4:10.0.0.1:1001", "ipv4:10.0.0.2:1000", "ipv4:10.0.0.3:1000"):
        counts.release(peer)
    assert counts.open == 0
    assert counts.admit("ipv4:10.0.0.1:1000")


async def _echo(request: bytes, context: Any) -> bytes:
    return request


@pytest.fixture
async def server_address() -> AsyncIterator[str]:
    """A server admitting 3 streams from one address (and connection) and 5 in all, with one unary method."""

    def register(server: grpc.aio.Server) -> None:
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_echo)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Echo": handler}),))

    health = HealthServicer()
    server, port = build_server(
        host="127.0.0.1",
        port=0,
        service_names=["test.Echo"],
        register=register,
        health_servicer=health,
        stream_counts=StreamCounts(total=5, per_address=3, per_connection=3),
    )
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def open_watch(channel: grpc.aio.Channel) -> tuple[Any, grpc.aio.AioRpcError | None]:
    """A Watch stream and, if it was refused, the error (an admitted one has sent its first status)."""
    # The health stubs' type hints omit the generated methods.
    stub: Any = health_pb2_grpc.HealthStub(channel)
    call = stub.Watch(health_pb2.HealthCheckRequest())
    try:
        await call.read()
    except grpc.aio.AioRpcError as error:
        return call, error
    return call, None


def refusal_details(error: grpc.aio.AioRpcError) -> tuple[str, int]:
    """The ErrorInfo reason and the RetryInfo seconds of a refused stream."""
    status = rpc_status.from_call(error)
    assert status is not None
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert status.details[1].Unpack(retry)
    return info.reason, retry.retry_delay.seconds


async def test_streams_beyond_the_per_address_bound_are_refused_and_unary_calls_pass(server_address: str) -> None:
    refusals = metrics.LIMIT_REFUSALS.labels(REASON)._value.get()
    async with grpc.aio.insecure_channel(server_address) as channel:
        opened = [await open_watch(channel) for _ in range(4)]
        assert [error is None for _, error in opened] == [True, True, True, False]
        refused = opened[3][1]
        assert refused is not None
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refusal_details(refused) == (REASON, RETRY_AFTER_SECONDS)
        assert metrics.LIMIT_REFUSALS.labels(REASON)._value.get() == refusals + 1  # counted
        # The calls that do the work are not counted against the streams.
        echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/test.Echo/Echo")
        assert [await echo(b"%d" % i) for i in range(20)] == [b"%d" % i for i in range(20)]
        # Reflection streams share the streams' budget.
        info = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()

        async def ask() -> None:
            # The refusal may reach the client before its request is written, or after.
            await info.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            await info.read()

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ask()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # A closed stream frees its place, once the server has seen it close (the cancellation
        # travels as an RST_STREAM, so a new stream may get there first and be refused).
        opened[0][0].cancel()
        for _ in range(50):
            call, error = await open_watch(channel)
            if error is None:
                break
            await asyncio.sleep(0.05)
        assert error is None
        call.cancel()
        for call, _ in opened:
            call.cancel()


async def test_the_total_bound_refuses_even_within_the_per_address_one() -> None:
    health = HealthServicer()
    server, port = build_server(
        host="127.0.0.1",
        port=0,
        service_names=[],
        register=lambda server: None,
        health_servicer=health,
        stream_counts=StreamCounts(total=2, per_address=10, per_connection=10),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            opened = [await open_watch(channel) for _ in range(3)]
            assert [error is None for _, error in opened] == [True, True, False]
            for call, _ in opened:
                call.cancel()
    finally:
        await server.stop(None)

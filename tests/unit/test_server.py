"""The shared server's error edge: what a caller sees when a method raises, and what the log keeps.

A real grpc.aio server built by jobqueue.runtime.server.build_server on a free port, with
one raw-bytes method that raises whatever the test asks for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from jobqueue.runtime import metrics
from jobqueue.runtime.errors import InvalidArgument, ResourceExhausted
from jobqueue.runtime.health import HealthServicer
from jobqueue.runtime.server import ErrorInterceptor, build_server
from tests.support.clients import error_info

RAISE: dict[bytes, BaseException] = {
    b"outage": ConnectionResetError("database connection lost"),
    b"bug": KeyError("secret internals"),
    b"refusal": InvalidArgument([]),
    b"limit": ResourceExhausted("slow down", reason="TOO_MANY_TESTS", retry_after=3),
}


async def _fail(request: bytes, context: Any) -> bytes:
    raise RAISE[request]


@pytest.fixture
async def call() -> AsyncIterator[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]]:
    def register(server: grpc.aio.Server) -> None:
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_fail)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Failing", {"Fail": handler}),))

    server, port = build_server(
        host="127.0.0.1",
        port=0,
        service_names=["test.Failing"],
        register=register,
        health_servicer=HealthServicer(),
        transient=(ConnectionError,),
    )
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel.unary_unary("/test.Failing/Fail")
    await server.stop(None)


async def test_errors_become_statuses_without_internals(call: Any) -> None:
    for body, code, reason in (
        (b"outage", grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE"),
        (b"bug", grpc.StatusCode.INTERNAL, None),
        (b"refusal", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(body)
        got_code, got_reason, _ = error_info(caught.value)
        assert (got_code, got_reason or None) == (code, reason)
        assert "secret" not in (caught.value.details() or "")
        assert "Traceback" not in (caught.value.details() or "")


async def test_an_outage_is_logged_once_per_interval_with_a_count(
    call: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("jobqueue.runtime.server.monotonic", lambda: clock[0])
    caplog.set_level(logging.WARNING, logger="jobqueue.runtime.server")
    for _ in range(50):
        with pytest.raises(grpc.aio.AioRpcError):
            await call(b"outage")
    clock[0] += ErrorInterceptor.OUTAGE_LOG_INTERVAL
    with pytest.raises(grpc.aio.AioRpcError):
        await call(b"outage")
    logged = [r for r in caplog.records if r.getMessage() == "dependency unavailable"]
    assert [r.__dict__["similar_calls_not_logged"] for r in logged] == [0, 49]


async def _peer(request: bytes, context: Any) -> bytes:
    return str(context.peer()).encode()


async def peers_seen(max_connection_age: float, calls: int, interval: float) -> set[bytes]:
    """The client addresses a server with ``max_connection_age`` sees for ``calls`` calls over one channel."""

    def register(server: grpc.aio.Server) -> None:
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_peer)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Peer", {"Peer": handler}),))

    server, port = build_server(
        host="127.0.0.1",
        port=0,
        service_names=["test.Peer"],
        register=register,
        health_servicer=HealthServicer(),
        max_connection_age=max_connection_age,
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            peer: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/test.Peer/Peer")
            seen = set()
            for _ in range(calls):
                seen.add(await peer(b""))  # every call succeeds, across the reconnections too
                await asyncio.sleep(interval)
            return seen
    finally:
        await server.stop(None)


async def test_connections_are_aged_out_so_clients_reconnect_and_resolve_again() -> None:
    """With max_connection_age, one client's calls arrive over several connections, none failing."""
    assert len(await peers_seen(max_connection_age=0.3, calls=12, interval=0.1)) >= 2


async def test_without_an_age_one_connection_serves_every_call() -> None:
    assert len(await peers_seen(max_connection_age=0, calls=12, interval=0.1)) == 1


async def test_a_limit_refusal_is_counted_by_reason_and_says_when_to_retry(call: Any) -> None:
    counter = metrics.LIMIT_REFUSALS.labels("TOO_MANY_TESTS")
    before = counter._value.get()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(b"limit")
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(caught.value)[1] == "TOO_MANY_TESTS"
    assert counter._value.get() == before + 1


async def _echo_value(request: Any, context: Any) -> bytes:
    return bytes(request.SerializeToString())


async def test_a_body_that_is_not_the_request_message_is_invalid_argument_on_request() -> None:
    """gRPC itself would answer UNKNOWN with the parser's exception, and log a traceback."""

    def register(server: grpc.aio.Server) -> None:
        handler: grpc.RpcMethodHandler[Any, bytes] = grpc.unary_unary_rpc_method_handler(
            _echo_value, request_deserializer=struct_pb2.Value.FromString
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Parse", {"Parse": handler}),))

    server, port = build_server(
        host="127.0.0.1", port=0, service_names=["test.Parse"], register=register, health_servicer=HealthServicer()
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/test.Parse/Parse")
            good = struct_pb2.Value(string_value="fine").SerializeToString()
            assert await call(good) == good
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(b"\x1a\xff\xff\xff")  # a length past the end of the body
        code, reason, violations = error_info(caught.value)
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert violations == ["request"]
    finally:
        await server.stop(None)

"""A budget of their own for the long-lived streams anyone may open: health Watch and reflection.

A server refuses calls beyond MAX_CALLS_IN_PROGRESS (gen/jobqueue/runtime/server.py), and a stream counts as a
call for as long as it stays open. Health/Watch and the reflection stream need no credential, and a
Watch stays open for as long as its caller likes, so without a budget of their own a few thousand
idle Watch streams, opened by anyone, would hold every call slot: Register, Login, CreateJob and the
workers' reports would all be refused.

So every server-streaming or bidirectional call but the job service's own watches (WatchJob and
WatchJobs need a token, and job_svc/watch.py bounds them per user and in all) is admitted here
only within three bounds: at most ``per_connection`` open at once on one connection,
``per_address`` from one client address, and ``total`` in all. The server's call limit is raised by
``total``, so the calls that do the work keep their whole budget whatever the streams do. A stream
beyond a bound is refused at once with RESOURCE_EXHAUSTED, an ErrorInfo reason and a RetryInfo.

Per address as well as per connection: one client can open many connections. Behind a proxy
every caller has the proxy's address; then the per-connection and total bounds still protect the
calls, and the per-address one refuses honest callers sooner (docs/operations.md).
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, TypeAlias, cast

import grpc

from jobqueue.runtime import metrics
from jobqueue.runtime.peers import client_address

#: Open streams (Watch, reflection) one connection may hold at once.
MAX_STREAMS_PER_CONNECTION = 10
#: Open streams one client address may hold at once, over all its connections.
MAX_STREAMS_PER_ADDRESS = 20
#: Open streams all clients together may hold at once; the server's call limit is raised by as much.
MAX_STREAMS = 200
#: The ErrorInfo reason of a refused stream.
REASON = "TOO_MANY_STREAMS"
#: The RetryInfo of a refused stream: by then streams held by others may have closed.
RETRY_AFTER_SECONDS = 5

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class StreamCounts:
    """Open streams in all, by client address and by connection; what the interceptor admits and releases."""

    def __init__(self, *, total: int, per_address: int, per_connection: int) -> None:
        self.total = total
        self.per_address = per_address
        self.per_connection = per_connection
        self._by_address: Counter[str] = Counter()
        self._by_connection: Counter[str] = Counter()
        self._count = 0

    @property
    def open(self) -> int:
        return self._count

    def admit(self, peer: str) -> bool:
        """Count one more stream from ``peer`` (a gRPC peer: address and port) if every bound allows it."""
        address = client_address(peer)
        if (
            self._count >= self.total
            or self._by_address[address] >= self.per_address
            or self._by_connection[peer] >= self.per_connection
        ):
            return False
        self._by_address[address] += 1
        self._by_connection[peer] += 1
        self._count += 1
        return True

    def release(self, peer: str) -> None:
        for counter, key in ((self._by_address, client_address(peer)), (self._by_connection, peer)):
            counter[key] -= 1
            if not counter[key]:
                del counter[key]
        self._count -= 1


class StreamLimits(grpc.aio.ServerInterceptor):
    """Admits server-streaming and bidirectional calls within StreamCounts' bounds; unary calls pass untouched."""

    def __init__(self, counts: StreamCounts, refusal: grpc.Status, *, exempt: Collection[str] = ()) -> None:
        """``refusal``: the status a stream beyond the bounds gets (RESOURCE_EXHAUSTED with its details).

        ``exempt``: full method names of streams their service bounds itself, per authenticated caller.
        """
        self.counts = counts
        self._refusal = refusal
        self._exempt = frozenset(exempt)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in self._exempt:
            return handler
        streams: list[tuple[Any, Callable[..., Handler]]] = [
            (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
            (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
        ]
        for behaviour, wrap in streams:
            if behaviour is not None:
                return wrap(
                    self._bounded(behaviour),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler  # a unary call: not a stream, not counted here

    def _bounded(self, inner: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Awaitable[None]]:
        async def bounded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            peer = context.peer()
            if not self.counts.admit(peer):
                metrics.LIMIT_REFUSALS.labels(REASON).inc()
                refusal = self._refusal
                await context.abort(refusal.code, refusal.details, refusal.trailing_metadata)
            try:
                # A handler is either a coroutine that writes with context.write (our health Watch),
                # or an async generator of responses (reflection): write the latter's here.
                result = inner(request, context)
                if inspect.isasyncgen(result):
                    async for response in cast(AsyncIterator[Any], result):
                        await context.write(response)
                else:
                    await result
            finally:
                self.counts.release(peer)

        return bounded

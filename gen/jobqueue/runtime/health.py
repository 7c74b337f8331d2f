"""Health that follows the dependencies: SERVING only while every one of them answers.

The monitor probes each dependency every ``interval`` seconds and sets the
overall status ("") and each served service's status accordingly; each
dependency also gets a status of its own under its name (e.g. "postgres"), so
an operator can tell which one is down with ``grpc.health.v1.Health/Check``.

A service may name only some dependencies as ``required``: the job service
keeps accepting jobs while RabbitMQ is down (they wait in its outbox), so the
broker's outage shows under "rabbitmq" but does not make the service unready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from grpc_health.v1 import health_pb2

# grpc_health publishes this class as `health.aio.HealthServicer`; its type
# stubs know it only by its module's own name.
from grpc_health.v1._async import HealthServicer as _LibraryHealthServicer

__all__ = ["NOT_SERVING", "SERVING", "HealthMonitor", "HealthServicer"]

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[object]]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(_LibraryHealthServicer):
    """grpc_health's servicer, except that a Watch stream ends once it has said NOT_SERVING at shutdown.

    The library's Watch never returns, so a single watcher (a load balancer, an
    operator's `grpcurl ... Health/Watch`) held every graceful stop for its whole
    grace period. The loop is the library's own (grpcio-health-checking 1.85),
    plus the exit; it relies on the library's bookkeeping attributes, declared
    here for the type checker and kept honest by the pinned version and
    tests/unit/test_health.py.
    """

    _server_status: MutableMapping[str, int]
    _server_watchers: MutableMapping[str, asyncio.Condition]
    _watcher_count_by_service: MutableMapping[str, int]
    _gracefully_shutting_down: bool

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        """Stream the service's status on every change, ending after NOT_SERVING once shutdown began."""
        condition = self._server_watchers[request.service]
        self._watcher_count_by_service[request.service] += 1
        last_status = None
        try:
            async with condition:
                while True:
                    status = self._server_status.get(request.service, SERVICE_UNKNOWN)
                    if status != last_status:
                        await context.write(health_pb2.HealthCheckResponse(status=status))
                    last_status = status
                    if self._gracefully_shutting_down:
                        return
                    await condition.wait()
        finally:
            self._watcher_count_by_service[request.service] -= 1
            if self._watcher_count_by_service[request.service] == 0:
                del self._server_watchers[request.service]
                del self._watcher_count_by_service[request.service]

    async def enter_graceful_shutdown(self) -> None:
        """Turn every status NOT_SERVING for good, and end every Watch stream after it has said so."""
        await super().enter_graceful_shutdown()
        # Watchers of a name that never had a status were not woken by the above.
        for condition in list(self._server_watchers.values()):
            async with condition:
                condition.notify_all()


class HealthMonitor:
    """Keeps a HealthServicer in step with the reachability of a service's dependencies."""

    def __init__(
        self,
        servicer: HealthServicer,
        service_names: Sequence[str],
        probes: Mapping[str, Probe],
        *,
        required: Sequence[str] | None = None,
        interval: float = 1.0,
        timeout: float = 2.0,
    ) -> None:
        self.servicer = servicer
        self._names = ["", *service_names]
        self._probes = dict(probes)
        self._required = list(self._probes if required is None else required)
        self._interval = interval
        self._timeout = timeout
        self._up: dict[str, bool] = {}
        self._stopping = False

    @property
    def serving(self) -> bool:
        """Whether every required dependency answered its last probe (and we are not stopping)."""
        return not self._stopping and all(self._up.get(name, False) for name in self._required)

    async def _probe(self, name: str, probe: Probe) -> bool:
        try:
            await asyncio.wait_for(probe(), self._timeout)
        except Exception as error:  # noqa: BLE001 - any failure means "not reachable"; the reason is logged
            if self._up.get(name, True):
                log.warning(
                    "dependency unreachable",
                    extra={"dependency": name, "error": repr(error)},
                )
            return False
        if not self._up.get(name, False):
            log.info("dependency reachable", extra={"dependency": name})
        return True

    async def check_once(self) -> bool:
        """Probe every dependency now and publish the result; returns whether serving."""
        results = await asyncio.gather(*(self._probe(n, p) for n, p in self._probes.items()))
        if self._stopping:
            return False
        for name, up in zip(self._probes, results, strict=True):
            self._up[name] = up
            await self.servicer.set(name, SERVING if up else NOT_SERVING)
        status = SERVING if self.serving else NOT_SERVING
        for name in self._names:
            await self.servicer.set(name, status)
        return self.serving

    async def run(self) -> None:
        """Probe forever; cancel the task to stop."""
        while not self._stopping:
            await self.check_once()
            await asyncio.sleep(self._interval)

    async def shutdown(self) -> None:
        """Turn every status NOT_SERVING for good: the first step of a graceful stop."""
        self._stopping = True
        await self.servicer.enter_graceful_shutdown()

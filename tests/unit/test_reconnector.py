"""The one RabbitMQ reconnect loop (jobqueue.runtime.rabbitmq.Reconnector), driven with fake connections.

What the publisher and the worker's consumer rely on: a session is up from its
setup until its channel or connection closes; each outage is logged once; the
backoff grows while the broker stays down and starts over only after a session
that lasted; stop leaves an up session's connection open for the last acks.
The same loop against a real broker behind a proxy: tests/faults/test_outages.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection

from jobqueue.runtime.backoff import Backoff
from jobqueue.runtime.rabbitmq import Reconnector

CAP = 0.2


class Closable:
    """What the loop uses of a connection or a channel: close callbacks, is_closed, close()."""

    def __init__(self) -> None:
        self.close_callbacks: set[Callable[..., object]] = set()
        self.is_closed = False

    def drop(self) -> None:
        """The broker (or the network) closes it."""
        self.is_closed = True
        for callback in list(self.close_callbacks):
            callback(self, None)

    async def close(self) -> None:
        self.drop()


class RecordingBackoff(Backoff):
    """A Backoff whose delays are tiny and whose decisions are recorded: the failure count of each retry, resets."""

    def __init__(self) -> None:
        super().__init__(base=0.01, cap=CAP)
        self.retries: list[int] = []
        self.resets = 0

    def next_delay(self) -> float:
        super().next_delay()
        self.retries.append(self._failures)
        return 0.001

    def reset(self) -> None:
        super().reset()
        self.resets += 1


class Broker:
    """Fake connect(): refuses while ``down``, else hands out a fresh connection; opens sessions on them."""

    def __init__(self, *, down: int = 0) -> None:
        self.down = down
        self.attempts = 0
        self.connections: list[Closable] = []
        self.channels: list[Closable] = []
        self.setup_error: Exception | None = None

    async def connect(self, url: str, *, name: str) -> AbstractConnection:
        self.attempts += 1
        if self.down > 0:
            self.down -= 1
            raise ConnectionRefusedError(111, "Connect call failed")
        connection = Closable()
        self.connections.append(connection)
        return cast(AbstractConnection, connection)

    async def open_session(self, connection: AbstractConnection) -> AbstractChannel:
        if self.setup_error is not None:
            error, self.setup_error = self.setup_error, None
            raise error
        channel = Closable()
        self.channels.append(channel)
        return cast(AbstractChannel, channel)


def link_to(broker: Broker, backoff: Backoff | None = None) -> Reconnector:
    return Reconnector(
        "amqp://fake/", name="test", open_session=broker.open_session, backoff=backoff, connect=broker.connect
    )


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "jobqueue.runtime.rabbitmq" and r.levelno >= logging.WARNING
    ]


async def stopped(link: Reconnector, task: asyncio.Task[Any]) -> None:
    link.stop()
    await asyncio.wait_for(task, 5)
    await link.close()


async def test_a_session_is_up_until_its_channel_or_connection_closes() -> None:
    broker = Broker()
    link = link_to(broker, RecordingBackoff())
    task = asyncio.create_task(link.run())
    await asyncio.wait_for(link.wait_connected(), 5)
    assert link.connected
    assert link.channel is cast(AbstractChannel, broker.channels[0])

    broker.channels[0].drop()
    await until(lambda: len(broker.channels) == 2 and link.connected)
    assert broker.connections[0].is_closed  # the lost session's connection is closed, not leaked

    broker.connections[1].drop()
    await until(lambda: len(broker.channels) == 3 and link.connected)
    await stopped(link, task)


async def test_an_outage_is_logged_once_and_the_backoff_grows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="jobqueue.runtime.rabbitmq")
    broker = Broker(down=5)
    backoff = RecordingBackoff()
    link = link_to(broker, backoff)
    task = asyncio.create_task(link.run())
    await asyncio.wait_for(link.wait_connected(), 5)
    assert broker.attempts == 6
    assert backoff.retries == [1, 2, 3, 4, 5]
    assert warnings(caplog) == ["RabbitMQ unreachable; retrying"]
    assert sum(r.getMessage() == "RabbitMQ still unreachable" for r in caplog.records) == 4

    caplog.clear()
    broker.down = 3
    broker.connections[0].drop()
    await until(lambda: len(broker.channels) == 2 and link.connected)
    assert warnings(caplog) == ["lost RabbitMQ; reconnecting"]
    await stopped(link, task)


async def test_only_a_session_that_lasted_the_backoff_cap_starts_the_backoff_over() -> None:
    broker = Broker(down=2)
    backoff = RecordingBackoff()
    link = link_to(broker, backoff)
    task = asyncio.create_task(link.run())
    await asyncio.wait_for(link.wait_connected(), 5)

    # A broker that accepts and at once drops the connection is still down: the backoff keeps growing.
    broker.connections[-1].drop()
    await until(lambda: len(broker.channels) == 2 and link.connected)
    assert backoff.resets == 0
    assert backoff.retries == [1, 2, 3]

    await asyncio.sleep(CAP * 1.5)
    broker.connections[-1].drop()
    await until(lambda: len(broker.channels) == 3 and link.connected)
    assert backoff.resets == 1
    assert backoff.retries == [1, 2, 3, 1]
    await stopped(link, task)


async def test_stop_leaves_an_up_session_open_until_close() -> None:
    broker = Broker()
    link = link_to(broker, RecordingBackoff())
    task = asyncio.create_task(link.run())
    await asyncio.wait_for(link.wait_connected(), 5)

    link.stop()
    await asyncio.wait_for(task, 5)
    assert not link.connected
    # The consumer still acks its in-flight deliveries on this channel.
    assert link.channel is cast(AbstractChannel, broker.channels[0])
    assert [connection.is_closed for connection in broker.connections] == [False]

    await link.close()
    assert broker.connections[0].is_closed
    assert link.channel is None


async def test_stop_ends_the_wait_before_the_next_try() -> None:
    broker = Broker(down=1_000_000)
    link = Reconnector(
        "amqp://fake/",
        name="test",
        open_session=broker.open_session,
        backoff=Backoff(base=30.0, cap=30.0),
        connect=broker.connect,
    )
    task = asyncio.create_task(link.run())
    await until(lambda: broker.attempts == 1)
    link.stop()
    await asyncio.wait_for(task, 1)  # not 15 to 30 s
    assert broker.attempts == 1


async def test_an_unexpected_error_in_a_session_is_logged_and_the_session_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Broker()
    broker.setup_error = ValueError("a bug")
    link = link_to(broker, RecordingBackoff())
    task = asyncio.create_task(link.run())
    await asyncio.wait_for(link.wait_connected(), 5)
    assert broker.connections[0].is_closed
    assert link.channel is cast(AbstractChannel, broker.channels[0])
    assert any(r.getMessage() == "unexpected error in the RabbitMQ session" and r.exc_info for r in caplog.records)
    await stopped(link, task)


async def test_cancelling_run_propagates_and_close_closes_the_connection() -> None:
    broker = Broker()
    link = link_to(broker, RecordingBackoff())
    task = asyncio.create_task(link.run())
    await asyncio.wait_for(link.wait_connected(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await link.close()
    assert broker.connections[0].is_closed

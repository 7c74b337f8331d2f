"""The outbox relay: a message leaves the outbox only once the broker confirmed it."""

from __future__ import annotations

import uuid

import pytest

from job_svc.errors import BrokerUnavailable
from job_svc.jobs import Jobs
from job_svc.relay import OutboxRelay
from tests.support.fake_job_service import FakePublisher, FakeRelay, FakeStore, type_registry

OWNER = uuid.uuid4()


async def queued(store: FakeStore, count: int) -> None:
    jobs = Jobs(store, FakeRelay(), FakePublisher(), type_registry())
    await jobs.create_batch([await jobs.check_new(OWNER, "reverse_string", f"t{i}") for i in range(count)])


async def test_drain_publishes_the_whole_outbox_in_batches_and_empties_it() -> None:
    store, publisher = FakeStore(), FakePublisher()
    await queued(store, 7)
    messages = list(store.outbox)
    relay = OutboxRelay(store, publisher, batch_size=3, poll_seconds=1)
    assert await relay.drain() == 7
    assert publisher.published == messages
    assert store.outbox == []


async def test_messages_the_broker_did_not_take_stay_in_the_outbox() -> None:
    store, publisher = FakeStore(), FakePublisher(connected=False)
    await queued(store, 2)
    relay = OutboxRelay(store, publisher, batch_size=10, poll_seconds=1)
    with pytest.raises(BrokerUnavailable):
        await relay.drain()
    assert len(store.outbox) == 2
    publisher.connected = True
    assert await relay.drain() == 2
    assert store.outbox == []

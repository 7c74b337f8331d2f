"""The RabbitMQ names a job type's jobs travel under, and the broker permissions over them."""

from __future__ import annotations

import re

import pytest

from jobqueue.runtime.limits import NAME_PATTERN
from jobqueue.runtime.rabbitmq import Topology, job_service_permissions, worker_permissions

TOPOLOGY = Topology("jobs.v1")


def test_each_type_has_a_queue_of_its_own_named_after_it() -> None:
    assert TOPOLOGY.job_queue("fibonacci_calc") == "jobs.v1.type.fibonacci_calc"
    # No type's queue is another queue of the topology's, whatever the type's name.
    others = {TOPOLOGY.queue, TOPOLOGY.dead_letter_queue, TOPOLOGY.control_exchange}
    assert not others & {TOPOLOGY.job_queue(name) for name in ("dead", "control", "type", "a")}


def _allows(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None


@pytest.mark.parametrize("job_type", ["a", "fibonacci_calc", "x" + "9" * 62])
def test_both_services_may_declare_and_read_every_possible_types_queue(job_type: str) -> None:
    assert NAME_PATTERN.fullmatch(job_type)
    queue = TOPOLOGY.job_queue(job_type)
    for permissions in (job_service_permissions(TOPOLOGY), worker_permissions(TOPOLOGY)):
        assert _allows(permissions.configure, queue)
        assert _allows(permissions.read, queue)
        assert not _allows(permissions.write, queue)


@pytest.mark.parametrize(
    "name",
    [
        "jobs.v1",  # the legacy queue: only the job service drains it
        "jobs.v1.dead",
        "jobs.v1.type.",
        "jobs.v1.type.Upper",
        "jobs.v1.type.a.b",
        "jobs.v1.type.a" + "b" * 63,
        "jobsXv1.type.a",  # the queue's name is quoted, not a pattern
        "other.type.a",
    ],
)
def test_a_worker_reads_no_queue_outside_its_types_queues(name: str) -> None:
    assert not _allows(worker_permissions(TOPOLOGY).read, name)

"""The example application (examples/) in containers, as examples/README.md runs it.

The worker base image is built as a user builds it (`docker build --target
worker-base`), the example's image FROM it by compose with
docker-compose.examples.yml, in a project of its own, and its worker scaled to
two. Jobs of both example types complete with their results as JSON values, the
I/O-bound one reaching the stack's own services by name over the compose
network; both replicas take jobs; a payload that breaks a type's schema is
refused at CreateJob with the path of the field at fault.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from jobqueue.client import JobQueueError, JobStatus
from tests.compose.stack import Stack, new_user
from tests.support.examples import BASE_IMAGE, PRIMES_BELOW_A_MILLION, Targets, check_ports_runs_then_completes
from tests.support.processes import ROOT

pytestmark = pytest.mark.timeout(1800)

COMPLETED = "jobqueue_worker_jobs_total"
REPLICAS = 2
#: The probe of every worker image (the Dockerfile's worker-base HEALTHCHECK).
WORKER_PROBE = ["python", "-m", "jobqueue.runtime.health_check", "WORKER_HEALTH_PORT", "5003"]


@pytest.fixture(scope="module")
def examples(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("examples")
    # PYTHON_IMAGE comes from the environment when the harness set it (a stand-in base), as compose passes it.
    base = ["docker", "build", "--build-arg", "PYTHON_IMAGE", "--target", "worker-base", "-t", BASE_IMAGE, "."]
    built = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert built.returncode == 0, built.stderr
    stack = Stack(folder, files=[ROOT / "docker-compose.examples.yml"])
    try:
        stack.compose("up", "--wait", "--build", "--scale", f"example-worker={REPLICAS}", timeout=900)
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--rmi", "local", "--timeout", "60")
        # The base too, as compose removes the images it built (its layers stay in the build cache).
        subprocess.run(["docker", "image", "rm", BASE_IMAGE], capture_output=True, timeout=120, check=True)


def image(name: str) -> dict[str, Any]:
    """`docker image inspect` of ``name``."""
    out = subprocess.run(["docker", "image", "inspect", name], capture_output=True, text=True, timeout=60, check=True)
    found: dict[str, Any] = json.loads(out.stdout)[0]
    return found


def test_worker_images_are_the_base_plus_their_package(examples: Stack) -> None:
    """The example's image and worker-service's are the worker base's layers plus one: their package."""
    base = image(BASE_IMAGE)
    layers = base["RootFS"]["Layers"]
    assert base["Config"]["Entrypoint"] == ["python", "-m", "jobqueue.worker"]
    assert base["Config"]["User"] == "10001:10001"
    assert base["Config"]["Healthcheck"]["Test"] == ["CMD", *WORKER_PROBE]
    runs = {
        "example-worker": ["python", "-m", "jobqueue.worker", "myapp:worker"],
        "worker-service": ["python", "-m", "worker_svc"],
    }
    for service, argv in runs.items():
        built = image(f"{examples.project}-{service}")
        assert built["RootFS"]["Layers"][: len(layers)] == layers, service
        assert len(built["RootFS"]["Layers"]) == len(layers) + 1, service
        assert (built["Config"]["Entrypoint"] or []) + built["Config"]["Cmd"] == argv, service
    assert [c["Health"] for c in examples.containers("example-worker")] == ["healthy"] * REPLICAS
    # A command given to worker-service's image is the whole command: no entry point of the base is left.
    worker_service = f"{examples.project}-worker-service"
    help_text = ["docker", "run", "--rm", "--network", "none", worker_service, *runs["worker-service"], "--help"]
    done = subprocess.run(help_text, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DEMO_JOB_TYPES" in done.stdout


def unused_address(stack: Stack) -> str:
    """An address on the project's network that no container has: a connection to it waits, unanswered.

    Docker hands out addresses from the start of the subnet, so the last one is free.
    """
    subnet = subprocess.run(
        ["docker", "network", "inspect", f"{stack.project}_jobqueue", "--format", "{{(index .IPAM.Config 0).Subnet}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    return str(ipaddress.ip_network(subnet)[-2])


async def test_both_types_answer_json_values_and_both_replicas_work(examples: Stack) -> None:
    workers = [c["ID"] for c in examples.containers("example-worker")]
    assert len(workers) == REPLICAS
    before = {worker: examples.metric(worker, COMPLETED) for worker in workers}
    # The stack's own services, by their names on the compose network; a port nothing listens on; an address
    # nothing answers from (its ARP requests go unanswered for longer than the payload's timeout).
    targets = Targets(
        opened=[("rabbitmq", 5672), ("postgres", 5432), ("job-service", 5002)],
        refused=[("job-service", 1)],
        silent=[(unused_address(examples), 80)],
    )
    async with await new_user(examples) as jobs:
        ports = await check_ports_runs_then_completes(jobs, targets)
        assert (ports.status, ports.result_value) == (JobStatus.COMPLETED, targets.result())

        primes = await jobs.submit_and_wait("count_primes", 1_000_000, timeout=60)
        assert (primes.status, primes.result_value) == (JobStatus.COMPLETED, PRIMES_BELOW_A_MILLION)

        # Enough jobs at once that RabbitMQ's round robin hands some to each replica.
        batch = await jobs.submit_many([("count_primes", 200_000 + i) for i in range(40)])
        for job in batch:
            done = await jobs.wait(job.id, timeout=120)
            assert done.status == JobStatus.COMPLETED, done.error
    took = {worker[:12]: examples.metric(worker, COMPLETED) - before[worker] for worker in workers}
    assert all(count > 0 for count in took.values()), took
    assert sum(took.values()) == 42, took


async def test_a_payload_that_breaks_the_schema_is_refused_with_its_path(examples: Stack) -> None:
    payload = {"targets": [{"host": "rabbitmq", "port": 5672}, {"host": "rabbitmq", "port": 70000}]}
    async with await new_user(examples) as jobs:
        with pytest.raises(JobQueueError) as refused:
            await jobs.submit("check_ports", payload)
    assert refused.value.code.name == "INVALID_ARGUMENT"
    assert [violation.field for violation in refused.value.field_violations] == ["payload.targets[1].port"]

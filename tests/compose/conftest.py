"""The compose suite's engine and stack: a real Docker engine, and one project of the suite's own.

`engine` runs scripts/containers/engine.sh (which installs and starts Docker where
none runs: the suite never skips for want of one) and standins.sh (the base
images, pulled or, with no registry, built as stand-ins, with the variable that
points the digest-pinned Python base at its stand-in); it stops the engine at
the end if it started it. Both live as long as this package's tests, not the
whole pytest session: run inside `make test`, the stack and the engine are gone
before the fault suite and the benchmark tests start, so they do not compete
with them for the machine's two cores. `stack` brings the whole compose file up from nothing
(`up --wait --build`, fresh volumes) while watching each server's health, and
removes its containers, networks, volumes and images at the end.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from jobqueue.runtime.health_check import SERVING
from tests.compose.stack import Stack, amqp_accepts, postgres_answers
from tests.support.processes import ROOT, health_status

HARNESS = ROOT / "scripts" / "containers"


@pytest.fixture(scope="package")
def engine() -> Iterator[None]:
    """A Docker engine with Compose v2 and the base images; DOCKER_HOST set for this process and its children."""
    up = subprocess.run([HARNESS / "engine.sh", "up"], capture_output=True, text=True, timeout=900, check=False)
    assert up.returncode == 0, up.stderr
    settings = dict(re.findall(r"(\w+)=(\S+)", up.stdout))
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("DOCKER_HOST", settings["DOCKER_HOST"])
        try:
            images = subprocess.run([HARNESS / "standins.sh"], capture_output=True, text=True, timeout=900, check=False)
            assert images.returncode == 0, images.stderr
            # A base pinned by digest that only a stand-in could provide: the variable naming the stand-in.
            for name, value in re.findall(r"^export (\w+)=(\S+)$", images.stdout, re.MULTILINE):
                environment.setenv(name, value)
            yield
        finally:
            if settings.get("JOBQUEUE_ENGINE_STARTED") == "1":
                subprocess.run([HARNESS / "engine.sh", "down"], timeout=300, check=True)


@dataclass
class Startup:
    """What the servers could do at the moment `docker compose ps` first showed each one healthy."""

    #: Service -> whether it could do its work then (None: not probed).
    able: dict[str, bool | None] = field(default_factory=dict)
    #: Service -> seconds from `up` to its first healthy report.
    healthy_after: dict[str, float] = field(default_factory=dict)


def can_work(stack: Stack, service: str) -> bool | None:
    """Whether ``service`` can do its work right now, asked the way its clients ask."""
    if service == "rabbitmq":
        return amqp_accepts(stack.address("rabbitmq"))
    if service == "postgres":
        return asyncio.run(postgres_answers(stack.database_url()))
    if service == "job-service":
        address = stack.address("job-service")
        return all(health_status(address, name) == SERVING for name in ("postgres", "rabbitmq"))
    if service == "auth-service":
        return health_status(stack.address("auth-service")) == SERVING
    return None  # workers publish no port: test_health checks them through the jobs they run


@pytest.fixture(scope="package")
def startup_and_stack(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Startup, Stack]]:
    stack = Stack(tmp_path_factory.mktemp("compose"))
    startup = Startup()
    began = time.monotonic()
    up_log = stack.log.with_name("up.log")
    with up_log.open("w") as output:
        up = subprocess.Popen(
            stack.argv("up", "--wait", "--build"),
            cwd=ROOT,
            env=stack.environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        while up.poll() is None:
            for container in stack.ps():
                service = container["Service"]
                if container["Health"] == "healthy" and service not in startup.able:
                    startup.healthy_after[service] = time.monotonic() - began
                    startup.able[service] = can_work(stack, service)
            time.sleep(0.2)
        assert up.returncode == 0, f"docker compose up --wait failed:\n{up_log.read_text()}"
        for container in stack.ps():  # healthy so fast that no poll saw it first
            startup.able.setdefault(container["Service"], None)
        yield startup, stack
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        stack.compose("down", "--volumes", "--remove-orphans", "--rmi", "local", "--timeout", "60")


@pytest.fixture(scope="package")
def startup(startup_and_stack: tuple[Startup, Stack]) -> Startup:
    return startup_and_stack[0]


@pytest.fixture
def stack(startup_and_stack: tuple[Startup, Stack]) -> Stack:
    """The suite's running project, checked healthy before each test (a test may leave it restarting)."""
    found = startup_and_stack[1]
    found.wait_healthy()
    return found

"""A compose project of the tests' own, run on a real Docker engine, and the ways the tests look at it.

Every test reaches the containers as a user on this host would: through ports
published on 127.0.0.1, chosen free for this project only (an override file
replaces the compose file's ports with them), so the traffic goes only from this
process to the containers this project started, and the project can run beside a
`make run`, the machine's own PostgreSQL and RabbitMQ, or another checkout's stack.
The containers talk to each other over the project's own compose network, as in
production. Nothing else about docker-compose.yml or the Dockerfiles is changed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from jobqueue.client import JobsClient, connect_auth, connect_jobs
from tests.conftest import UNLIMITED_JOBS
from tests.support.processes import ROOT, free_ports

COMPOSE_FILE = ROOT / "docker-compose.yml"
#: Service -> the port inside its container that the tests publish on a free loopback port.
PUBLISHED = {"auth-service": 5001, "job-service": 5002, "web-service": 5080, "postgres": 5432, "rabbitmq": 5672}
#: Services the tests run several replicas of, and how many host ports (one per replica) they get.
REPLICA_PORTS = {"job-service": 2}
#: The long-running services; `migrate` runs once and exits.
SERVERS = ("rabbitmq", "postgres", "auth-service", "job-service", "worker-service", "web-service")
#: The compose file's development defaults (no .env is read: the project directory has none).
DATABASE = {"user": "jobqueue", "password": "jobqueue-dev", "database": "jobqueue"}
#: Variables compose reads from the tests' environment. A short connection age makes the job service
#: send GOAWAY every few seconds all through the suite, so every test also checks that clients and
#: workers ride it out, and a replica added while workers run gets their reports within seconds.
#: The per-user job limits are lifted as in the other suites (tests/conftest.py): the suite submits
#: 20,000-job backlogs as one user; tests/e2e/test_job_flood.py tests the limits themselves.
ENVIRONMENT = {"MAX_CONNECTION_AGE_SECONDS": "5", **dict.fromkeys(UNLIMITED_JOBS, "1000000")}


def override(ports: dict[str, int]) -> str:
    """An override file that publishes each service's port(s) on 127.0.0.1 from ``ports[service]`` and nothing else."""
    lines = ["services:"]
    for service, container_port in PUBLISHED.items():
        first = ports[service]
        host = f"{first}-{first + REPLICA_PORTS[service] - 1}" if service in REPLICA_PORTS else str(first)
        lines += [f"  {service}:", "    ports: !override", f'      - "127.0.0.1:{host}:{container_port}"']
    return "\n".join(lines) + "\n"


class Stack:
    """`docker compose -p <project>` with this repository's compose file and the tests' port override."""

    def __init__(
        self, directory: Path, *, files: Iterable[Path] = (), environment: dict[str, str] | None = None
    ) -> None:
        """A project of its own; ``files`` are compose files added after the tests' port override
        (docker-compose.production.yml), ``environment`` variables compose reads on top of ENVIRONMENT."""
        self.project = f"jqtest-{uuid.uuid4().hex[:8]}"
        self.files = [COMPOSE_FILE, *files]
        self.extra_environment = dict(environment or {})
        self.ports = {service: free_ports(REPLICA_PORTS.get(service, 1)) for service in PUBLISHED}
        self.override_file = directory / "ports.yml"
        self.override_file.write_text(override(self.ports))
        self.log = directory / "compose.log"

    def argv(self, *args: str) -> list[str]:
        files = [self.files[0], self.override_file, *self.files[1:]]
        return ["docker", "compose", "-p", self.project, *(arg for f in files for arg in ("-f", str(f))), *args]

    def environment(self) -> dict[str, str]:
        return {**os.environ, **ENVIRONMENT, **self.extra_environment}

    def compose(self, *args: str, timeout: float = 600) -> str:
        """Run a compose command; its output, or AssertionError with the output if it fails."""
        done = subprocess.run(
            self.argv(*args),
            cwd=ROOT,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        with self.log.open("a") as log:
            log.write(f"$ docker compose {' '.join(args)}\n{done.stdout}{done.stderr}\n")
        assert done.returncode == 0, f"docker compose {' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done.stdout

    def address(self, service: str, replica: int = 1) -> str:
        """host:port of ``service`` (of its ``replica``-th container, for one with several) on this host."""
        if service not in REPLICA_PORTS:
            return f"127.0.0.1:{self.ports[service]}"
        # Docker gives each replica one port of the range: which one, only it can say.
        return self.compose("port", "--index", str(replica), service, str(PUBLISHED[service]), timeout=60).strip()

    def ps(self) -> list[dict[str, Any]]:
        """`docker compose ps --all` as compose reports it: Service, Name, State, Health, ExitCode, ID, ..."""
        out = self.compose("ps", "--all", "--format", "json", timeout=60).strip()
        if out.startswith("["):  # Compose before 2.21 prints one array
            return list(json.loads(out))
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def containers(self, service: str) -> list[dict[str, Any]]:
        """The running containers of ``service``."""
        return [c for c in self.ps() if c["Service"] == service and c["State"] == "running"]

    def inspect(self, container: str) -> dict[str, Any]:
        out = subprocess.run(
            ["docker", "inspect", container], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        found: dict[str, Any] = json.loads(out)[0]
        return found

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", "--no-log-prefix", service, timeout=60)

    def wait_healthy(self, timeout: float = 120) -> None:
        """Until every running server container reports healthy in `docker compose ps`."""
        deadline = time.monotonic() + timeout
        while True:
            unhealthy = [c["Name"] for c in self.ps() if c["Service"] in SERVERS and c["Health"] != "healthy"]
            if not unhealthy:
                return
            assert time.monotonic() < deadline, f"not healthy after {timeout} s: {unhealthy}"
            time.sleep(0.5)

    def health_check(self, service: str) -> int:
        """Run ``service``'s own health check command in its first container, as Docker runs it; its exit code."""
        container = self.containers(service)[0]["ID"]
        test = self.inspect(container)["Config"]["Healthcheck"]["Test"]
        command = test[1:] if test[0] == "CMD" else ["sh", "-c", test[1]]
        done = subprocess.run(["docker", "exec", container, *command], capture_output=True, timeout=60, check=False)
        return done.returncode

    def metric(self, container: str, name: str) -> float:
        """A service's counter, summed over its labels, read from its /metrics inside its own network namespace."""
        script = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9100/metrics').read().decode())"
        out = subprocess.run(
            ["docker", "exec", container, "python", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return sum(float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line.startswith(f"{name}{{"))

    def database_url(self) -> str:
        d = DATABASE
        return f"postgresql://{d['user']}:{d['password']}@{self.address('postgres')}/{d['database']}"


def amqp_accepts(address: str) -> bool:
    """Whether a broker at ``address`` answers the AMQP 0-9-1 protocol header with Connection.Start."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame = sock.recv(7)
    except OSError:
        return False
    return len(frame) == 7 and frame[0] == 1  # a method frame: Connection.Start


async def postgres_answers(url: str) -> bool:
    """Whether PostgreSQL at ``url`` accepts the credentials and answers a query."""
    try:
        connection = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    try:
        return bool(await connection.fetchval("SELECT 1") == 1)
    finally:
        await connection.close()


async def new_token(stack: Stack) -> str:
    """A token for a user of this test's own, registered and logged in through auth-service."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    async with connect_auth(stack.address("auth-service")) as auth:
        await auth.register(email, "correct horse battery", "Compose Test")
        return await auth.login(email, "correct horse battery")


async def new_user(stack: Stack) -> JobsClient:
    """A user of this test's own, logged in: a jobs client with its token (close it when done)."""
    return connect_jobs(stack.address("job-service"), token=await new_token(stack))


@dataclass
class Backlog:
    """Jobs a test submitted and the result each must end with."""

    expected: dict[str, str] = field(default_factory=dict)

    async def submit(self, jobs: JobsClient, count: int, tag: str) -> None:
        """``count`` reverse_string jobs, 1,000 a call."""
        payloads = [f"{tag} {i}" for i in range(count)]
        stored = await jobs.submit_many([("reverse_string", payload) for payload in payloads])
        self.expected.update({job.id: payload[::-1] for job, payload in zip(stored, payloads, strict=True)})

    async def statuses(self, stack: Stack) -> Counter[str]:
        rows = await self._rows(stack)
        return Counter(row["status"] for row in rows)

    async def _rows(self, stack: Stack) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(stack.database_url(), timeout=10)
        try:
            return list(
                await connection.fetch(
                    "SELECT id::text AS id, status, result FROM jobs WHERE id = ANY($1::uuid[])", list(self.expected)
                )
            )
        finally:
            await connection.close()

    async def wait_until_some_done(self, stack: Stack, timeout: float = 60) -> Counter[str]:
        """Until at least one job, and not every job, is COMPLETED: the backlog is being worked on."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = await self.statuses(stack)
            if statuses["COMPLETED"] > 0:
                assert statuses["COMPLETED"] < len(self.expected), f"the backlog was done too soon: {statuses}"
                return statuses
            assert time.monotonic() < deadline, f"no job completed in {timeout} s: {statuses}"
            await asyncio.sleep(0.1)

    async def wait_all_completed(self, stack: Stack, timeout: float = 240) -> None:
        """Until every job is COMPLETED; then each has exactly its expected result, and none is missing."""
        deadline = time.monotonic() + timeout
        while True:
            rows = await self._rows(stack)
            statuses = Counter(row["status"] for row in rows)
            if statuses["COMPLETED"] == len(self.expected):
                break
            assert time.monotonic() < deadline, f"not done after {timeout} s: {statuses} of {len(self.expected)}"
            await asyncio.sleep(0.5)
        wrong = [row["id"] for row in rows if row["result"] != self.expected[row["id"]]]
        assert len(rows) == len(self.expected)
        assert not wrong, f"{len(wrong)} jobs with a wrong result, e.g. {wrong[:3]}"


def started_at(stack: Stack, services: Iterable[str]) -> dict[str, tuple[str, int]]:
    """Container name -> (start time, restart count), for telling whether a container was restarted."""
    found = {}
    for service in services:
        for container in stack.containers(service):
            state = stack.inspect(container["ID"])
            found[container["Name"]] = (state["State"]["StartedAt"], int(state["RestartCount"]))
    return found

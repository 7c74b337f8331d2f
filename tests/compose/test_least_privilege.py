"""In the running stack, each container holds only its own secrets and logs in with only its own rights.

- Only auth-service can read the token-signing key: dev-secrets gave each service a volume of its
  own, and neither the job service nor a worker (which runs plug-in code) has the key anywhere.
- The services log in to PostgreSQL as their own roles and to RabbitMQ as their own users, which
  the one-shots made: the database's owner and the broker's administrator appear in no service.
- The API ports are published on 127.0.0.1 of the host only, as compose reads the file.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from jobqueue.runtime.secrets import PRIVATE_KEY, PUBLIC_KEY, WORKER_TOKEN
from tests.compose.stack import COMPOSE_FILE, Stack
from tests.support.processes import ROOT

pytestmark = pytest.mark.timeout(600)


def _exec(stack: Stack, service: str, script: str) -> str:
    container = stack.containers(service)[0]["ID"]
    done = subprocess.run(
        ["docker", "exec", container, "sh", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("service", "holds"),
    [
        ("auth-service", {PRIVATE_KEY, PUBLIC_KEY}),
        ("job-service", {PUBLIC_KEY, WORKER_TOKEN}),
        ("worker-service", {WORKER_TOKEN}),
    ],
)
def test_each_service_holds_only_the_secrets_it_reads(stack: Stack, service: str, holds: set[str]) -> None:
    # Every file system but the kernel's: the secrets are on volumes, mounted file systems of their own.
    search = (
        r"find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o -type f "
        rf"\( -name 'jwt-*' -o -name {WORKER_TOKEN} \) -print 2>/dev/null; true"
    )
    found = _exec(stack, service, search).split()
    assert {path.rsplit("/", 1)[-1] for path in found} == holds, found


def test_services_log_in_as_their_own_role_and_user(stack: Stack) -> None:
    sessions = _exec(
        stack,
        "postgres",
        'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -Atc '
        "\"SELECT DISTINCT usename FROM pg_stat_activity WHERE backend_type = 'client backend' "
        'AND usename <> current_user ORDER BY 1"',
    ).split()
    assert sessions == ["jobqueue_auth", "jobqueue_jobs"]
    users = _exec(stack, "rabbitmq", "rabbitmqctl -q list_connections --no-table-headers user").split()
    assert set(users) == {"jobqueue-jobs", "jobqueue-worker"}, users
    refused = _exec(
        stack,
        "postgres",
        'PGPASSWORD=jobqueue-dev psql -h 127.0.0.1 -U jobqueue_jobs -d "$POSTGRES_DB" -Atc '
        "'SELECT password_hash FROM users' 2>&1; true",
    )
    assert "permission denied for table users" in refused


def test_compose_publishes_the_api_ports_on_loopback_only(stack: Stack) -> None:
    # The suite's own override moves the ports; compose's reading of the file alone is what users get.
    done = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        cwd=ROOT,
        env=stack.environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    for service, port in (("auth-service", 5001), ("job-service", 5002)):
        assert [(p["host_ip"], p["target"]) for p in services[service]["ports"]] == [("127.0.0.1", port)]

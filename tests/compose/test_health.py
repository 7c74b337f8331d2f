"""Every server's health check turns healthy only when it can do its work, and `docker compose ps` shows it.

The stack fixture watched `docker compose up --wait` from an empty project and,
the moment `docker compose ps` first showed a server healthy, asked it to do its
work the way its clients do (AMQP handshake, a PostgreSQL query with the
compose credentials, the job service's own dependency checks). With RabbitMQ's
old `rabbitmq-diagnostics ping` check this fails twice, as measured: the broker
shows healthy while AMQP still refuses connections, and the job service, started
on that signal, shows healthy while its own `rabbitmq` dependency check fails.
"""

from __future__ import annotations

import pytest

from tests.compose.conftest import Startup
from tests.compose.stack import SERVERS, Stack

pytestmark = pytest.mark.timeout(1800)


def test_compose_ps_shows_every_server_healthy_and_the_migration_done(startup: Startup, stack: Stack) -> None:
    containers = stack.ps()
    health = {c["Service"]: c["Health"] for c in containers if c["Service"] in SERVERS}
    assert health == dict.fromkeys(SERVERS, "healthy")
    [migrate] = [c for c in containers if c["Service"] == "migrate"]
    assert (migrate["State"], migrate["ExitCode"]) == ("exited", 0)


@pytest.mark.parametrize("service", ["rabbitmq", "postgres", "auth-service", "job-service"])
def test_healthy_means_it_could_already_do_its_work(startup: Startup, service: str) -> None:
    assert startup.able.get(service) is True, (startup.able, startup.healthy_after)

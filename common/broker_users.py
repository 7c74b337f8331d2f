"""Create the services' RabbitMQ users, each with only its permissions: ``python -m common.broker_users``.

Compose runs this once per ``up`` (the ``broker-users`` service), as the broker's
administrator, before the job service and the workers start; it is idempotent,
and sets each password again, so changing one and running ``up`` rotates it.
The permissions are gen/jobqueue/runtime/rabbitmq.py's, for RABBITMQ_QUEUE: the job service may
declare the topology and publish jobs and notices; a worker may declare it,
consume jobs and hear notices, and publish nothing (tests/integration/
test_broker_users.py holds the broker to that).

It talks to the management API (the compose image has it; AMQP cannot manage
users), with the standard library only. Variables (a password may instead be
given as a file, ``<NAME>_FILE``, as compose secrets are):

- RABBITMQ_API_URL (``http://rabbitmq:15672``), RABBITMQ_VHOST (``/``),
  RABBITMQ_ADMIN_USER and RABBITMQ_ADMIN_PASSWORD: who creates the users;
- JOB_RABBITMQ_USER / JOB_RABBITMQ_PASSWORD, WORKER_RABBITMQ_USER /
  WORKER_RABBITMQ_PASSWORD: the users made;
- RABBITMQ_QUEUE: the queue their permissions are about.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from jobqueue.runtime import logs
from jobqueue.runtime.rabbitmq import Permissions, Topology, job_service_permissions, worker_permissions

log = logging.getLogger("broker_users")

#: How long to wait for the management API to answer (it starts a few seconds after AMQP).
API_WAIT_SECONDS = 120.0


class SetupError(Exception):
    """A variable is missing, or the management API refused a request."""


def value(environ: Mapping[str, str], name: str, default: str | None = None) -> str:
    """``name`` from ``environ``, else the file ``<name>_FILE`` names, else ``default`` (SetupError if none)."""
    if inline := environ.get(name, ""):
        return inline
    if path := environ.get(f"{name}_FILE", ""):
        return Path(path).read_text().strip()
    if default is None:
        raise SetupError(f"{name} or {name}_FILE must be set")
    return default


class ManagementApi:
    """The few calls of RabbitMQ's HTTP API we need, as one administrator."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self._url = url.rstrip("/")
        self._authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def put(self, path: str, body: Mapping[str, str]) -> None:
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's setting
            f"{self._url}/api/{path}",
            data=json.dumps(body).encode(),
            method="PUT",
            headers={"Authorization": self._authorization, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10):  # noqa: S310
                pass
        except urllib.error.HTTPError as error:
            raise SetupError(f"PUT /api/{path}: {error.code} {error.reason}") from None

    def wait_ready(self, timeout: float) -> None:
        """Return once the API answers an authenticated request; SetupError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            request = urllib.request.Request(  # noqa: S310
                f"{self._url}/api/whoami", headers={"Authorization": self._authorization}
            )
            try:
                with urllib.request.urlopen(request, timeout=5):  # noqa: S310
                    return
            except urllib.error.HTTPError as error:
                if error.code in (401, 403):
                    raise SetupError(f"the management API refused the administrator: {error.code}") from None
                problem = f"{error.code} {error.reason}"
            except OSError as error:
                problem = str(error)
            if time.monotonic() > deadline:
                raise SetupError(f"the management API at {self._url} did not answer in {timeout:g} s: {problem}")
            time.sleep(1)

    def ensure_user(self, vhost: str, name: str, password: str, permissions: Permissions) -> None:
        """Create or update user ``name`` (no tags: no management access) with ``permissions`` on ``vhost``."""
        self.put(f"users/{quote(name, safe='')}", {"password": password, "tags": ""})
        self.put(
            f"permissions/{quote(vhost, safe='')}/{quote(name, safe='')}",
            {"configure": permissions.configure, "write": permissions.write, "read": permissions.read},
        )


def set_up(environ: Mapping[str, str]) -> list[str]:
    """Create the job service's and the workers' users as ``environ`` says; returns their names."""
    api = ManagementApi(
        value(environ, "RABBITMQ_API_URL", "http://rabbitmq:15672"),
        value(environ, "RABBITMQ_ADMIN_USER"),
        value(environ, "RABBITMQ_ADMIN_PASSWORD"),
    )
    vhost = value(environ, "RABBITMQ_VHOST", "/")
    topology = Topology(value(environ, "RABBITMQ_QUEUE", "job_queue"))
    users = [
        (
            value(environ, "JOB_RABBITMQ_USER"),
            value(environ, "JOB_RABBITMQ_PASSWORD"),
            job_service_permissions(topology),
        ),
        (
            value(environ, "WORKER_RABBITMQ_USER"),
            value(environ, "WORKER_RABBITMQ_PASSWORD"),
            worker_permissions(topology),
        ),
    ]
    api.wait_ready(API_WAIT_SECONDS)
    for name, password, permissions in users:
        api.ensure_user(vhost, name, password, permissions)
        log.info("broker user ready", extra={"user": name, "vhost": vhost})
    return [name for name, _, _ in users]


def main() -> int:
    logs.setup("broker_users")
    try:
        set_up(os.environ)
    except (SetupError, OSError) as error:
        log.error("broker users not set up", extra={"error": str(error)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

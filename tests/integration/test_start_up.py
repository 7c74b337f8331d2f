"""How every service starts and stops, run as real processes.

A port it cannot listen on stops it at once, saying which, without a traceback; an APP_ENV it does not
know is refused; no secret and no URL password reaches its log; a crashed background task stops it with exit 1.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from jobqueue.runtime.secrets import PRIVATE_KEY
from tests.support.processes import SERVICE_ROLES, ServiceProcess, free_port

#: (module, the variable of each port it listens on)
PORTS = [
    ("auth_svc", "AUTH_PORT"),
    ("auth_svc", "METRICS_PORT"),
    ("job_svc", "JOB_PORT"),
    ("job_svc", "METRICS_PORT"),
    ("worker_svc", "WORKER_HEALTH_PORT"),
    ("worker_svc", "METRICS_PORT"),
]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process (this test) is listening on."""
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))  # the services listen on every interface by default
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize(("module", "variable"), PORTS)
def test_a_taken_port_stops_the_service_with_a_clear_line(
    module: str, variable: str, taken_port: int, service_env: dict[str, str], tmp_path: Path
) -> None:
    # Every port free but the one under test.
    ports = {"AUTH_PORT", "JOB_PORT", "WORKER_HEALTH_PORT", "METRICS_PORT"}
    env = {**service_env, **{name: str(free_port()) for name in ports}, variable: str(taken_port)}
    process = ServiceProcess(module, env, tmp_path / f"{module}.log")
    code = process.exit_code()
    output = process.output()
    assert code == 1, output
    assert f":{taken_port}" in output, output
    assert "Traceback" not in output, output


SERVICES = ["auth_svc", "job_svc", "worker_svc"]


@pytest.mark.parametrize("module", SERVICES)
def test_every_service_refuses_an_app_env_it_does_not_know(
    module: str, service_env: dict[str, str], tmp_path: Path
) -> None:
    # Before the settings base, the job service and the worker took "prod" for development and
    # generated development secrets to run with.
    never_created = tmp_path / "dev-secrets"
    env = {**service_env, "APP_ENV": "prod", "DEV_SECRETS_DIR": str(never_created)}
    process = ServiceProcess(module, env, tmp_path / f"{module}.log")
    code = process.exit_code()
    output = process.output()
    assert code == 2, output
    assert output == f"{module}: APP_ENV='prod' must be one of development, production\n"
    assert not never_created.exists()


def _wait_for_line(process: ServiceProcess, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.output():
        assert process.process.poll() is None, process.output()
        assert time.monotonic() < deadline, f"no {text!r} after {timeout} s:\n{process.output()}"
        time.sleep(0.1)


def _starting_line(output: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    (starting,) = [line for line in lines if line["msg"] == "starting"]
    return dict(starting["settings"])


def test_no_service_logs_a_secret_or_a_url_password(
    service_env: dict[str, str], secrets_dir: Path, tmp_path: Path
) -> None:
    database = urlsplit(service_env["DATABASE_URL"])
    # The test database trusts local connections, so the password is never checked: only shown, or not.
    with_password = database._replace(netloc=f"{database.username}:hunter2-db@{database.netloc.split('@')[-1]}")
    private_key = (secrets_dir / PRIVATE_KEY).read_text()
    key_body = private_key.splitlines()[1]
    token = "hunter2-worker-token"
    env = {
        **service_env,
        "DATABASE_URL": with_password.geturl(),
        "JWT_PRIVATE_KEY": private_key,
        "WORKER_TOKEN": token,
        "AUTH_PORT": str(free_port()),
        "JOB_PORT": str(free_port()),
        "WORKER_HEALTH_PORT": str(free_port()),
        "JOB_SERVICE_ADDR": f"127.0.0.1:{free_port()}",
    }
    started = {"auth_svc": "auth service listening", "job_svc": "job service listening", "worker_svc": "worker started"}
    processes = {module: ServiceProcess(module, env, tmp_path / f"{module}.log") for module in started}
    try:
        for module, line in started.items():
            _wait_for_line(processes[module], line)
    finally:
        codes = {module: process.stop() for module, process in processes.items()}
    for module, process in processes.items():
        output = process.output()
        assert codes[module] == 0, output
        for secret in ("hunter2", key_body, "guest:guest@"):
            assert secret not in output, f"{module} logged {secret!r}:\n{output}"
        settings = _starting_line(output)
        if "database_url" in settings:
            # As the service's own role (tests/support/processes.py), the password kept and hidden.
            role = SERVICE_ROLES[module].name
            host = database.netloc.split("@")[-1]
            assert settings["database_url"] == with_password._replace(netloc=f"{role}:***@{host}").geturl()
        if "rabbitmq_url" in settings:
            assert settings["rabbitmq_url"].startswith("amqp://guest:***@")
    assert _starting_line(processes["auth_svc"].output())["jwt_private_key"] == "***"
    assert _starting_line(processes["job_svc"].output())["worker_token"] == "***"
    assert _starting_line(processes["worker_svc"].output())["worker_token"] == "***"


CRASHING_RELAY = '''
"""The real job service, except that its outbox relay crashes half a second after it starts."""
import asyncio
import runpy

from job_svc.relay import OutboxRelay


async def crash(self: OutboxRelay) -> None:
    await asyncio.sleep(0.5)
    raise RuntimeError("relay bug injected by the test")


OutboxRelay.run = crash  # type: ignore[method-assign]
runpy.run_module("job_svc", run_name="__main__")
'''


def test_a_crashed_background_task_stops_the_service_with_exit_1(service_env: dict[str, str], tmp_path: Path) -> None:
    # Before jobqueue.runtime.service, the job service never looked at its relay task again: the crash
    # vanished and the service kept answering SERVING while nothing was published.
    (tmp_path / "crashing_relay.py").write_text(CRASHING_RELAY)
    # The test's own PYTHONPATH stays behind it: it may be what finds jobqueue (gen/).
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = {**service_env, "JOB_PORT": str(free_port()), "PYTHONPATH": path}
    process = ServiceProcess("crashing_relay", env, tmp_path / "job_svc.log")
    code = process.exit_code()
    output = process.output()
    assert code == 1, output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    (crash,) = [line for line in lines if line.get("task") == "relay"]
    assert crash["msg"] == "background task crashed; stopping"
    assert "RuntimeError: relay bug injected by the test" in crash["exc"]
    # It went through the service's own graceful stop, not a sudden exit.
    messages = [line["msg"] for line in lines]
    assert messages.index("background task crashed; stopping") < messages.index("job service stopped")

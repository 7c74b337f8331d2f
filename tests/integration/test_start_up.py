"""A service that cannot listen on a port it was given stops at once, saying which, without a traceback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ServiceProcess, free_port

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

"""End-to-end tests: each module runs against a database of its own; `make_run` runs the system as `make run` does."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import module_database  # noqa: F401 - the fixture `database_url`
from tests.support.processes import ServiceProcess, free_port, free_ports


class RunningSystem:
    """`scripts/run_system.py` (what `make run` runs) as a process, and the environment it was given."""

    def __init__(self, process: ServiceProcess, env: dict[str, str]) -> None:
        self.process = process
        self.env = env

    @property
    def job_address(self) -> str:
        """Where the job service listens."""
        return f"127.0.0.1:{self.env['JOB_PORT']}"

    def pid(self, child: str) -> int:
        """The pid the runner last said ``child`` has (in its banner, or when it restarted it)."""
        said = re.findall(rf"^run +\| +(?:{child} +\S.*?pid (\d+)|{child} restarted, pid (\d+))", self.output(), re.M)
        assert said, f"the runner never named {child}'s pid"
        return int("".join(said[-1]))

    def output(self) -> str:
        """Everything the runner and its children printed so far."""
        return self.process.output()

    def localize(self, text: str) -> str:
        """``text`` with the default addresses replaced by this system's."""
        return text.replace("localhost:5001", f"127.0.0.1:{self.env['AUTH_PORT']}").replace(
            "localhost:5002", f"127.0.0.1:{self.env['JOB_PORT']}"
        )


@pytest.fixture
def make_run_env() -> dict[str, str]:
    """Variables a test module adds to its `make_run` system's environment (override it there)."""
    return {}


@pytest.fixture
def make_run(
    service_env: dict[str, str], make_run_env: dict[str, str], tmp_path: Path, purge_queues: None
) -> Iterator[RunningSystem]:
    """`scripts/run_system.py --workers 2`, the command behind `make run` (web dashboard included), with this test's
    ports and queue."""
    env = {
        **os.environ,
        **service_env,
        **make_run_env,
        "AUTH_PORT": str(free_port()),
        "JOB_PORT": str(free_port()),
        # Worker i listens on WORKER_HEALTH_PORT + i: both must be free, not just the first.
        "WORKER_HEALTH_PORT": str(free_ports(2)),
        # The dashboard too: another make run may hold its default port.
        "WEB_PORT": str(free_port()),
        # grpcurl, and the python3 the README's commands call, come from the project's virtualenv.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    argv = [sys.executable, "scripts/run_system.py", "--workers", "2"]
    process = ServiceProcess("run_system", env, tmp_path / "run_system.log", argv=argv)
    try:
        workers = [f"127.0.0.1:{int(env['WORKER_HEALTH_PORT']) + i}" for i in range(2)]
        for address in [f"127.0.0.1:{env['AUTH_PORT']}", f"127.0.0.1:{env['JOB_PORT']}", *workers]:
            process.wait_healthy(address, timeout=60)
        yield RunningSystem(process, env)
    finally:
        code = process.stop(60, sig=signal.SIGINT)  # Ctrl-C
    assert code == 0, process.output()

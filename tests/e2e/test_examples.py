"""The example application (examples/myapp) run as examples/README.md runs it without containers.

`PYTHONPATH=examples WORKER_APP=myapp:worker make run`: the system with the
example's workers in place of the built-in ones (tests/compose/test_examples.py
runs its image). Both types complete with their results as JSON values, the
I/O-bound one having opened real TCP connections to the system's own services.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import grpc
import pytest

from jobqueue.client import JobQueueError, JobStatus, connect_auth, connect_jobs
from tests.e2e.conftest import RunningSystem
from tests.support.examples import (
    APP,
    FOLDER,
    PRIMES_BELOW_A_MILLION,
    Targets,
    check_ports_runs_then_completes,
    silent_port,
)
from tests.support.processes import free_port
from tests.support.readme import readme_block, run_grpcurl_walkthrough

README = FOLDER / "README.md"


@pytest.fixture
def make_run_env() -> dict[str, str]:
    return {"WORKER_APP": APP, "PYTHONPATH": os.pathsep.join(filter(None, [str(FOLDER), os.environ.get("PYTHONPATH")]))}


async def token(system: RunningSystem, email: str, password: str) -> str:
    async with connect_auth(system.localize("localhost:5001")) as auth:
        await auth.register(email, password, "Examples")
        return await auth.login(email, password)


async def test_the_example_types_answer_json_values_and_refuse_bad_payloads(make_run: RunningSystem) -> None:
    opened = [("127.0.0.1", int(make_run.env["AUTH_PORT"])), ("localhost", int(make_run.env["JOB_PORT"]))]
    async with connect_jobs(
        make_run.job_address, token=await token(make_run, "examples@example.com", "correct horse battery")
    ) as jobs:
        with silent_port() as silent:
            targets = Targets(opened, refused=[("127.0.0.1", free_port())], silent=[("127.0.0.1", silent)])
            ports = await check_ports_runs_then_completes(jobs, targets)
        assert (ports.status, ports.result_value) == (JobStatus.COMPLETED, targets.result())

        primes = await jobs.submit_and_wait("count_primes", 1_000_000, timeout=60)
        assert (primes.status, primes.result_value) == (JobStatus.COMPLETED, PRIMES_BELOW_A_MILLION)

        with pytest.raises(JobQueueError) as refusal:
            await jobs.submit("count_primes", 1)
        assert refusal.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [violation.field for violation in refusal.value.field_violations] == ["payload"]


def on_ports(system: RunningSystem, text: str) -> str:
    """``text`` with the default ports, wherever they appear (the targets check_ports is given too), this system's."""
    return re.sub(r"\b500([12])\b", lambda port: system.env[("AUTH_PORT", "JOB_PORT")[int(port[1]) - 1]], text)


async def test_the_readmes_commands_and_program_work_as_written(make_run: RunningSystem) -> None:
    """examples/README.md's grpcurl commands and Python program, as the walkthrough's user, print what it says."""
    walkthrough_user = await token(make_run, "test@example.com", "password123")
    commands = on_ports(make_run, readme_block("grpcurl", README))
    done, _ = run_grpcurl_walkthrough(f"export TOKEN={walkthrough_user}\n{commands}", make_run.env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count('"status": "JOB_STATUS_QUEUED"') == 2

    program = on_ports(make_run, readme_block("python", README))
    ran = subprocess.run(
        [sys.executable, "-c", program], env=make_run.env, capture_output=True, text=True, timeout=120, check=False
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # Each print's comment is what it prints (as a value: the order of a JSON object's keys is not kept).
    printed = [ast.literal_eval(line) for line in ran.stdout.splitlines()]
    assert printed == [ast.literal_eval(comment) for comment in re.findall(r"print\(.*\)  # (.*)", program)]

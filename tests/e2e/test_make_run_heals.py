"""`make run` heals like a process manager: a child that dies is restarted while the rest keep serving.

The real system under the real runner (scripts/run_system.py), a backlog of
3,000 jobs, then SIGKILL to a worker and, once it is back, to the job service:
every job must still complete with its right result, the runner must still be
up, and its output must say what happened.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningSystem
from tests.support.clients import mint_token
from tests.support.load import FINAL, Spec, check_outcomes, list_all, mixed, submit, wait_all_final, wait_started

#: Half of them sleep 10 ms in a handler process (one per worker), so the backlog lasts several seconds.
JOBS = 3000


@pytest.fixture
def make_run_env() -> dict[str, str]:
    return {"WORKER_APP": "tests.support.flaky_jobs:worker"}


def backlog() -> list[Spec]:
    return [spec for pair in zip(mixed(JOBS // 2), [Spec("sleeps", 0.01)] * (JOBS // 2), strict=True) for spec in pair]


def wait_for_line(system: RunningSystem, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in system.output():
        assert time.monotonic() < deadline, f"the runner never said {text!r}:\n{system.output()[-3000:]}"
        time.sleep(0.1)


def test_a_killed_worker_and_a_killed_job_service_are_restarted_and_every_job_completes(
    make_run: RunningSystem, secrets_dir: Path
) -> None:
    token = mint_token(secrets_dir)
    specs = asyncio.run(submit(make_run.job_address, token, backlog()))
    wait_started(make_run.job_address, token, 100)

    worker = make_run.pid("worker-1")
    os.kill(worker, signal.SIGKILL)
    wait_for_line(make_run, "worker-1 exited unexpectedly with signal SIGKILL; restarting it in ")
    wait_for_line(make_run, "worker-1 restarted, pid ")
    assert make_run.pid("worker-1") != worker

    unfinished = sum(j.status not in FINAL for j in asyncio.run(list_all(make_run.job_address, token)).values())
    assert unfinished > 0, "the backlog was done before the job service could be killed under it"
    job = make_run.pid("job")
    os.kill(job, signal.SIGKILL)
    wait_for_line(make_run, "job exited unexpectedly with signal SIGKILL; restarting it in ")
    wait_for_line(make_run, "job restarted, pid ")
    make_run.process.wait_healthy(make_run.job_address, timeout=60)

    jobs = asyncio.run(wait_all_final(make_run.job_address, token, set(specs), timeout=240))
    check_outcomes(jobs, specs)
    assert make_run.process.returncode is None, "the runner stopped"
    output = make_run.output()
    assert "stopping the rest" not in output
    assert "CRASH-LOOPING" not in output
    assert "leaked semaphore" not in output  # the SIGKILLed worker's resource tracker stays quiet
    print(f"{JOBS} jobs, {unfinished} unfinished when the job service was killed; all completed")
    # The fixture then stops it with Ctrl-C and requires exit 0: every child was up and stopped cleanly.

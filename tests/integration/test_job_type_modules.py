"""JOB_TYPE_MODULES in real processes: handler processes load the modules; a worker refuses one it cannot load.

The job service reads no modules: it learns the types from the workers (DeclareJobTypes,
tests/integration/test_job_types.py).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.processes import ROOT
from worker_svc.handlers import load_job_types
from worker_svc.runner import HandlerError, Runner

FLAKY = "tests.support.flaky_jobs"


@pytest.fixture
async def runner() -> AsyncIterator[Runner]:
    """A runner in a worker that loaded FLAKY, as __main__ does."""
    runner = Runner(load_job_types([FLAKY]), processes=1)
    yield runner
    await runner.close()


async def test_handler_processes_load_the_same_modules(runner: Runner) -> None:
    # always_fails is cpu_bound: its handler runs in a spawned pool process, which
    # knows the type only if its initializer loaded the module (else: KeyError, not the handler's error).
    with pytest.raises(HandlerError, match=r"^AlwaysFails: "):
        await runner.run("always_fails", "x")
    assert (await runner.run("fibonacci_calc", 10.0)).text == "55"
    assert (await runner.run("fibonacci_calc", 5000.0)).text.startswith("38789684543883256337")


def test_a_worker_refuses_to_start_with_a_module_it_cannot_load(tmp_path: Path) -> None:
    service = "worker_svc"
    env = {"PATH": "/usr/bin:/bin", "DEV_SECRETS_DIR": str(tmp_path), "JOB_TYPE_MODULES": f"{FLAKY},no_such_jobs"}
    done = subprocess.run(
        [sys.executable, "-m", service], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert f"{service}: JOB_TYPE_MODULES: module 'no_such_jobs' cannot be imported" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("service", "reads"), [("worker_svc", True), ("job_svc", False)])
def test_help_documents_the_setting_where_it_is_read(service: str, reads: bool) -> None:
    done = subprocess.run(
        [sys.executable, "-m", service, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert ("JOB_TYPE_MODULES" in done.stdout) is reads

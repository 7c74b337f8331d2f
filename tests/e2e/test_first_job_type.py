"""The README's "Your first job type", run as written: its file, its `make run` command and its grpcurl submission.

The file goes where the README says to put it, but in a folder of the test's own
(on PYTHONPATH) rather than the checkout; the command's WORKER_APP is given to
the system the make_run fixture starts as `make run` does; the submission runs
in bash with a token of a user of the test's own. Then the job's result is the
one the README shows, and the payloads the README says are refused are.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import grpc
import pytest

from jobqueue.client import JobQueueError, JobStatus, connect_auth, connect_jobs
from tests.e2e.conftest import RunningSystem
from tests.support.readme import README, readme_block

COMMAND = re.compile(r"^WORKER_APP=(?P<module>\w+):(?P<attribute>\w+) make run$")


def run_command() -> tuple[re.Match[str], str]:
    """The README's `make run` line, parsed, and the commands after it."""
    first, _, rest = readme_block("first-run").partition("\n")
    command = COMMAND.match(first)
    assert command, f"not the one command to run the worker: {first}"
    return command, rest


@pytest.fixture
def make_run_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    command, _ = run_command()
    folder = tmp_path_factory.mktemp("first-type")
    assert f"Put this in `{command['module']}.py`" in README
    (folder / f"{command['module']}.py").write_text(readme_block("first-type"))
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    return {"WORKER_APP": f"{command['module']}:{command['attribute']}", "PYTHONPATH": path}


async def test_the_first_job_type_runs_as_written(make_run: RunningSystem) -> None:
    async with connect_auth(make_run.localize("localhost:5001")) as auth:
        await auth.register("first@example.com", "correct horse battery", "First")
        token = await auth.login("first@example.com", "correct horse battery")
    _, submission = run_command()
    done = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{make_run.localize(submission)}"],
        env={**make_run.env, "TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = json.loads(done.stdout)["job"]["id"]

    async with connect_jobs(make_run.job_address, token=token) as jobs:
        job = await jobs.wait(job_id, timeout=30)
        assert job.status == JobStatus.COMPLETED, job.error
        assert f'"result_value": {json.dumps(job.result_value)}' in README
        for payload in ("", 42):
            with pytest.raises(JobQueueError) as refusal:
                await jobs.submit("greet", payload)
            assert refusal.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert [violation.field for violation in refusal.value.field_violations] == ["payload"]

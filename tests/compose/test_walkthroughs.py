"""The README's grpcurl and Python walkthroughs, run as written against the containers.

The same blocks tests/e2e/test_walkthrough.py runs against `make run`; only the
addresses change, to the ports this suite published for its own project.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compose.stack import Stack
from tests.support.readme import readme_block, run_grpcurl_walkthrough, wait_listed_completed

pytestmark = pytest.mark.timeout(1800)


def localize(stack: Stack, text: str) -> str:
    return text.replace("localhost:5001", stack.address("auth-service")).replace(
        "localhost:5002", stack.address("job-service")
    )


def user_env() -> dict[str, str]:
    """grpcurl, and the python3 the README's commands call, from the project's virtualenv."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def test_the_grpcurl_walkthrough_works_against_the_containers(stack: Stack) -> None:
    script = localize(stack, readme_block("grpcurl"))
    done, token = run_grpcurl_walkthrough(script, user_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "jobqueue.jobs.v1.JobService" in done.stdout
    assert '"status": "SERVING"' in done.stdout
    assert done.stdout.count('"status": "JOB_STATUS_QUEUED"') >= 3
    list_jobs = localize(
        stack,
        'grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d \'{"page_size": 10}\' '
        "localhost:5002 jobqueue.jobs.v1.JobService/ListJobs",
    )
    jobs = wait_listed_completed(list_jobs, {**user_env(), "TOKEN": token})
    assert {(job["type"], job["result"]) for job in jobs} == {
        ("reverse_string", "dlrow olleh"),
        ("uppercase_text", "HELLO WORLD"),
        ("fibonacci_calc", "55"),
        ("reverse_string", "tnegru"),
        ("reverse_string", "em hctaw"),  # the job WatchJob followed to the end
    }
    assert '"result": "em hctaw"' in done.stdout  # printed by the watch itself


def test_the_python_walkthrough_works_against_the_containers(stack: Stack) -> None:
    done = subprocess.run(
        [sys.executable, "-c", localize(stack, readme_block("python"))],
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["reverse_string dlrow olleh", "uppercase_text HELLO WORLD", "fibonacci_calc 55"]
    assert "COMPLETED 832040" in lines  # the last state jobs.watch() yielded
    assert lines[-1] == "batch 1200 9911 boj"

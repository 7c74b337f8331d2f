"""The README's walkthroughs, run as written against the system started the way `make run` starts it.

The commands are read from README.md itself (between the walkthrough markers),
so the README cannot drift from what works. Only the addresses are changed, to
the ports this test's system listens on.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from tests.e2e.conftest import RunningSystem
from tests.support.processes import ROOT

README = (ROOT / "README.md").read_text()


def readme_block(name: str) -> str:
    """The fenced code block between `<!-- walkthrough:NAME ... -->` and `<!-- /walkthrough:NAME -->`."""
    match = re.search(
        rf"<!-- walkthrough:{name}\b.*?-->\s*```\w*\n(.*?)```\s*<!-- /walkthrough:{name} -->", README, re.S
    )
    assert match, f"README.md has no walkthrough:{name} block"
    return match.group(1)


def test_the_grpcurl_walkthrough_works_as_written(make_run: RunningSystem) -> None:
    script = make_run.localize(readme_block("grpcurl"))
    done = subprocess.run(
        ["bash", "-c", f'set -euo pipefail\n{script}\necho "TOKEN=$TOKEN"'],
        env=make_run.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "jobqueue.jobs.v1.JobService" in done.stdout
    assert '"status": "SERVING"' in done.stdout
    assert done.stdout.count('"status": "JOB_STATUS_QUEUED"') >= 3  # each CreateJob answered at once
    token = done.stdout.rsplit("TOKEN=", 1)[1].strip()

    list_command = make_run.localize(
        'grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d \'{"page_size": 10}\' '
        "localhost:5002 jobqueue.jobs.v1.JobService/ListJobs"
    )
    assert list_command.split(" -d ")[0].replace("$TOKEN", "") in make_run.localize(script).replace("$TOKEN", "")
    deadline = time.monotonic() + 60
    while True:
        listed = subprocess.run(
            ["bash", "-c", list_command],
            env={**make_run.env, "TOKEN": token},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        jobs = json.loads(listed.stdout)["jobs"]
        if all(job["status"] == "JOB_STATUS_COMPLETED" for job in jobs):
            break
        assert time.monotonic() < deadline, listed.stdout
        time.sleep(0.2)
    results = {(job["type"], job["result"]) for job in jobs}
    assert results == {
        ("reverse_string", "dlrow olleh"),
        ("uppercase_text", "HELLO WORLD"),
        ("fibonacci_calc", "55"),
        ("reverse_string", "tnegru"),
    }


def test_the_python_walkthrough_works_as_written(make_run: RunningSystem) -> None:
    program = make_run.localize(readme_block("python"))
    done = subprocess.run(
        [sys.executable, "-c", program],
        env=make_run.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["reverse_string dlrow olleh", "uppercase_text HELLO WORLD", "fibonacci_calc 55"]
    assert any(line.endswith(" 55") for line in lines[3:-1])
    assert lines[-1] == "batch 1200 9911 boj"

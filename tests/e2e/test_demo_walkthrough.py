"""The README's demo walkthrough, run as written against `DEMO_JOB_TYPES=true make run`, after the first walkthrough.

A newcomer runs the grpcurl walkthrough first (it registers the user and
leaves $TOKEN set), then the demo's commands, in the same shell; so does this
test. Each step's outcome is read back from the JSON grpcurl printed.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from tests.e2e.conftest import RunningSystem
from tests.support.processes import ROOT
from tests.support.readme import README, readme_block
from worker_svc import demo as demo_types

#: Printed between the two walkthroughs, to tell their output apart.
BETWEEN = "=== the demo walkthrough starts here ==="


@pytest.fixture
def make_run_env() -> dict[str, str]:
    return {"DEMO_JOB_TYPES": "true"}


def documents(output: str) -> list[dict[str, Any]]:
    """The JSON documents grpcurl printed, in order: each starts with `{` at the start of a line."""
    decoder = json.JSONDecoder()
    return [decoder.raw_decode(output, start.start())[0] for start in re.finditer(r"^\{", output, re.M)]


def shown_dead_job() -> str:
    """The lines of GetJob's answer the README shows for the dead job of step 3."""
    match = re.search(r"<!-- demo:dead-job\b.*?-->\s*```\w*\n(.*?)```", README, re.S)
    assert match, "README.md shows no dead job (<!-- demo:dead-job --> block)"
    return match.group(1)


def test_the_demo_walkthrough_works_as_written(make_run: RunningSystem) -> None:
    script = make_run.localize(f"{readme_block('grpcurl')}\necho '{BETWEEN}'\n{readme_block('demo')}")
    done = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{script}"],
        cwd=ROOT,  # where `python -m auth_svc.admin` is found, as for a newcomer in their clone
        env=make_run.env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    demo = done.stdout.split(BETWEEN, 1)[1]
    cancelled, retried, dead, rerun, rerun_done, dead_alone, listed, rerun_all, revived = documents(demo)

    # 1. Cancelled while it ran: it had started, and the worker stopped its handler.
    assert cancelled["job"]["status"] == "JOB_STATUS_CANCELLED"
    assert cancelled["job"]["type"] == "sleep"
    assert "started_at" in cancelled["job"], "cancelled before it ran: the walkthrough shows a queued job"
    assert "job cancelled while running; handler stopped" in make_run.output()

    # 2. Retried with backoff until its third attempt succeeded.
    assert (retried["job"]["status"], retried["job"]["attempts"]) == ("JOB_STATUS_COMPLETED", 3)
    assert retried["job"]["result"] == "succeeded on attempt 3, after 2 failures"

    # 3. Dead after its two attempts, its error naming the exception and the handler's line, as the README shows.
    assert (dead["job"]["status"], dead["job"]["attempts"]) == ("JOB_STATUS_FAILED", 2)
    raise_line = demo_types.fail.__code__.co_firstlineno + 8  # the raise, below its decorator
    assert dead["job"]["error"] == (
        f"DemoFailure: attempt 2 fails on purpose (the first 3 do)\n  worker_svc/demo.py:{raise_line} in fail"
    )
    assert shown_dead_job() in demo

    # 4. Re-run by its owner: attempts kept counting, the 4th completed.
    assert rerun["job"]["status"] == "JOB_STATUS_QUEUED"
    assert rerun["job"]["id"] == dead["job"]["id"]
    assert (rerun_done["job"]["status"], rerun_done["job"]["attempts"]) == ("JOB_STATUS_COMPLETED", 4)

    # 5. As an operator: the one dead job listed, re-run, and completed on its second attempt.
    assert (dead_alone["job"]["status"], dead_alone["job"]["attempts"]) == ("JOB_STATUS_FAILED", 1)
    assert "test@example.com is now an operator" in demo
    assert [job["id"] for job in listed["jobs"]] == [dead_alone["job"]["id"]]
    assert rerun_all == {"rerun_count": 1}
    assert (revived["job"]["status"], revived["job"]["attempts"]) == ("JOB_STATUS_COMPLETED", 2)
    assert revived["job"]["result"] == "succeeded on attempt 2, after 1 failure"

"""The README's walkthroughs as the tests run them: its code blocks, and waiting for the jobs they submit."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.processes import ROOT

README = (ROOT / "README.md").read_text()


def readme_block(name: str, readme: Path = ROOT / "README.md") -> str:
    """The fenced code block between `<!-- walkthrough:NAME ... -->` and `<!-- /walkthrough:NAME -->` of ``readme``."""
    text = README if readme == ROOT / "README.md" else readme.read_text()
    match = re.search(rf"<!-- walkthrough:{name}\b.*?-->\s*```\w*\n(.*?)```\s*<!-- /walkthrough:{name} -->", text, re.S)
    assert match, f"{readme.relative_to(ROOT)} has no walkthrough:{name} block"
    return match.group(1)


def run_grpcurl_walkthrough(script: str, env: Mapping[str, str]) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the grpcurl walkthrough ``script`` (localized by the caller) in bash, stopping at the first failure.

    Returns the finished process and the access token the walkthrough exported (empty if it failed first).
    """
    done = subprocess.run(
        ["bash", "-c", f'set -euo pipefail\n{script}\necho "TOKEN=$TOKEN"'],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    token = done.stdout.rsplit("TOKEN=", 1)[1].strip() if "TOKEN=" in done.stdout else ""
    return done, token


def wait_listed_completed(list_command: str, env: Mapping[str, str], timeout: float = 60) -> list[dict[str, Any]]:
    """Run a grpcurl ListJobs command until every job it lists is COMPLETED; returns them (as JSON)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = subprocess.run(
            ["bash", "-c", list_command], env=dict(env), capture_output=True, text=True, timeout=30, check=True
        )
        jobs: list[dict[str, Any]] = json.loads(listed.stdout)["jobs"]
        if all(job["status"] == "JOB_STATUS_COMPLETED" for job in jobs):
            return jobs
        assert time.monotonic() < deadline, listed.stdout
        time.sleep(0.2)

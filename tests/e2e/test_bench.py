"""`make bench` itself, on a small load: it must start the system, verify every job and record the run.

The figures are not checked (speed is measured by `make bench`, not asserted by tests); what is checked
is that the benchmark still works end to end, so that docs/performance.md's tables can be reproduced.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["closed", "open", "batch"])
def test_bench_runs_verifies_and_records_each_mode(mode: str, tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    load = {"closed": ["-N", "300"], "open": ["-R", "100", "--seconds", "3"], "batch": ["-N", "1500"]}[mode]
    argv = [sys.executable, "scripts/bench.py", "--mode", mode, "--warmup", "20", "--results", str(results), *load]

    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)

    assert done.returncode == 0, done.stdout + done.stderr
    jobs = 300 if mode == "open" else int(load[1])
    assert f"verified: all {jobs} jobs COMPLETED with the expected result" in done.stdout
    (record,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert record["verified"] is True
    assert record["jobs"] == jobs
    assert record["flags"]["mode"] == mode
    assert record["jobs_per_s"] > 0
    assert set(record["cpu_ms_per_job"]) >= {"auth", "job", "worker-1", "worker-2", "postgres", "rabbitmq", "total"}
    assert set(record["peak_rss_mb"]) >= {"auth", "job", "worker-1", "worker-2"}

"""The demo job types (common/demo_jobs.py) and DEMO_JOB_TYPES, the switch that adds them outside production."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import demo_jobs
from common.demo_jobs import MAX_FAILURES, MAX_SLEEP_SECONDS, DemoFailure
from common.job_types import JobTypes, PayloadError
from common.settings import SettingsError, load
from tests.support.processes import ROOT
from tests.support.tls import PRODUCTION_SETTINGS
from worker_svc.handlers import load_job_types
from worker_svc.runner import HandlerError, Result, Runner
from worker_svc.settings import Settings as WorkerSettings


def test_the_switch_adds_the_demo_module_to_the_workers_job_type_modules() -> None:
    settings = WorkerSettings
    assert load(settings, {}).modules() == ()
    assert load(settings, {"DEMO_JOB_TYPES": "true"}).modules() == ("common.demo_jobs",)
    on = load(settings, {"DEMO_JOB_TYPES": "1", "JOB_TYPE_MODULES": "tests.support.flaky_jobs"})
    assert on.modules() == ("tests.support.flaky_jobs", "common.demo_jobs")
    # Named both ways it is loaded once (a module loaded twice would declare its types twice).
    both = load(settings, {"DEMO_JOB_TYPES": "true", "JOB_TYPE_MODULES": "common.demo_jobs"})
    assert both.modules() == ("common.demo_jobs",)
    JobTypes.load(both.modules())


@pytest.mark.parametrize(
    "environ", [{"DEMO_JOB_TYPES": "true"}, {"JOB_TYPE_MODULES": "common.demo_jobs"}], ids=["switch", "module"]
)
def test_production_refuses_the_demo_types_at_start(environ: dict[str, str]) -> None:
    settings = WorkerSettings
    with pytest.raises(
        SettingsError, match=r"demo job types \(common\.demo_jobs\) are refused when APP_ENV=production"
    ):
        load(settings, {"APP_ENV": "production", **environ})
    load(settings, {"APP_ENV": "development", **environ})
    load(settings, {**PRODUCTION_SETTINGS, "DEMO_JOB_TYPES": "false"})


def test_a_worker_in_production_will_not_start_with_the_demo_types(tmp_path: Path) -> None:
    service = "worker_svc"
    env = {"PATH": "/usr/bin:/bin", "DEV_SECRETS_DIR": str(tmp_path), "APP_ENV": "production", "DEMO_JOB_TYPES": "true"}
    done = subprocess.run(
        [sys.executable, "-m", service], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert f"{service}: DEMO_JOB_TYPES: the demo job types (common.demo_jobs) are refused" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_worker_runs_the_demo_types() -> None:
    worker = load_job_types([demo_jobs.MODULE])
    assert {"sleep", "fail"} <= worker.keys()
    assert worker["sleep"].cpu_bound, "a sleep must run in a handler process, the only place it can be stopped"
    assert worker["fail"].takes_attempt


@pytest.mark.parametrize(
    ("payload", "expected"), [(0, 0.0), (0.25, 0.25), (2.0, 2.0), (float(MAX_SLEEP_SECONDS), MAX_SLEEP_SECONDS)]
)
def test_sleep_takes_a_bounded_number_of_seconds(payload: object, expected: float) -> None:
    assert demo_jobs.seconds(payload) == expected


@pytest.mark.parametrize("payload", [-1.0, MAX_SLEEP_SECONDS + 0.5, float("inf"), float("nan"), True, "5", None])
def test_sleep_refuses_anything_else(payload: object) -> None:
    with pytest.raises(PayloadError, match=f"must be a number of seconds, 0 to {MAX_SLEEP_SECONDS}"):
        demo_jobs.seconds(payload)


def test_sleep_sleeps() -> None:
    started = time.monotonic()
    assert demo_jobs.sleep(0.05) == "slept 0.05 s"
    assert time.monotonic() - started >= 0.05


@pytest.mark.parametrize("payload", [-1.0, MAX_FAILURES + 1.0, 1.5, float("inf"), float("nan"), False, "2", None])
def test_fail_refuses_anything_but_a_whole_number_of_failures(payload: object) -> None:
    with pytest.raises(PayloadError, match=f"0 to {MAX_FAILURES}"):
        demo_jobs.failures(payload)


def test_fail_fails_its_first_attempts_then_succeeds() -> None:
    count = demo_jobs.failures(2.0)
    for attempt in (1, 2):
        with pytest.raises(DemoFailure, match=f"attempt {attempt} fails on purpose"):
            demo_jobs.fail(count, attempt)
    assert demo_jobs.fail(count, 3) == "succeeded on attempt 3, after 2 failures"
    assert demo_jobs.fail(0, 1) == "succeeded on attempt 1, after 0 failures"
    assert demo_jobs.fail(1, 2) == "succeeded on attempt 2, after 1 failure"


async def test_the_runner_gives_fail_its_attempt_and_its_error_names_the_raising_line() -> None:
    runner = Runner(load_job_types([demo_jobs.MODULE]), processes=0)
    with pytest.raises(HandlerError) as failed:
        await runner.run("fail", 2.0, attempt=2)
    line = demo_jobs.fail.__code__.co_firstlineno + 3  # the raise
    assert str(failed.value) == (
        f"DemoFailure: attempt 2 fails on purpose (the first 2 do)\n  common/demo_jobs.py:{line} in fail"
    )
    assert await runner.run("fail", 2.0, attempt=3) == Result(True, "succeeded on attempt 3, after 2 failures")

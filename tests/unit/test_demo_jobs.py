"""The demo job types (worker_svc/demo.py) and DEMO_JOB_TYPES, the switch that adds them outside production."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jobqueue.runtime.settings import SettingsError, load
from jobqueue.worker.context import JobContext
from jobqueue.worker.runner import HandlerError, Result, Runner
from tests.support.processes import ROOT
from tests.support.tls import PRODUCTION_SETTINGS
from worker_svc import demo
from worker_svc.__main__ import worker
from worker_svc.demo import MAX_FAILURES, MAX_SLEEP_SECONDS
from worker_svc.settings import Settings


def test_the_switch_adds_the_demo_types_to_the_built_in_ones() -> None:
    assert list(worker(load(Settings, {})).types) == ["reverse_string", "uppercase_text", "fibonacci_calc"]
    on = worker(load(Settings, {"DEMO_JOB_TYPES": "true"})).types
    assert list(on) == ["reverse_string", "uppercase_text", "fibonacci_calc", "sleep", "fail"]


def test_production_refuses_the_demo_types_at_start() -> None:
    with pytest.raises(SettingsError, match=r"demo job types \(worker_svc/demo\.py\) are refused when APP_ENV="):
        load(Settings, {"APP_ENV": "production", "DEMO_JOB_TYPES": "true"})
    load(Settings, {"APP_ENV": "development", "DEMO_JOB_TYPES": "true"})
    load(Settings, {**PRODUCTION_SETTINGS, "DEMO_JOB_TYPES": "false"})


def test_a_worker_in_production_will_not_start_with_the_demo_types(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DEV_SECRETS_DIR": str(tmp_path),
        "APP_ENV": "production",
        "DEMO_JOB_TYPES": "true",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    done = subprocess.run(
        [sys.executable, "-m", "worker_svc"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "worker_svc: DEMO_JOB_TYPES: the demo job types (worker_svc/demo.py) are refused" in done.stderr
    assert "Traceback" not in done.stderr


def test_sleep_runs_in_a_handler_process_and_fail_is_given_its_attempt() -> None:
    assert not demo.worker.types["sleep"].is_async, "a sleep must run in a handler process, the only place it stops"
    assert demo.worker.types["fail"].takes_job


async def run(job_type: str, payload: Any, attempt: int = 1) -> Result:
    """A demo job on the event loop (a sleep too: processes=0 would leave a pool job waiting for ever)."""
    runner = Runner(demo.worker.types, processes=0)
    return await runner.run(job_type, payload, job=JobContext("j", job_type, attempt))


@pytest.mark.parametrize("payload", [-1.0, MAX_SLEEP_SECONDS + 0.5, True, "5", None])
async def test_sleep_refuses_anything_but_a_bounded_number_of_seconds(payload: object) -> None:
    result = await run("sleep", payload)
    assert not result.ok
    assert result.value.startswith("payload: ")


def test_sleep_sleeps() -> None:
    started = time.monotonic()
    assert demo.sleep(0.05) == "slept 0.05 s"
    assert time.monotonic() - started >= 0.05


@pytest.mark.parametrize("payload", [-1.0, MAX_FAILURES + 1.0, 1.5, False, "2", None])
async def test_fail_refuses_anything_but_a_whole_number_of_failures(payload: object) -> None:
    result = await run("fail", payload)
    assert not result.ok
    assert result.value.startswith("payload: ")


async def test_fail_fails_its_first_attempts_then_succeeds_and_its_error_names_the_raising_line() -> None:
    for attempt in (1, 2):
        with pytest.raises(HandlerError) as failed:
            await run("fail", 2.0, attempt)
        line = demo.fail.__code__.co_firstlineno + 8  # the raise, below the decorator
        assert str(failed.value) == (
            f"DemoFailure: attempt {attempt} fails on purpose (the first 2 do)\n  worker_svc/demo.py:{line} in fail"
        )
    assert await run("fail", 2.0, 3) == Result(True, "succeeded on attempt 3, after 2 failures")
    assert await run("fail", 0, 1) == Result(True, "succeeded on attempt 1, after 0 failures")
    assert await run("fail", 1, 2) == Result(True, "succeeded on attempt 2, after 1 failure")

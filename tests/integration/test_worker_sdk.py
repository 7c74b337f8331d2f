"""A user's worker written with the SDK, run with ``python -m jobqueue.worker MODULE:ATTRIBUTE`` against the real
job service, RabbitMQ and PostgreSQL: its types declared, its payloads checked, its results JSON values, its
progress visible while it runs, and a graceful stop."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from jobqueue.jobs.v1 import jobs_pb2
from tests.integration.jobservice import JobService, create_job, expect, number
from tests.support import sdk_app
from tests.support.clients import bearer, mint_token
from tests.support.processes import ROOT, ServiceProcess, start_service

APP = "tests.support.sdk_app:worker"


def worker_env(jobs: JobService, rabbitmq_url: str, secrets_dir: Path) -> dict[str, str]:
    return {
        "RABBITMQ_URL": rabbitmq_url,
        "RABBITMQ_QUEUE": jobs.queue,
        "JOB_SERVICE_ADDR": jobs.address,
        "DEV_SECRETS_DIR": str(secrets_dir),
        "PROGRESS_INTERVAL_SECONDS": "0.1",
    }


@pytest.fixture
def worker(jobs: JobService, rabbitmq_url: str, secrets_dir: Path, tmp_path: Path) -> Iterator[ServiceProcess]:
    """The app's worker, SERVING: it has declared its types and consumes."""
    env = worker_env(jobs, rabbitmq_url, secrets_dir)
    argv = [sys.executable, "-m", "jobqueue.worker", APP]
    process = start_service("worker_svc", env, tmp_path / "worker.log", argv=argv)
    yield process
    process.stop()


def get(jobs: JobService, token: str, job_id: str) -> jobs_pb2.Job:
    return jobs.stub.GetJob(jobs_pb2.GetJobRequest(id=job_id), metadata=bearer(token)).job


def wait_for(jobs: JobService, token: str, job_id: str, done: object, timeout: float = 30) -> jobs_pb2.Job:
    """The job once ``done(job)`` holds."""
    deadline = time.monotonic() + timeout
    while not done(job := get(jobs, token, job_id)):  # type: ignore[operator]
        assert time.monotonic() < deadline, f"still {jobs_pb2.JobStatus.Name(job.status)}: {job}"
        time.sleep(0.05)
    return job


def words(*items: str, seconds_per_word: float = 0.0) -> struct_pb2.Value:
    return json_format.ParseDict({"words": list(items), "seconds_per_word": seconds_per_word}, struct_pb2.Value())


def test_the_worker_declares_its_types_as_they_are_written(
    jobs: JobService, worker: ServiceProcess, secrets_dir: Path
) -> None:
    listed = jobs.stub.ListJobTypes(jobs_pb2.ListJobTypesRequest(), metadata=bearer(mint_token(secrets_dir))).job_types
    by_name = {t.name: t for t in listed}
    count = by_name["count_words"]
    assert json_format.MessageToDict(count.payload_schema) == json.loads(json.dumps(sdk_app.WORDS))
    assert (count.version, count.default_timeout_seconds, count.default_max_attempts) == (1, 120, 2)
    assert count.summary == sdk_app.worker.types["count_words"].summary
    assert count.HasField("declared_at")
    assert by_name["sum_squares"].version == 2
    assert {"reverse_string", "fibonacci_calc"} <= by_name.keys()  # the built-in ones stay


def test_a_payload_outside_the_schema_is_refused_at_create_job(jobs: JobService, worker: ServiceProcess) -> None:
    token = mint_token(Path(jobs.process_env["DEV_SECRETS_DIR"]))
    bad = json_format.ParseDict({"words": ["a"], "colour": "red"}, struct_pb2.Value())
    expect(lambda: create_job(jobs, token, "count_words", bad), grpc.StatusCode.INVALID_ARGUMENT, fields=["payload"])
    expect(lambda: create_job(jobs, token, "sum_squares", number(0)), grpc.StatusCode.INVALID_ARGUMENT)


def test_results_are_json_values_and_progress_shows_while_the_job_runs(
    jobs: JobService, worker: ServiceProcess, secrets_dir: Path
) -> None:
    token = mint_token(secrets_dir)
    job = create_job(jobs, token, "count_words", words("one", "three", "eleven", "four", seconds_per_word=0.5))
    # The job's defaults are those the worker declared.
    assert (job.timeout_seconds, job.max_attempts) == (120, 2)
    running = wait_for(
        jobs, token, job.id, lambda j: j.status == jobs_pb2.JOB_STATUS_RUNNING and j.HasField("progress")
    )
    assert 0 < running.progress.fraction < 1
    assert running.progress.message.startswith("looked up ")
    done = wait_for(jobs, token, job.id, lambda j: j.status == jobs_pb2.JOB_STATUS_COMPLETED)
    assert json_format.MessageToDict(done.result_value) == {"count": 4, "longest": "eleven"}
    assert json.loads(done.result) == {"count": 4, "longest": "eleven"}
    assert (done.progress.fraction, done.progress.message) == (1.0, "looked up 'four'")

    squares = create_job(jobs, token, "sum_squares", number(1000))
    done = wait_for(jobs, token, squares.id, lambda j: j.status == jobs_pb2.JOB_STATUS_COMPLETED)
    assert done.result_value.number_value == 333_833_500
    assert done.result == "333833500"


def test_a_stopped_worker_finishes_the_job_it_runs_then_exits_0(
    jobs: JobService, worker: ServiceProcess, secrets_dir: Path
) -> None:
    token = mint_token(secrets_dir)
    job = create_job(jobs, token, "count_words", words("a", "bb", "ccc", seconds_per_word=0.4))
    wait_for(jobs, token, job.id, lambda j: j.status == jobs_pb2.JOB_STATUS_RUNNING)
    assert worker.stop() == 0, worker.output()
    done = get(jobs, token, job.id)
    assert done.status == jobs_pb2.JOB_STATUS_COMPLETED, done
    assert json_format.MessageToDict(done.result_value) == {"count": 3, "longest": "ccc"}


def _attempt_worker_ids(jobs: JobService, token: str, job_id: str) -> list[str]:
    request = jobs_pb2.GetJobRequest(id=job_id, view=jobs_pb2.JOB_VIEW_FULL)
    job = jobs.stub.GetJob(request, metadata=bearer(token)).job
    return [attempt.worker_id for attempt in job.attempt_history]


def _logged_worker_ids(process: ServiceProcess, message: str) -> set[str]:
    lines = (json.loads(line) for line in process.output().splitlines() if line.startswith("{"))
    return {line.get("worker_id", "") for line in lines if line["msg"] == message}


def test_the_worker_names_itself_host_and_pid_in_its_reports_and_its_logs(
    jobs: JobService, worker: ServiceProcess, secrets_dir: Path
) -> None:
    token = mint_token(secrets_dir)
    job = create_job(jobs, token, "sum_squares", number(10))
    wait_for(jobs, token, job.id, lambda j: j.status == jobs_pb2.JOB_STATUS_COMPLETED)
    expected = f"{socket.gethostname()}/{worker.pid}"
    assert _attempt_worker_ids(jobs, token, job.id) == [expected]
    assert _logged_worker_ids(worker, "consuming") == {expected}


def test_worker_id_names_the_worker_in_its_reports_and_its_logs(
    jobs: JobService, rabbitmq_url: str, secrets_dir: Path, tmp_path: Path
) -> None:
    env = {**worker_env(jobs, rabbitmq_url, secrets_dir), "WORKER_ID": "sdk-worker (zone b)"}
    argv = [sys.executable, "-m", "jobqueue.worker", APP]
    with start_service("worker_svc", env, tmp_path / "named.log", argv=argv) as named:
        token = mint_token(secrets_dir)
        job = create_job(jobs, token, "sum_squares", number(3))
        wait_for(jobs, token, job.id, lambda j: j.status == jobs_pb2.JOB_STATUS_COMPLETED)
        assert _attempt_worker_ids(jobs, token, job.id) == ["sdk-worker (zone b)"]
        assert _logged_worker_ids(named, "consuming") == {"sdk-worker (zone b)"}


def run_worker(spec: str, env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.run(
        [sys.executable, "-m", "jobqueue.worker", spec, *arguments],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_worker_whose_types_the_job_service_refuses_stops_with_its_words(
    jobs: JobService, worker: ServiceProcess, rabbitmq_url: str, secrets_dir: Path
) -> None:
    env = {**worker_env(jobs, rabbitmq_url, secrets_dir), "WORKER_HEALTH_PORT": "0"}
    done = run_worker("tests.support.sdk_app:conflicting", env)
    assert done.returncode == 2, done.stderr
    assert "jobqueue.worker: the job service refused this worker's job types: FAILED_PRECONDITION: " in done.stderr
    assert "count_words" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_app:worker", "module 'no_such_app' cannot be imported (ModuleNotFoundError"),
        ("tests.support.sdk_app", "'tests.support.sdk_app' is not MODULE:ATTRIBUTE"),
        ("tests.support.sdk_app:WORDS", "'tests.support.sdk_app:WORDS' is not a jobqueue.worker.Worker (it is dict)"),
        ("tests.support.sdk_app:nested", "job type 'nested': a plain (CPU-bound) handler runs in a handler process"),
    ],
)
def test_a_worker_that_cannot_be_loaded_is_refused_before_anything_starts(spec: str, message: str) -> None:
    done = run_worker(spec, {})
    assert done.returncode == 2, done.stderr
    assert f"jobqueue.worker: {message}" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_lists_the_settings() -> None:
    done = run_worker("--help", {})
    assert done.returncode == 0, done.stderr
    assert "python -m jobqueue.worker MODULE:ATTRIBUTE" in done.stdout
    assert "PROGRESS_INTERVAL_SECONDS" in done.stdout
    assert "HANDLER_PROCESSES" in done.stdout

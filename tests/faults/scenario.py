"""What every fault scenario checks once its fault is over, and the summary row it adds.

A scenario submits a backlog of at least JOBS mixed jobs, starts workers with
``start_workers`` (DEBUG logs: a line for each outcome the job service
accepted), injects its fault, then calls ``settle``. That waits for every job
to be final, records the row, and checks the policy: every job accepted is
there (none lost), final (none stuck), with exactly one accepted outcome (none
duplicated), the status and result its spec promises, the attempts the retry
policy allows, and the expected number of messages in ``<queue>.dead``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from typing import Any

from google.protobuf import timestamp_pb2

from jobqueue.jobs.v1 import jobs_pb2
from tests.faults.conftest import FaultRow, record
from tests.support import flaky_jobs
from tests.support.load import FINAL, Spec, list_all
from tests.support.processes import ServiceProcess
from tests.support.queues import queue_depth
from tests.support.system import System

#: The backlog of every scenario.
JOBS = 1000
#: How long the jobs may take to settle once the fault is over before the rest count as stuck.
SETTLE_SECONDS = 120
#: How many attempts each job may have had: by job id (1 for any job not named), or a rule on the job.
Attempts = Mapping[str, Collection[int]] | Callable[[jobs_pb2.Job], Collection[int]]
#: The worker log lines that mean the job service accepted a job's final outcome.
_OUTCOME_LINES = {"job completed", "job failed for good; message dead-lettered"}


def log_entries(text: str) -> list[dict[str, Any]]:
    """The JSON log lines in a service's output."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def accepted_outcomes(system: System) -> Counter[str]:
    """How many final outcomes (COMPLETED, or FAILED for good) the job service accepted per job, from worker logs."""
    return Counter(e["job_id"] for e in log_entries(system.worker_logs()) if e.get("msg") in _OUTCOME_LINES)


def start_workers(system: System, count: int, **env: str) -> list[ServiceProcess]:
    """``count`` more workers, logging at DEBUG so each accepted outcome leaves a line."""
    settings = {"LOG_LEVEL": "DEBUG", **env}
    return [system.start_worker(wait=True, **settings) for _ in range(count)]


def dead_letters(system: System) -> int:
    """How many messages wait in the system's ``<queue>.dead``."""
    return asyncio.run(queue_depth(system.env["RABBITMQ_URL"], f"{system.env['RABBITMQ_QUEUE']}.dead"))


def running(system: System, token: str) -> set[str]:
    """The ids of the token's jobs that are RUNNING now."""
    jobs = asyncio.run(list_all(system.job_address, token))
    return {job_id for job_id, job in jobs.items() if job.status == jobs_pb2.JOB_STATUS_RUNNING}


def running_once_quiet(system: System, token: str, *, interval: float = 0.3, timeout: float = 10) -> set[str]:
    """The RUNNING jobs once two reads ``interval`` apart agree.

    For a moment with every worker dead or stopped: a claim or report a worker
    sent just before has reached the job service but may not be committed yet,
    and a read taken then would miss it.
    """
    deadline = time.monotonic() + timeout
    before = running(system, token)
    while True:
        time.sleep(interval)
        now = running(system, token)
        if now == before:
            return now
        assert time.monotonic() < deadline, f"RUNNING jobs still changing after {timeout} s with no worker running"
        before = now


def expected_outcome(spec: Spec) -> tuple[jobs_pb2.JobStatus.ValueType, str]:
    """The status a job of ``spec`` must end in, and its result (COMPLETED) or error (FAILED)."""
    if spec.type == "always_fails":
        return jobs_pb2.JOB_STATUS_FAILED, flaky_jobs.ERROR
    return jobs_pb2.JOB_STATUS_COMPLETED, spec.expected


def seconds(timestamp: timestamp_pb2.Timestamp) -> float:
    """A job's timestamp as wall-clock seconds, comparable with ``time.time()`` (the database shares this clock)."""
    return timestamp.ToNanoseconds() / 1e9


def settle(
    system: System,
    token: str,
    specs: Mapping[str, Spec],
    scenario: str,
    fault_over_at: float,
    *,
    attempts: Attempts | None = None,
    dead: int = 0,
    every_outcome_logged: bool = True,
) -> dict[str, jobs_pb2.Job]:
    """Wait for every job to be final, record the scenario's row, then check the policy; returns the jobs.

    ``fault_over_at`` is the wall-clock time (``time.time()``) the fault ended,
    or began where the system must recover while it lasts (a hung worker; a
    fault in the messages themselves): the row's recovery time runs from it to
    the last job's ``finished_at``.
    ``attempts`` allows other attempt counts than 1 (see Attempts).
    ``dead`` is how many messages must end in ``<queue>.dead``.
    ``every_outcome_logged`` is False where a worker was killed: one that died
    between its report being stored and its log line leaves no line.
    """
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        listed = asyncio.run(list_all(system.job_address, token))
        pending = [i for i in specs if i not in listed or listed[i].status not in FINAL]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    jobs = {i: listed[i] for i in specs if i in listed}
    # A worker logs an outcome, and rejects a message to <queue>.dead, just
    # after the job service stored the report: give the last ones a moment.
    late = time.monotonic() + 10
    while True:
        outcomes, dead_now = accepted_outcomes(system), dead_letters(system)
        logged = not every_outcome_logged or set(outcomes) >= set(specs)
        if (logged and dead_now >= dead) or pending or time.monotonic() > late:
            break
        time.sleep(0.2)
    row = FaultRow(
        scenario=scenario,
        jobs=len(specs),
        lost=len(specs) - len(jobs),
        duplicated=sum(n > 1 for n in outcomes.values()),
        stuck=len(pending) - (len(specs) - len(jobs)),
        recover_seconds=max(0.0, max((seconds(j.finished_at) for j in jobs.values()), default=0.0) - fault_over_at),
    )
    record(row)
    assert (row.lost, row.duplicated, row.stuck) == (0, 0, 0), row
    check_policy(jobs, specs, attempts or {})
    assert set(outcomes) <= set(specs), "an outcome was accepted for a job nobody submitted"
    if every_outcome_logged:
        assert outcomes == Counter(dict.fromkeys(specs, 1)), "not every job had exactly one accepted outcome"
    assert dead_now == dead, f"{dead_now} messages in <queue>.dead, expected {dead}"
    return jobs


def check_policy(jobs: Mapping[str, jobs_pb2.Job], specs: Mapping[str, Spec], attempts: Attempts) -> None:
    """Every job ended as its spec says, with as many attempts as the policy allows (1 unless ``attempts`` says)."""
    wrong = []
    for job_id, spec in specs.items():
        job = jobs[job_id]
        status, text = expected_outcome(spec)
        allowed = attempts(job) if callable(attempts) else attempts.get(job_id, (1,))
        if status == jobs_pb2.JOB_STATUS_COMPLETED:
            right = job.result == text and not job.HasField("error")
        else:
            right = job.error == text and not job.HasField("result")
        if job.status != status or not right or job.attempts not in allowed:
            wrong.append(
                (spec.type, jobs_pb2.JobStatus.Name(job.status), job.attempts, sorted(allowed), job.error[:60])
            )
    assert not wrong, f"{len(wrong)} jobs broke the policy (type, status, attempts, allowed, error), e.g. {wrong[:5]}"

"""What every fault scenario checks once its fault is over, and the summary row it adds.

A scenario submits a backlog of at least JOBS mixed jobs, starts workers with
``start_workers``, injects its fault, then calls ``settle``. That waits for
every job to be final, records the row, and checks the policy: every job
accepted is there (none lost), final (none stuck), with exactly one final
outcome stored (none duplicated: counted by the database itself, see
tests/faults/ledger.py), the status and result its spec promises, the attempts
the retry policy allows, and the expected number of messages in ``<queue>.dead``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping

from google.protobuf import timestamp_pb2

from jobqueue.jobs.v1 import jobs_pb2
from tests.faults.conftest import FaultRow, record
from tests.faults.ledger import attempt_histories, stored_outcomes
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


def start_workers(system: System, count: int, **env: str) -> list[ServiceProcess]:
    """``count`` more workers, each SERVING before this returns."""
    return [system.start_worker(wait=True, **env) for _ in range(count)]


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
) -> dict[str, jobs_pb2.Job]:
    """Wait for every job to be final, record the scenario's row, then check the policy; returns the jobs.

    ``fault_over_at`` is the wall-clock time (``time.time()``) the fault ended,
    or began where the system must recover while it lasts (a hung worker; a
    fault in the messages themselves): the row's recovery time runs from it to
    the last job's ``finished_at``.
    ``attempts`` allows other attempt counts than 1 (see Attempts).
    ``dead`` is how many messages must end in ``<queue>.dead``.
    """
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        listed = asyncio.run(list_all(system.job_address, token))
        pending = [i for i in specs if i not in listed or listed[i].status not in FINAL]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    jobs = {i: listed[i] for i in specs if i in listed}
    # The ledger row commits with the outcome itself, so a job read as final has its row already.
    outcomes = stored_outcomes(system.direct_database_url, specs)
    # A worker rejects a message to <queue>.dead just after the job service
    # stored the report: give the last ones a moment.
    late = time.monotonic() + 10
    while True:
        dead_now = dead_letters(system)
        if dead_now >= dead or pending or time.monotonic() > late:
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
    check_histories(jobs, attempt_histories(system.direct_database_url, specs))
    assert outcomes == Counter(dict.fromkeys(specs, 1)), "not every job had exactly one final outcome stored"
    assert dead_now == dead, f"{dead_now} messages in <queue>.dead, expected {dead}"
    return jobs


#: How a final job's last attempt may have ended: the report's outcome, or (FAILED) a lease that ran out.
_LAST_OUTCOMES = {
    jobs_pb2.JOB_STATUS_COMPLETED: {"COMPLETED"},
    jobs_pb2.JOB_STATUS_FAILED: {"FAILED", "LOST"},
    jobs_pb2.JOB_STATUS_CANCELLED: {"CANCELLED"},
}


def check_histories(jobs: Mapping[str, jobs_pb2.Job], histories: Mapping[str, list[tuple[int, str]]]) -> None:
    """Every final job's attempt history agrees with it, whatever the fault did to the reports.

    One row per attempt, numbered 1 to ``attempts``; none still RUNNING; each attempt before the last
    FAILED (a retry) or LOST (its lease ran out, or another delivery took the job over); the last one
    ended as the job did.
    """
    wrong = []
    for job_id, job in jobs.items():
        history = histories.get(job_id, [])
        numbers = [number for number, _ in history]
        outcomes = [outcome for _, outcome in history]
        agrees = (
            numbers == list(range(1, job.attempts + 1))
            and all(outcome in {"FAILED", "LOST"} for outcome in outcomes[:-1])
            and (not outcomes or outcomes[-1] in _LAST_OUTCOMES.get(job.status, set()))
        )
        if not agrees:
            wrong.append((jobs_pb2.JobStatus.Name(job.status), job.attempts, history))
    assert not wrong, f"{len(wrong)} jobs' histories disagree with them (status, attempts, history): {wrong[:5]}"


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

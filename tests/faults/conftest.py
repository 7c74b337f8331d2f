"""The fault-injection suite: each scenario adds one row to a summary table printed at the end of the run.

Run it alone with `make test-faults`; `make test` (and so CI) runs it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.faults import ledger

ROWS: list[FaultRow] = []


@dataclass(frozen=True)
class FaultRow:
    """What one scenario proved: how many jobs, and how many were lost, duplicated or stuck."""

    scenario: str
    jobs: int
    #: Jobs CreateJob accepted that the job service no longer knows.
    lost: int
    #: Jobs the job service stored more than one final outcome (COMPLETED, FAILED) for, as the
    #: database recorded each store (tests/faults/ledger.py).
    duplicated: int
    #: Jobs not final when the scenario stopped waiting.
    stuck: int
    #: From the end of the fault (or its start, where the system must recover while it lasts:
    #: a hung worker, faults in the messages themselves) to the last job's finished_at.
    recover_seconds: float


@pytest.fixture
def service_env(service_env: dict[str, str]) -> dict[str, str]:
    """The session's service environment, with workers running the test job types (always_fails)."""
    return {**service_env, "WORKER_APP": "tests.support.flaky_jobs:worker"}


@pytest.fixture(scope="session", autouse=True)
def outcome_ledger(database_url: str) -> None:
    """Every final outcome stored in the session's database leaves a row in its ledger."""
    ledger.install(database_url)


def record(row: FaultRow) -> None:
    """Add a scenario's row to the summary table."""
    ROWS.append(row)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    terminalreporter.section("fault-injection summary")
    terminalreporter.write_line(
        f"{'scenario':<44} {'jobs':>6} {'lost':>5} {'duplicated':>10} {'stuck':>6} {'recover s':>10}"
    )
    for row in ROWS:
        terminalreporter.write_line(
            f"{row.scenario:<44} {row.jobs:>6} {row.lost:>5} {row.duplicated:>10} {row.stuck:>6}"
            f" {row.recover_seconds:>10.1f}"
        )

"""The fault-injection suite: each scenario adds one row to a summary table printed at the end of the run.

Run it alone with `make test-faults`; `make test` (and so CI) runs it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

ROWS: list[FaultRow] = []


@dataclass(frozen=True)
class FaultRow:
    """What one scenario proved: how many jobs, and how many were lost, duplicated or stuck."""

    scenario: str
    jobs: int
    lost: int
    duplicated: int
    stuck: int
    recover_seconds: float


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

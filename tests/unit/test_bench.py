"""`make bench`'s pure pieces: percentiles, /proc stat lines, the open-loop schedule, the verdict on a run."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    # As in test_run_system.py: mypy knows scripts/bench.py as the top-level module `bench`.
    import bench
else:
    from scripts import bench

# --- percentile -----------------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    assert bench.percentile(values, 50) == 50.0
    assert bench.percentile(values, 99) == 99.0
    assert bench.percentile(values, 100) == 100.0
    assert bench.percentile([7.0], 50) == 7.0
    # With 10 values p99 is the largest, p50 the 5th: no interpolation.
    assert bench.percentile([float(v) for v in range(1, 11)], 99) == 10.0
    assert bench.percentile([float(v) for v in range(1, 11)], 50) == 5.0


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], 0), ([1.0], 101)])
def test_percentile_refuses_what_has_none(values: list[float], q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        bench.percentile(values, q)


# --- /proc/<pid>/stat -----------------------------------------------------------------------------------


def stat_line(pid: int, comm: str, times: tuple[int, int, int, int]) -> str:
    """A /proc/<pid>/stat line as Linux writes it (52 fields); ``times`` are utime, stime, cutime, cstime."""
    fields = ["S", "1", "1", "1", "0", "-1", "4194560", "100", "0", "0", "0"]  # state .. cmajflt (fields 3..13)
    fields += [str(t) for t in times]  # fields 14..17
    fields += ["20", "0", "3", "0", "12345", "1000000", "2000"] + ["0"] * 28  # priority .. exit_code
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


def test_parse_stat_reads_a_plain_name() -> None:
    stat = bench.parse_stat(stat_line(42, "postgres", (10, 20, 3, 4)))
    assert stat == bench.ProcStat(pid=42, comm="postgres", ticks=37)


def test_parse_stat_survives_spaces_and_parentheses_in_the_name() -> None:
    # A process may name itself anything: only the last ')' ends the name.
    stat = bench.parse_stat(stat_line(7, "a) S 1 (b (c) d", (100, 1, 0, 5)))
    assert stat == bench.ProcStat(pid=7, comm="a) S 1 (b (c) d", ticks=106)


def cpu_ticks() -> int:
    """This process's CPU time and its reaped children's, in clock ticks, as times(2) counts it."""
    spent = os.times()
    seconds = spent.user + spent.system + spent.children_user + spent.children_system
    return round(seconds * os.sysconf("SC_CLK_TCK"))


def test_parse_stat_of_this_process_counts_its_cpu_ticks() -> None:
    # The kernel's own line, not one written to look like it: the tick fields
    # must be the ones times(2) reports, read between two of its readings.
    while cpu_ticks() < 5:
        pass  # spend a few ticks of CPU, so a wrong field or a missing sum shows
    before = cpu_ticks()
    stat = bench.parse_stat(Path(f"/proc/{os.getpid()}/stat").read_text())
    after = cpu_ticks()
    assert stat.pid == os.getpid()
    assert stat.comm.startswith("python") or stat.comm == "pytest"
    assert before <= stat.ticks <= after


# --- the open-loop schedule -----------------------------------------------------------------------------


def test_schedule_is_evenly_spaced_at_the_rate() -> None:
    times = bench.schedule(400, 10)
    assert len(times) == 4000
    assert times[:3] == [0.0, 0.0025, 0.005]
    assert times[-1] == pytest.approx(9.9975)
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(times)}
    assert gaps == {0.0025}


def test_schedule_rounds_a_fractional_count() -> None:
    assert bench.schedule(3, 0.5) == [0.0, 1 / 3]  # 1.5 jobs rounds to 2
    assert bench.schedule(0.5, 4) == [0.0, 2.0]


# --- verifying a run ------------------------------------------------------------------------------------

EXPECTED = {"a": "olleh", "b": "HELLO", "c": "55"}
GOOD = {"a": ("COMPLETED", "olleh"), "b": ("COMPLETED", "HELLO"), "c": ("COMPLETED", "55")}


def test_verify_accepts_a_right_run() -> None:
    assert bench.verify(EXPECTED, GOOD, submitted=3) == []


def test_verify_rejects_a_wrong_result() -> None:
    problems = bench.verify(EXPECTED, {**GOOD, "c": ("COMPLETED", "56")}, submitted=3)
    assert len(problems) == 1
    assert "1 jobs final but not COMPLETED with the expected result" in problems[0]
    assert "'56'" in problems[0]


def test_verify_rejects_a_failed_job() -> None:
    problems = bench.verify(EXPECTED, {**GOOD, "b": ("FAILED", None)}, submitted=3)
    assert len(problems) == 1
    assert "not COMPLETED" in problems[0]


def test_verify_rejects_a_missing_job() -> None:
    problems = bench.verify(EXPECTED, {k: v for k, v in GOOD.items() if k != "a"}, submitted=3)
    assert problems == [f"1 jobs accepted but not stored, e.g. a: None, expected {'olleh'!r}"]


def test_verify_rejects_a_job_that_is_not_final() -> None:
    for status in ("QUEUED", "RUNNING"):
        problems = bench.verify(EXPECTED, {**GOOD, "b": (status, None)}, submitted=3)
        assert len(problems) == 1
        assert "1 jobs not final" in problems[0]


def test_verify_rejects_a_job_nobody_submitted() -> None:
    problems = bench.verify(EXPECTED, {**GOOD, "d": ("COMPLETED", "x")}, submitted=3)
    assert len(problems) == 1
    assert "1 jobs stored but never accepted" in problems[0]


def test_verify_rejects_refused_submissions() -> None:
    problems = bench.verify(EXPECTED, GOOD, submitted=5)
    assert problems == ["2 of 5 submissions were not accepted"]

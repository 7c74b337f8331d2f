"""web_svc: the operator charts' arithmetic, the stream limits, and refusals in words."""

from __future__ import annotations

import datetime

import grpc

from jobqueue.client import JobQueueError, JobTypeCounts, MinuteCounts, QueueStats
from web_svc import chart, views
from web_svc.events import StreamLimits

T0 = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


def stats(*minutes: tuple[int, int, int, int], queued: int = 0, running: int = 0) -> QueueStats:
    return QueueStats(
        (JobTypeCounts("sleep", queued, running, 0),),
        tuple(MinuteCounts(T0 + datetime.timedelta(minutes=i), *counts) for i, counts in enumerate(minutes)),
    )


def test_depth_is_derived_backwards_from_now() -> None:
    # created, completed, failed, cancelled per minute; 3 unfinished now.
    history = stats((5, 0, 0, 0), (2, 3, 1, 0), (0, 0, 0, 0), queued=2, running=1)
    # End of minute 2: 3 (now). End of minute 1: nothing happened in minute 2: 3. End of minute 0:
    # minute 1 created 2 and finished 4, so 3 - 2 + 4 = 5.
    assert chart.depth(history) == [5.0, 3.0, 3.0]


def test_failure_rate_is_of_finished_jobs() -> None:
    assert chart.failure_rate(stats((0, 3, 1, 5), (0, 0, 0, 2), (0, 0, 2, 0))) == [25.0, 0.0, 100.0]


def test_charts_fit_their_box() -> None:
    drawn = chart.charts(stats((4, 0, 0, 0), (0, 4, 0, 0)))
    assert [c.title.split(" (")[0] for c in drawn] == ["Queue depth", "Throughput", "Failure rate"]
    throughput = drawn[1]
    assert throughput.top == 5.0  # 4, rounded up to a scale a person reads at a glance
    created, points = throughput.lines[0]
    assert created.name == "created"
    high = chart.TOP + (chart.HEIGHT - chart.BOTTOM - chart.TOP) * (1 - 4 / 5)
    assert points == f"{chart.LEFT:.1f},{high:.1f} {chart.WIDTH:.1f},{chart.HEIGHT - chart.BOTTOM:.1f}"
    assert throughput.labels == [(float(chart.LEFT), "12:00"), (float(chart.WIDTH), "12:01")]
    assert chart.charts(QueueStats((), ()))[0].empty
    assert drawn[2].top == 100.0  # a rate's scale is always the whole


def test_nice_tops() -> None:
    assert [chart.nice_top(v) for v in (0, 1, 1.5, 3, 7, 10, 11, 480)] == [1, 1, 2, 5, 10, 10, 20, 500]


def test_streams_are_limited_per_session_and_per_address() -> None:
    limits = StreamLimits(per_session=2, per_address=3, total=100)
    assert limits.acquire("s1", "a")
    assert limits.acquire("s1", "a")
    assert not limits.acquire("s1", "b")  # the session has its two
    assert limits.acquire("s2", "a")
    assert not limits.acquire("s3", "a")  # the address has its three
    limits.release("s1", "a")
    assert limits.acquire("s3", "a")
    assert limits.open() == 3

    full = StreamLimits(per_session=2, per_address=2, total=3)
    assert full.acquire("s1", "a")
    assert full.acquire("s2", "b")
    assert full.acquire("s3", "c")
    assert not full.acquire("s4", "d")  # the dashboard holds its most in all


def test_refusals_in_words() -> None:
    denied = JobQueueError(grpc.StatusCode.PERMISSION_DENIED, "operators only", reason="OPERATORS_ONLY")
    assert views.refusal(denied) == "Operators only: your account does not have the operator role. (operators only)"
    assert views.refusal(JobQueueError(grpc.StatusCode.INVALID_ARGUMENT, "bad")) == "bad"

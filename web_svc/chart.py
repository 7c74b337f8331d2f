"""Queue depth, throughput and failure rate over time, as the points of small inline SVG charts.

Drawn on the server from GetQueueStats, so the page needs no script and no
chart library. The depth at the end of each minute is derived as the API
describes: the unfinished jobs now (queued plus running, over every type),
minus those created since, plus those that finished since.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobqueue.client import QueueStats

WIDTH, HEIGHT = 600, 160
#: Room left of the plot for the scale's labels, and below it for the times.
LEFT, BOTTOM, TOP = 40, 20, 10


@dataclass(frozen=True)
class Series:
    """One line of a chart."""

    name: str
    #: The CSS class that colours it.
    css: str
    values: list[float]


@dataclass(frozen=True)
class Chart:
    """A chart ready to draw: its lines' SVG points, its scale and its time labels."""

    title: str
    lines: list[tuple[Series, str]]
    top: float
    labels: list[tuple[float, str]]
    unit: str = ""

    @property
    def empty(self) -> bool:
        return not any(series.values for series, _ in self.lines)


def depth(stats: QueueStats) -> list[float]:
    """Unfinished jobs at the end of each minute, oldest first (the last is now)."""
    now = sum(t.queued + t.running for t in stats.job_types)
    values: list[float] = []
    later = 0  # created minus finished in the minutes after the one at hand
    for minute in reversed(stats.minutes):
        values.append(float(max(now - later, 0)))
        later += minute.created - (minute.completed + minute.failed + minute.cancelled)
    return values[::-1]


def failure_rate(stats: QueueStats) -> list[float]:
    """Per minute, the share (in %) of finished jobs that failed for good; 0 for a minute none finished."""
    rates = []
    for minute in stats.minutes:
        ended = minute.completed + minute.failed
        rates.append(100.0 * minute.failed / ended if ended else 0.0)
    return rates


def nice_top(value: float) -> float:
    """The smallest of 1, 2, 5, 10, 20, 50... that is at least ``value``: a scale a person reads at a glance."""
    step = 1.0
    while True:
        for factor in (1.0, 2.0, 5.0):
            if step * factor >= value:
                return step * factor
        step *= 10


def chart(title: str, series: list[Series], stats: QueueStats, *, unit: str = "", top: float | None = None) -> Chart:
    """``series`` (one value per minute of ``stats``) scaled into the chart's box (up to ``top``, or a nice top)."""
    count = max((len(s.values) for s in series), default=0)
    highest = max((max(s.values, default=0.0) for s in series), default=0.0)
    scale_top = top if top is not None else nice_top(highest)
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM - TOP

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (count - 1) if count > 1 else plot_w / 2)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / scale_top)

    lines = [(s, " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s.values))) for s in series]
    labels: list[tuple[float, str]] = []
    if stats.minutes:
        step = max(1, len(stats.minutes) // 6)
        labels = [(x(i), m.start.strftime("%H:%M")) for i, m in enumerate(stats.minutes) if i % step == 0]
    return Chart(title, lines, scale_top, labels, unit)


def charts(stats: QueueStats) -> list[Chart]:
    """The operator page's charts: depth, throughput, failure rate."""
    minutes = stats.minutes
    return [
        chart("Queue depth (unfinished jobs)", [Series("unfinished", "depth", depth(stats))], stats),
        chart(
            "Throughput (jobs per minute)",
            [
                Series("created", "created", [float(m.created) for m in minutes]),
                Series("completed", "completed", [float(m.completed) for m in minutes]),
                Series("failed", "failed", [float(m.failed) for m in minutes]),
                Series("cancelled", "cancelled", [float(m.cancelled) for m in minutes]),
            ],
            stats,
        ),
        chart(
            "Failure rate (% of finished)",
            [Series("failed", "failed", failure_rate(stats))],
            stats,
            unit="%",
            top=100.0,
        ),
    ]

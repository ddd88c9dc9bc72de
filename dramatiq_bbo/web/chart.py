"""The operation page's chart: job durations and batch sizes over time, as SVG geometry.

Drawn on the server (no script, no chart library): this module turns the operation's recent
jobs into numbers — the points of each series scaled into a fixed box, and the labels of its
axes — and the template writes the ``<svg>`` elements from them, so every value goes through
the template's escaping like the rest of the page. Each series has its own vertical scale
(seconds and rows do not share an axis); time runs left to right, oldest job first.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..operate.summaries import JobSummary

WIDTH = 600
HEIGHT = 120
#: room left of the plot for the vertical axis's labels
MARGIN = 48


@dataclass(frozen=True)
class Series:
    """One line of the chart: its name, unit, highest value and the ``x,y`` points."""

    name: str
    unit: str
    maximum: float
    points: str
    dots: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    margin: int
    start: str
    end: str
    series: tuple[Series, ...]
    jobs: int


def job_chart(jobs: Sequence[JobSummary]) -> Chart | None:
    """The chart of the jobs that have started (None when none has)."""
    started = sorted((j for j in jobs if j.started_at is not None), key=_started)
    if not started:
        return None
    first, last = _started(started[0]), _started(started[-1])
    span = max((last - first).total_seconds(), 1e-9)

    def x(job: JobSummary) -> float:
        if len(started) == 1:
            return MARGIN + (WIDTH - MARGIN) / 2
        return MARGIN + (WIDTH - MARGIN) * (_started(job) - first).total_seconds() / span

    durations = _series("job duration", "s", started, x, _seconds)
    batches = _series("batch size", "rows", started, x, lambda j: float(j.batch_size))
    return Chart(
        WIDTH, HEIGHT, MARGIN, f"{first:%H:%M:%S}", f"{last:%H:%M:%S}", (durations, batches),
        len(started),
    )  # fmt: skip


def _series(
    name: str,
    unit: str,
    jobs: Sequence[JobSummary],
    x: Callable[[JobSummary], float],
    value: Callable[[JobSummary], float],
) -> Series:
    values = [value(job) for job in jobs]
    top = max(values) or 1.0
    dots = tuple(
        (round(x(job), 1), round(HEIGHT - 4 - (HEIGHT - 8) * v / top, 1))
        for job, v in zip(jobs, values, strict=True)
    )
    points = " ".join(f"{px},{py}" for px, py in dots)
    return Series(name, unit, round(top, 3), points, dots)


def _started(job: JobSummary) -> datetime.datetime:
    assert job.started_at is not None
    return job.started_at.astimezone(datetime.UTC)


def _seconds(job: JobSummary) -> float:
    return job.duration.total_seconds() if job.duration is not None else 0.0

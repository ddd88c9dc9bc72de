"""The batch size optimizer: size each job so it fills its interval without overrunning it.

The rule: **no job may last more than 0.95 × its interval** (``CEILING``). A job's size is
planned for ``target_efficiency`` (0.90) of the interval at a *conservative* time per row, so
that the ceiling leaves room for the noise of real jobs:

- **time per row, not efficiency.** An average of efficiencies measured at different sizes
  mixes incomparable numbers (while the size grows, the old small jobs drag it down and the
  size overshoots, tests/unit/test_optimizer.py shows it); a job's time per row (duration ÷
  the rows it actually processed) does not depend on its size. A fixed per-job overhead ``c``
  does not bias it either: the fixed point of ``n → T·n ÷ (c + r·n)`` is ``c + r·n = T``.
- **the slowest recent, not the mean.** The time per row planned with is the slowest of the
  last ``SLOW_WINDOW`` (10) jobs', and at least an exponential moving average (α 0.4) of it
  plus ``AVERAGE_MARGIN`` (8%). Planned at 0.90 with it, a job passes 0.95 only if its rows
  cost 5.5% more than the slowest of the last ten jobs' and 14% more than their average
  (replayed with ±8% noise per job, none does: tests/unit/test_optimizer.py); a steady
  operation's jobs last about 0.90 ÷ 1.08 = 0.83 of the interval. The window also caps growth
  when the previous job came close: after a job that took ``e`` of the interval the next one
  is at most ``0.90 ÷ e`` times larger (smaller after one above 0.90).
  A job ``slowdown_reset`` (1.5) times slower per row than the average restarts the average
  (a change of regime, not noise).
- **the band**: no change while the planned efficiency (that estimate × the current size ÷
  interval) is in 0.86–0.90; sizes do not chase noise.
- **growth is capped, shrinking is not.** Near the target a decision grows the size ×1.2 at
  most. Far below it (the planned efficiency under about 40% of the target) a step may go as
  far as the size that would take ``FAR_AIM`` (half) of the target, ×``MAX_FAST_GROWTH``
  (20) at most: a job of 1,000 rows taking 1 s of a 120 s interval asks for 20,000 rows
  next. Such a job is planned at 0.45 × interval at most, so its rows would have to cost
  twice what was measured to reach the target (three times for the job budget, 1.5 ×
  interval). Shrinking goes straight to the estimate: a job too big holds locks and bloats
  longer, so the safe error is the small one.

**The guarantee** (stationary time per row ``r``): a size set by the ×1.2 walk or held in the
band is planned at ≤ 0.90 of the interval at the conservative time per row, a size set by a
large step at ≤ 0.45. The expected duration is within ±10% of the steady one
(``N* × r``, ``N* = target ÷ (1.08 r)``) from job ``jobs_needed(S, N*)`` on: 1,000 → 3,000
and 1,000 → 10,000 take 6 jobs, 1,000 → 100,000 takes 7 (×1.2 alone: 7, 14 and 26).
An optimum below the start is reached by the second job; clamps win over the target.

**The target.** ``target_efficiency × interval`` (:func:`target_duration`); with an interval
of 0 (jobs back to back) the caller passes ``target_duration_seconds`` (half of
``min_job_budget_seconds``) and efficiencies are relative to ``target ÷ target_efficiency``.
The job budget (``job_budget_fraction``, 1.5 × interval) is a guard above all this, not the
sizing rule. docs/sizing.md gives the defaults and their reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import logs
from ..errors import ConfigurationError
from ..state.records import JobRecord, JobStatus, OperationRecord

__all__ = [
    "JobSample",
    "OptimizerDecision",
    "decide_for_operation",
    "growth_cap",
    "jobs_needed",
    "learned_start",
    "log_decision",
    "optimize_batch_size",
    "samples_from_jobs",
    "steady_size",
    "target_duration",
]

#: no job may last longer than this share of its interval
CEILING = 0.95
#: jobs are planned for this share of the interval at the slowest recent time per row...
TARGET_EFFICIENCY = 0.90
#: ...and left alone while that planned share is in the band
BAND_LOW = 0.86
BAND_HIGH = 0.90
#: the time per row planned with: the slowest of this many recent jobs...
SLOW_WINDOW = 10
#: ...and at least the moving average's plus this margin
AVERAGE_MARGIN = 0.08
MAX_GROWTH = 1.2
#: far below the target, a step may plan the next job at this fraction of the target...
FAR_AIM = 0.5
#: ...growing the size at most this much in one decision
MAX_FAST_GROWTH = 20.0
ALPHA = 0.4
SLOWDOWN_RESET = 1.5


@dataclass(frozen=True)
class JobSample:
    """One successful job as the optimizer sees it: how long it took, how many rows it did."""

    duration_seconds: float
    rows: int


@dataclass(frozen=True)
class OptimizerDecision:
    """What the optimizer decided, with the numbers that justify it (logged and exported).

    ``efficiency`` is the newest job's own duration ÷ interval; ``smoothed`` is the planned
    efficiency at the ``old`` size — the conservative time per row (the slowest recent, at
    least the moving average + 8%) × ``old`` ÷ interval — so that ``new = old × min(target ÷
    smoothed, cap)`` (None when there was no usable job). ``reason`` is one of ``no_data``,
    ``in_band``, ``grow``, ``grow_capped`` (×1.2), ``grow_fast`` (a larger step far below the
    target), ``shrink``, ``slowdown``, ``at_min``, ``at_max``.
    """

    old: int
    new: int
    efficiency: float | None
    smoothed: float | None
    reason: str

    @property
    def changed(self) -> bool:
        return self.new != self.old


def optimize_batch_size(
    old: int,
    jobs: Sequence[JobSample],
    *,
    interval_seconds: float,
    min_batch_size: int,
    max_batch_size: int,
    target_duration_seconds: float | None = None,
    target_efficiency: float = TARGET_EFFICIENCY,
    band: tuple[float, float] = (BAND_LOW, BAND_HIGH),
    max_growth: float = MAX_GROWTH,
    far_aim: float = FAR_AIM,
    max_fast_growth: float = MAX_FAST_GROWTH,
    alpha: float = ALPHA,
    slowdown_reset: float = SLOWDOWN_RESET,
    slow_window: int = SLOW_WINDOW,
    average_margin: float = AVERAGE_MARGIN,
) -> OptimizerDecision:
    """The next batch size after ``jobs`` (recent successful jobs, newest last).

    Pure: no I/O, same inputs give the same decision, so the runner can recompute it from the
    job rows and tests can replay any history.
    """
    if min_batch_size < 1 or max_batch_size < min_batch_size:
        raise ConfigurationError(
            "batch size bounds must satisfy 1 <= min <= max, "
            f"got min={min_batch_size}, max={max_batch_size}"
        )
    period = _period(interval_seconds, target_duration_seconds, target_efficiency)
    usable = [j for j in jobs if j.rows > 0 and j.duration_seconds > 0]
    if not usable:
        return _clamped(old, old, None, None, "no_data", min_batch_size, max_batch_size)

    rate, reset = _smoothed_seconds_per_row(usable, alpha, slowdown_reset)
    recent = (j.duration_seconds / j.rows for j in usable[-max(1, slow_window) :])
    rate = max(rate * (1 + average_margin), *recent)
    efficiency = usable[-1].duration_seconds / period
    smoothed = rate * old / period
    if band[0] <= smoothed <= band[1]:
        return _clamped(old, old, efficiency, smoothed, "in_band", min_batch_size, max_batch_size)

    ratio = target_efficiency / smoothed
    cap = growth_cap(ratio, max_growth=max_growth, far_aim=far_aim, max_fast=max_fast_growth)
    if ratio > cap:
        ratio, reason = cap, "grow_capped" if cap <= max_growth else "grow_fast"
    elif ratio > 1:
        reason = "grow"
    else:
        reason = "slowdown" if reset else "shrink"
    candidate = max(1, round(old * ratio))
    return _clamped(old, candidate, efficiency, smoothed, reason, min_batch_size, max_batch_size)


def growth_cap(
    ratio: float,
    *,
    max_growth: float = MAX_GROWTH,
    far_aim: float = FAR_AIM,
    max_fast: float = MAX_FAST_GROWTH,
) -> float:
    """The largest growth one decision may take when ``ratio`` (target ÷ smoothed
    efficiency) is the growth that would hit the target: ×``max_growth`` near the target,
    up to the size that would take ``far_aim`` of the target far below it (at most
    ×``max_fast``). Continuous in ``ratio``: the larger step starts where it exceeds ×1.2."""
    return max(max_growth, min(far_aim * ratio, max_fast))


def jobs_needed(start: int, optimum: int, *, max_growth: float = MAX_GROWTH) -> int:
    """The job (1-based) from which the expected duration is within ±10% of the target.

    The growth caps alone decide it (a noise-free replay of the rule); see the module
    docstring. ``jobs_needed(1000, 3000)`` is 6, ``jobs_needed(1000, 10_000)`` is 6 too;
    anything at or below ``start`` is 1 or 2.
    """
    if optimum * 0.9 <= start:
        return 1 if optimum * 1.1 >= start else 2
    size, job = float(start), 1
    while size < 0.9 * optimum:
        ratio = optimum / size
        size *= min(ratio, growth_cap(ratio, max_growth=max_growth))
        job += 1
    return job


def steady_size(target_seconds: float, seconds_per_row: float) -> float:
    """The size the rule settles at for a steady ``seconds_per_row``: the target at the average
    time per row plus its margin (jobs of that size last ``target ÷ 1.08``)."""
    return target_seconds / (seconds_per_row * (1 + AVERAGE_MARGIN))


def target_duration(interval_seconds: float, min_job_budget_seconds: float) -> float:
    """The duration a job is sized to last: ``0.90 × interval`` (at the slowest recent time
    per row, so that none passes 0.95 × interval); with an interval of 0 (jobs
    back to back) half the minimal job budget, well inside the budget that stops such a job."""
    if interval_seconds > 0:
        return TARGET_EFFICIENCY * interval_seconds
    return 0.5 * min_job_budget_seconds


def learned_start(
    learned: int,
    learned_target_seconds: float,
    target_seconds: float,
    *,
    min_batch_size: int,
    max_batch_size: int,
    sub_batch_size: int,
) -> int:
    """The batch size a new operation starts from when its configuration learned ``learned``
    rows for jobs of ``learned_target_seconds``: scaled down to a shorter target (never up:
    a longer interval only leaves the optimizer room to grow), clamped to the new operation's
    bounds, and never under its sub-batch (a batch holds whole sub-batches)."""
    scale = min(1.0, target_seconds / learned_target_seconds) if learned_target_seconds > 0 else 1
    size = min(max(round(learned * scale), min_batch_size), max_batch_size)
    return max(size, sub_batch_size, 1)


# -- operation rows ---------------------------------------------------------------------------


def samples_from_jobs(jobs: Sequence[JobRecord]) -> list[JobSample]:
    """Successful, finished jobs as samples, oldest first.

    The duration is ``metrics["duration_seconds"]`` when the runner recorded it (the time of
    the successful attempt alone), else ``finished_at - started_at``. The rows are those of
    that same run (``metrics["processed_tuples"]``): a job resumed after a hold or a
    shutdown walked only the rest of its range in its last run, and pairing that run's time
    with the whole job's rows would make it look faster than it was.
    """
    done = sorted(
        (job.finished_at, index, job)
        for index, job in enumerate(jobs)
        if job.status == JobStatus.SUCCEEDED
        and job.finished_at is not None
        and job.processed_tuple_count
    )
    samples = []
    for finished_at, _, job in done:
        metrics = job.metrics or {}
        duration = metrics.get("duration_seconds")
        if duration is None and job.started_at is not None:
            duration = (finished_at - job.started_at).total_seconds()
        rows = metrics.get("processed_tuples")
        if not isinstance(rows, int) or rows <= 0 or duration is None:
            rows = int(job.processed_tuple_count)
        if duration is not None and duration > 0 and rows > 0:
            samples.append(JobSample(float(duration), rows))
    return samples


def decide_for_operation(
    operation: OperationRecord,
    jobs: Sequence[JobRecord],
    *,
    target_duration_seconds: float | None = None,
    **tuning: Any,
) -> OptimizerDecision:
    """The optimizer applied to an operation row and its recent jobs (any order).

    The caller writes ``decision.new`` to the operation's ``batch_size`` in the same
    transaction that records the job, and passes ``target_duration_seconds`` (needed when the
    operation's interval is 0). ``tuning`` forwards ``target_efficiency``, ``band``... .
    """
    return optimize_batch_size(
        operation.batch_size,
        samples_from_jobs(jobs),
        interval_seconds=operation.interval_seconds,
        min_batch_size=operation.min_batch_size,
        max_batch_size=operation.max_batch_size,
        target_duration_seconds=target_duration_seconds,
        **tuning,
    )


def log_decision(operation: OperationRecord, decision: OptimizerDecision) -> None:
    """Log one decision as the ``..._optimization_event``: changes at INFO, holds at DEBUG."""
    logs.event(
        logs.OPTIMIZATION,
        level=logging.INFO if decision.changed else logging.DEBUG,
        **logs.operation_fields(operation, "identifier"),
        old_batch_size=decision.old,
        new_batch_size=decision.new,
        efficiency=_rounded(decision.efficiency),
        smoothed_efficiency=_rounded(decision.smoothed),
        reason=decision.reason,
    )


# -- internals ----------------------------------------------------------------------------------


def _period(interval: float, target_duration: float | None, target_efficiency: float) -> float:
    """The duration efficiencies are measured against: the interval, or its stand-in."""
    if interval > 0:
        return interval
    if target_duration is None or target_duration <= 0:
        raise ConfigurationError(
            f"interval is {interval!r}: the optimizer needs a positive target_duration_seconds "
            f"to size jobs that run back to back, got {target_duration!r}"
        )
    return target_duration / target_efficiency


def _smoothed_seconds_per_row(
    jobs: Sequence[JobSample], alpha: float, slowdown_reset: float
) -> tuple[float, bool]:
    """EMA of seconds per row, oldest first; True when the newest job reset it."""
    average = jobs[0].duration_seconds / jobs[0].rows
    reset = False
    for job in jobs[1:]:
        rate = job.duration_seconds / job.rows
        reset = rate >= average * slowdown_reset
        average = rate if reset else alpha * rate + (1 - alpha) * average
    return average, reset


def _clamped(
    old: int,
    candidate: int,
    efficiency: float | None,
    smoothed: float | None,
    reason: str,
    low: int,
    high: int,
) -> OptimizerDecision:
    new = min(max(candidate, low), high)
    if new != candidate:
        reason = "at_min" if new == low else "at_max"
    return OptimizerDecision(old, new, efficiency, smoothed, reason)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)

"""Following the demo's operation while workers run it, and showing it to a person.

:class:`Watch` reads the operation row and its jobs a few times a second and turns what
changed into events: the batch optimizer changing ``batch_size`` between jobs, a health hold
starting (with its reason and end) and work resuming after it. :class:`Display` draws one
progress line, redrawn in place on a terminal and printed every few seconds otherwise, with
the events on lines of their own.
"""

from __future__ import annotations

import collections
import datetime
import shutil
import time
from dataclasses import dataclass, field
from typing import TextIO

from ..state.records import JobRecord, JobStatus, OperationRecord
from .hold import ScriptedStop

#: progress at which the demo arms its scripted health stop
ARM_AT = 0.40
#: ... unless the operation is already this far (a small table, done in a job or two)
ARM_BEFORE = 0.90
#: seconds of history the current rows/s is measured over
RATE_WINDOW = 3.0
#: seconds between two progress lines when stdout is not a terminal
PLAIN_EVERY = 2.0


@dataclass
class HoldSeen:
    """One health hold as the demo saw it on the operation row."""

    reason: str
    until: datetime.datetime
    seen_at: float
    processed_at_start: int
    resumed_at: float | None = None

    @property
    def held_seconds(self) -> float | None:
        return None if self.resumed_at is None else self.resumed_at - self.seen_at


class Display:
    """One progress line (live on a terminal) plus event lines."""

    def __init__(self, stream: TextIO, *, live: bool) -> None:
        self.stream = stream
        self.live = live
        self._line = ""
        self._printed_at = 0.0

    def status(self, line: str, *, force: bool = False) -> None:
        self._line = line
        if self.live:
            # Never wider than the terminal: a wrapped line cannot be redrawn in place.
            line = self._line = line[: shutil.get_terminal_size().columns - 1]
            self.stream.write(f"\r{line}\x1b[K")
            self.stream.flush()
        elif force or time.monotonic() - self._printed_at >= PLAIN_EVERY:
            self._printed_at = time.monotonic()
            print(line, file=self.stream, flush=True)

    def event(self, text: str) -> None:
        if self.live:
            self.stream.write(f"\r\x1b[K{text}\n{self._line}")
            self.stream.flush()
        else:
            print(text, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A line outside the progress display (before or after it)."""
        if self.live and self._line:
            self.stream.write("\r\x1b[K")
        print(text, file=self.stream, flush=True)
        self._line = ""

    def close(self) -> None:
        if self.live and self._line:
            self.stream.write("\n")
            self.stream.flush()
            self._line = ""


@dataclass
class Watch:
    """What the demo saw of its operation; ``observe`` is called on every poll."""

    display: Display
    scripted: ScriptedStop | None = None
    batch_changes: list[tuple[int, int]] = field(default_factory=list)
    holds: list[HoldSeen] = field(default_factory=list)
    jobs: list[JobRecord] = field(default_factory=list)
    _batch_size: int | None = None
    _samples: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)

    def observe(self, operation: OperationRecord, jobs: list[JobRecord]) -> None:
        """Take in one poll; the last one (the operation ended) is always drawn."""
        now = time.monotonic()
        self.jobs = jobs
        self._samples.append((now, operation.processed_tuple_count))
        while self._samples and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        self._follow_batch_size(operation, jobs)
        self._follow_holds(operation, now)
        self._arm(operation)
        self.display.status(self.line(operation), force=not operation.unfinished)

    @property
    def hold(self) -> HoldSeen | None:
        """The hold in progress (seen, work not resumed yet)."""
        if self.holds and self.holds[-1].resumed_at is None:
            return self.holds[-1]
        return None

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def line(self, operation: OperationRecord) -> str:
        total = operation.total_tuple_count or 0
        done = operation.processed_tuple_count
        fraction = operation.progress or 0.0
        bar = "#" * round(fraction * 20)
        return (
            f"[{bar:<20}] {fraction:6.1%}  {done:,}/{total:,} rows  "
            f"{self.rate():,.0f} rows/s  batch {operation.batch_size:,}  "
            f"jobs {len(self.jobs)}  {self._state(operation)}"
        )

    def _state(self, operation: OperationRecord) -> str:
        hold = self.hold
        if hold is not None:
            if _aware_now() < hold.until:
                return f"on hold until {_clock(hold.until)}"
            return "hold expired: waiting for the scheduler"
        return operation.status.name.lower()

    def _follow_batch_size(self, operation: OperationRecord, jobs: list[JobRecord]) -> None:
        old, new = self._batch_size, operation.batch_size
        self._batch_size = new
        if old is None or old == new:
            return
        self.batch_changes.append((old, new))
        finished = [job for job in jobs if job.status == JobStatus.SUCCEEDED]  # oldest first
        after = ""
        if finished:
            job = finished[-1]
            rows, duration = _last_run(job)
            after = f" after job {len(finished)} did {rows:,} rows"
            if duration is not None:
                after += f" in {duration:.2f} s"
        self.display.event(f"  optimizer: batch size {old:,} -> {new:,}{after}")

    def _follow_holds(self, operation: OperationRecord, now: float) -> None:
        until = operation.on_hold_until
        held = until is not None and until > _aware_now()
        current = self.hold
        if held and until is not None:
            if current is None:
                reason = operation.hold_reason or "health stop"
                self.holds.append(HoldSeen(reason, until, now, operation.processed_tuple_count))
                self.display.event(f"  health: STOP - {reason}")
                self.display.event(
                    f"  health: operation on hold until {_clock(until)}: work stops at a "
                    "sub-batch checkpoint and waits"
                )
                if self.scripted is not None:
                    self.scripted.disarm()
            else:
                current.until = max(current.until, until)
            return
        if current is not None and (
            operation.processed_tuple_count > current.processed_at_start or not operation.unfinished
        ):
            current.resumed_at = now
            self.display.event(
                f"  health: hold over, resumed by itself after {current.held_seconds:.1f} s"
            )

    def _arm(self, operation: OperationRecord) -> None:
        if self.scripted is None or self.scripted.armed:
            return
        # Not near the end: a hold with nothing left to do would show nothing.
        if ARM_AT <= (operation.progress or 0.0) < ARM_BEFORE and operation.unfinished:
            self.scripted.arm()
            self.display.event(
                f"  health: {operation.progress or 0:.0%} processed - the demo's health "
                "indicator now answers STOP"
            )


def _last_run(job: JobRecord) -> tuple[int, float | None]:
    """Rows and seconds of the job's last run (a job stopped by a hold runs twice)."""
    metrics = job.metrics or {}
    rows = int(metrics.get("processed_tuples", job.processed_tuple_count))
    duration = metrics.get("duration_seconds")
    if duration is None and job.started_at and job.finished_at:
        duration = (job.finished_at - job.started_at).total_seconds()
    return rows, None if duration is None else float(duration)


def _aware_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _clock(moment: datetime.datetime) -> str:
    return moment.astimezone().strftime("%H:%M:%S.%f")[:-5]

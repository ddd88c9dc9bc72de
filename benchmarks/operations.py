"""The operation classes the benchmarks run (imported by the benchmark scripts and by the
worker application :mod:`benchmarks.app`, so both resolve them by name)."""

from __future__ import annotations

import dramatiq_bbo as bbo

#: channel on which :class:`TouchAndNotify` and :class:`Notify` announce each committed
#: sub-batch
NOTIFY_CHANNEL = "bbo_bench_committed"


class DeleteAll(bbo.BaseOperation):
    """Delete every row of the range: the framework side of the throughput benchmark."""

    name = "bench.delete_all"
    operation_name = "delete_all"
    feature_category = "benchmarks"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.delete()


class TouchAndNotify(bbo.BaseOperation):
    """Add a visit to each row; ``NOTIFY`` the operation id in the sub-batch's transaction,
    so the listener hears it exactly when the sub-batch commits (latency benchmark)."""

    name = "bench.touch_and_notify"
    operation_name = "touch"
    feature_category = "benchmarks"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)
            sub_batch.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, str(self.operation.id)])


class Notify(bbo.BaseOperation):
    """Only ``NOTIFY`` the operation id in each sub-batch's transaction: one statement, what
    the bare hop's actor runs (:mod:`benchmarks.hop`), so the latency benchmark compares the
    two paths to the database, not two amounts of work."""

    name = "bench.notify"
    operation_name = "notify"
    feature_category = "benchmarks"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, str(self.operation.id)])


class Small(bbo.BaseOperation):
    """A small job that only walks its rows (one trivial statement per sub-batch): the
    many-small-operations benchmark measures the pipeline's dispatch, not the work."""

    name = "bench.small"
    operation_name = "small"
    feature_category = "benchmarks"
    pause_ms = 0

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.execute("SELECT 1")

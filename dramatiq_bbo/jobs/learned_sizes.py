"""Learned batch sizes: what the optimizer reached for a configuration, kept when an operation
finishes, so that the next operation of that configuration starts there instead of at the
default (an hourly purge would otherwise relearn, from 1,000 rows, the ~46,000 it reached the
hour before).

A configuration is the operation class, the table (schema and name), the cursor column and
the database: what a row costs depends on the class's work and the table's rows, not on the
arguments or the organization that pick which rows (one user's delete teaches the next
user's). The lesson is the batch size the optimizer set after the operation's last job,
together with the job duration it was aimed at; a new operation with a shorter interval
starts proportionally smaller, never larger (:func:`~dramatiq_bbo.jobs.optimizer.learned_start`),
within its own ``min_batch_size``/``max_batch_size``. An explicit ``enqueue(batch_size=...)``
always wins. The rows live in ``bbo.learned_batch_sizes`` (one per configuration, the latest
lesson only); deleting them makes the next operations start from their defaults again.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..queries import query
from ..state.records import OperationRecord
from .optimizer import learned_start

__all__ = ["recall", "remember"]


def remember(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    batch_size: int,
    target_seconds: float,
) -> None:
    """Keep ``batch_size`` (aimed at jobs of ``target_seconds``) as the lesson of
    ``operation``'s configuration, in the caller's transaction (the one finishing it)."""
    table = operation.table_ref
    conn.execute(
        query("learning_remember"),
        {
            **configuration(
                operation.job_class_name,
                table.schema,
                table.name,
                operation.column_name,
                operation.database_name,
            ),
            "batch_size": batch_size,
            "target_duration_seconds": target_seconds,
            "operation_id": str(operation.id),
        },
    )


def recall(
    conn: psycopg.Connection[Any],
    key: dict[str, Any],
    *,
    target_seconds: float,
    sizes: dict[str, Any],
) -> int | None:
    """The batch size a new operation of configuration ``key`` (:func:`configuration`) starts
    from — aimed at jobs of ``target_seconds``, within its ``sizes`` bounds — or None when the
    configuration learned nothing yet. One primary-key read."""
    row = conn.execute(query("learning_recall"), key).fetchone()
    if row is None:
        return None
    return learned_start(
        int(row[0]),
        float(row[1]),
        target_seconds,
        min_batch_size=int(sizes["min_batch_size"]),
        max_batch_size=int(sizes["max_batch_size"]),
        sub_batch_size=int(sizes["sub_batch_size"]),
    )


def configuration(
    class_name: str, table_schema: str, table_name: str, column_name: str, database: str
) -> dict[str, Any]:
    """The key a lesson is kept under, as the queries' parameters."""
    return {
        "job_class_name": class_name,
        "table_schema": table_schema,
        "table_name": table_name,
        "column_name": column_name,
        "database_name": database,
    }

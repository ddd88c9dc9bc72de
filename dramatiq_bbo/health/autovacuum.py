"""Stop while autovacuum works on the operation's table.

A bulk update or delete on a table autovacuum is vacuuming competes with it for I/O and keeps
making the dead tuples it is there to remove; an anti-wraparound vacuum must above all not be
slowed down. The table counts with its partitions and their TOAST tables.

Who sees what. With ``pg_read_all_stats`` (``pg_monitor``, superuser) the worker's query text
says whether it vacuums or analyzes and whether the vacuum is to prevent wraparound; an
autoanalyze does not stop work. Without it, ``pg_stat_activity`` hides who a backend is, but
the role still sees a vacuum in progress (``pg_stat_progress_vacuum``, relation hidden) holding
the table's ``SHARE UPDATE EXCLUSIVE`` lock (``pg_locks``): that stops work too, autovacuum or
manual ``VACUUM`` (the role cannot tell), and wraparound is inferred from the age of the
table's ``relfrozenxid`` / ``relminmxid`` against ``autovacuum_*freeze_max_age``.
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from ..queries import query
from .base import Context, Result, Signal

_HIDDEN = "autovacuum or manual: grant pg_read_all_stats to tell"


class Autovacuum:
    """``STOP`` while an autovacuum worker vacuums the operation's table.

    Settings (``bbo.configure(health={...})``), defaults in :attr:`defaults`:

    - ``autovacuum_stop_on_any`` (``True``): stop for any autovacuum of the table; False:
      only for anti-wraparound vacuums, letting ordinary ones run alongside the operation.

    ``NOT_AVAILABLE`` when the table no longer exists.
    """

    name = "autovacuum"
    cache_seconds = 1.0
    per_table = True

    def check(self, context: Context) -> Result:
        schema, name, _oid = context.operation.table_ref
        table = context.operation.table_display
        with context.connection.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                query("health_autovacuum_workers"), {"schema": schema, "name": name}
            ).fetchall()
        if not rows or not rows[0]["table_exists"]:
            return Result(self.name, Signal.NOT_AVAILABLE, f"table {table} does not exist")
        wraparound_only = not context.threshold("autovacuum_stop_on_any")
        stops: list[str] = []
        notes: list[str] = []
        for row in rows:
            if row["pid"] is None:
                continue
            work = _describe(row)
            if work is None:
                continue
            description, stopping, wraparound = work
            if stopping and (wraparound or not wraparound_only):
                stops.append(description)
            else:
                notes.append(description)
        if stops:
            return Result(self.name, Signal.STOP, "; ".join(stops))
        if notes:
            return Result(self.name, Signal.NORMAL, "; ".join(notes) + " (not a stop)")
        return Result(self.name, Signal.NORMAL, f"no autovacuum on {table}")


def _describe(row: dict[str, Any]) -> tuple[str, bool, bool] | None:
    """(description, stops work, anti-wraparound) of one worker, None if not on the table."""
    query_text: str | None = row["query"]
    visible = query_text is not None and query_text.startswith("autovacuum:")
    on_table = bool(row["progress_on_table"]) or bool(row["locked_relations"])
    if not on_table:
        return None
    relation = row["progress_relation"] if row["progress_on_table"] else None
    relation = relation or (row["locked_relations"] or ["?"])[0]
    if not visible:
        wraparound = bool(row["wraparound_age"])
        kind = "vacuum (to prevent wraparound)" if wraparound else "vacuum"
        return f"{kind} on {relation} (pid {row['pid']}; {_HIDDEN})", True, wraparound
    assert query_text is not None
    vacuum = query_text.startswith("autovacuum: VACUUM")
    wraparound = "(to prevent wraparound)" in query_text
    kind = "autovacuum (to prevent wraparound)" if wraparound else "autovacuum"
    if not vacuum:
        kind = "autoanalyze" if "ANALYZE" in query_text else "autovacuum work item"
    details = [f"pid {row['pid']}"]
    if row["phase"]:
        details.append(f"phase {row['phase']!r}")
    if row["seconds"] is not None:
        details.append(f"running {row['seconds']:.1f} s")
    return f"{kind} on {relation} ({', '.join(details)})", vacuum, wraparound

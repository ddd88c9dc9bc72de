"""Stop while a standby replays too far behind the primary.

A bulk operation writes WAL faster than a standby may replay it; reads sent to the standby
then see stale data and a failover loses more. Measured on the primary from
``pg_stat_replication``: bytes between the primary's current WAL position and each standby's
``replay_lsn`` (deterministic: it grows as soon as the standby stops replaying), and the
standby's ``replay_lag`` (time, as last measured by Postgres). Either over its threshold stops.

A server without standbys answers ``NORMAL`` ("no standby"): there is nothing to wait for,
which is a fact, not a failure to measure. Walsenders that never replay (``pg_basebackup``,
``pg_receivewal``: no ``replay_lsn``) are not standbys here.
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from ..queries import query
from .base import Context, Result, Signal
from .wal_rate import format_bytes


class ReplicationLag:
    """``STOP`` when any standby's replay lag exceeds ``max_replication_lag_bytes`` or
    ``max_replication_lag_seconds``.

    Settings (``bbo.configure(health={...})``), defaults in :attr:`defaults`:

    - ``max_replication_lag_bytes`` (``1 GiB``): WAL not yet replayed by a standby.
    - ``max_replication_lag_seconds`` (``60.0``): ``replay_lag`` of a standby.

    ``NORMAL`` without standbys; ``NOT_AVAILABLE`` on a standby (ask its primary) and when the
    role may not read ``pg_stat_replication`` details (needs ``pg_read_all_stats`` or
    ``pg_monitor``).
    """

    name = "replication_lag"
    cache_seconds = 1.0
    per_table = False

    def check(self, context: Context) -> Result:
        with context.connection.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("health_replication_lag")).fetchall()
        if rows[0]["in_recovery"]:
            return Result(self.name, Signal.NOT_AVAILABLE, "server is a standby; ask its primary")
        senders = [r for r in rows if r["pid"] is not None]
        if senders and all(r["state"] is None for r in senders):
            return Result(
                self.name,
                Signal.NOT_AVAILABLE,
                f"{len(senders)} standby connection(s), but the role may not read their lag "
                "(grant pg_read_all_stats or pg_monitor)",
            )
        standbys = [r for r in senders if r["replay_bytes"] is not None]
        if not standbys:
            return Result(self.name, Signal.NORMAL, "no standby")
        max_bytes = float(context.threshold("max_replication_lag_bytes"))
        max_seconds = float(context.threshold("max_replication_lag_seconds"))
        over = [
            r
            for r in standbys
            if r["replay_bytes"] > max_bytes or (r["replay_seconds"] or 0.0) > max_seconds
        ]
        limits = f"stop above {format_bytes(max_bytes)} or {max_seconds:g} s"
        if over:
            lagging = "; ".join(_describe(r) for r in over)
            return Result(self.name, Signal.STOP, f"{lagging} ({limits})")
        worst = max(standbys, key=lambda r: r["replay_bytes"])
        return Result(
            self.name,
            Signal.NORMAL,
            f"{len(standbys)} standby(s), most behind: {_describe(worst)} ({limits})",
        )


def _describe(row: dict[str, Any]) -> str:
    who = row["application_name"] or f"pid {row['pid']}"
    if row["client_addr"]:
        who = f"{who} at {row['client_addr']}"
    lag = f"{format_bytes(row['replay_bytes'])} behind"
    if row["replay_seconds"] is not None:
        lag += f", replay lag {row['replay_seconds']:.1f} s"
    return f"standby {who!r} ({row['state']}) replays {lag}"

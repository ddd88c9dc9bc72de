"""Indicator ``long_transaction``: the oldest open transaction / xmin horizon of the database.

While a transaction (or a long query's snapshot, a prepared transaction, a replication slot
with hot-standby feedback) holds the xmin horizon back, vacuum cannot remove the dead rows a
bulk update or delete leaves: running on would only bloat the table. Stops when the worst
holder of the operation's database is older than ``max_transaction_age_seconds`` (default
600) or ``max_xmin_age_xids`` transaction ids (default 10 000 000).

Sessions of other roles show their xmin but not their age unless the role has
``pg_read_all_stats``; when such a session holds a snapshot and nothing visible is over the
thresholds, the answer is ``NOT_AVAILABLE`` (with the grant to make in the reason).
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from ..queries import query
from .base import Context, Result, Signal


class LongTransaction:
    name = "long_transaction"
    cache_seconds = 1.0
    per_table = False  # the horizon is the database's, whatever the table

    def check(self, context: Context) -> Result:
        max_seconds = float(context.threshold("max_transaction_age_seconds"))
        max_xids = int(context.threshold("max_xmin_age_xids"))
        with context.connection.cursor(row_factory=dict_row) as cur:
            row: dict[str, Any] = cur.execute(
                query("health_oldest_transaction"),
                {"max_seconds": max_seconds, "max_xids": max_xids},
            ).fetchone()
        holder, seconds, xids = row["holder"], row["age_seconds"], row["xid_age"]
        if holder is not None:
            if seconds is not None and seconds > max_seconds:
                return Result(
                    self.name,
                    Signal.STOP,
                    f"{holder} has held a transaction open for {seconds:.0f}s "
                    f"(max_transaction_age_seconds {max_seconds:g})",
                )
            if xids is not None and xids > max_xids:
                return Result(
                    self.name,
                    Signal.STOP,
                    f"{holder} holds the xmin horizon {xids} transaction ids back "
                    f"(max_xmin_age_xids {max_xids})",
                )
        if row["hidden"]:
            return Result(
                self.name,
                Signal.NOT_AVAILABLE,
                f"{row['hidden']} session(s) of other roles hold a snapshot whose age this "
                "role cannot read: GRANT pg_read_all_stats TO it",
            )
        return Result(self.name, Signal.NORMAL)

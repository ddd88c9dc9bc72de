"""Indicator ``saturation``: client backends ÷ ``max_connections`` on the server.

A server close to its connection limit refuses the application's own connections next; a
background operation holds at least one of them and its bookkeeping briefly another. Stops
above ``max_connection_ratio`` (default 0.9). Sessions of other roles whose type this role
may not read count as client backends when they belong to a user (a conservative count).
"""

from __future__ import annotations

from ..queries import query
from .base import Context, Result, Signal


class ConnectionSaturation:
    name = "saturation"
    cache_seconds = 1.0
    per_table = False  # one answer for the whole server

    def check(self, context: Context) -> Result:
        limit = float(context.threshold("max_connection_ratio"))
        row = context.connection.execute(query("health_connection_saturation")).fetchone()
        backends, max_connections = int(row[0]), int(row[1])
        ratio = backends / max_connections if max_connections else 1.0
        reason = (
            f"{backends} of max_connections {max_connections} in use "
            f"({ratio:.0%}; max_connection_ratio {limit:g})"
        )
        return Result(self.name, Signal.STOP if ratio > limit else Signal.NORMAL, reason)

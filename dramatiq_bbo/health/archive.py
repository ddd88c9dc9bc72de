"""Stop while too many WAL segments wait for archival.

When ``archive_command`` fails or falls behind, every segment the operation writes stays in
``pg_wal`` until it is archived; a bulk operation can then fill the disk. The backlog is the
number of ``.ready`` files in ``pg_wal/archive_status`` (``pg_ls_archive_statusdir()``, for
superusers and ``pg_monitor``). For other roles it is estimated from ``pg_stat_archiver``:
segments between the last one archived and the one being written — which needs something to
have been archived once on the current timeline.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..queries import query
from .base import Context, Result, Signal

_SEGMENT_NAME_LENGTH = 24


class ArchiveBacklog:
    """``STOP`` when more than ``max_archive_backlog_segments`` WAL segments wait for
    archival.

    Settings (``bbo.configure(health={...})``), defaults in :attr:`defaults`:

    - ``max_archive_backlog_segments`` (``42``): the most segments waiting (16 MiB each by
      default) before work stops.

    ``NOT_AVAILABLE`` when ``archive_mode`` is off, on a standby (it does not archive what it
    replays, ``archive_mode = always`` aside), and when the role may neither list
    ``archive_status`` nor count from ``pg_stat_archiver``.
    """

    name = "wal_archive"
    cache_seconds = 1.0
    per_table = False

    def check(self, context: Context) -> Result:
        conn = context.connection
        with conn.cursor(row_factory=dict_row) as cur:
            state = cur.execute(query("health_archive_state")).fetchone()
        if state["in_recovery"]:
            return Result(self.name, Signal.NOT_AVAILABLE, "server is a standby")
        if state["archive_mode"] == "off":
            return Result(self.name, Signal.NOT_AVAILABLE, "archive_mode is off")
        limit = int(context.threshold("max_archive_backlog_segments"))
        waiting, how = _ready_files(conn)
        if waiting is None:
            waiting, how = _estimate(state)
        if waiting is None:
            return Result(self.name, Signal.NOT_AVAILABLE, how)
        failing = ""
        if state["last_failed_wal"] and state["failed_count"]:
            failing = (
                f"; archive_command failed {state['failed_count']} times, last on "
                f"{state['last_failed_wal']}"
            )
        reason = f"{waiting} WAL segments wait for archival ({how}; stop above {limit}){failing}"
        return Result(self.name, Signal.STOP if waiting > limit else Signal.NORMAL, reason)


def _ready_files(conn: Any) -> tuple[int | None, str]:
    """Count the ``.ready`` status files, if the role may list them."""
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(query("health_archive_ready_files")).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None, "no right to list archive_status"
    oldest = f", oldest {row['oldest']}" if row["oldest"] else ""
    return int(row["ready"]), f".ready files{oldest}"


def _estimate(state: dict[str, Any]) -> tuple[int | None, str]:
    """Segments between the last archived and the current one, from ``pg_stat_archiver``."""
    last, current = state["last_archived_wal"], state["current_wal"]
    refused = (
        "the role may not list pg_wal/archive_status (grant pg_monitor) and pg_stat_archiver "
        "cannot tell"
    )
    if not _is_segment(last) or not _is_segment(current):
        return None, f"{refused}: nothing archived yet on this timeline"
    if last[:8] != current[:8]:
        return None, f"{refused}: the last archived segment is on another timeline"
    per_id = 0x1_0000_0000 // int(state["wal_segment_size"])
    behind = _segment_number(current, per_id) - _segment_number(last, per_id) - 1
    return max(0, behind), "estimated from pg_stat_archiver"


def _is_segment(name: Any) -> bool:
    return (
        isinstance(name, str)
        and len(name) >= _SEGMENT_NAME_LENGTH
        and all(c in "0123456789ABCDEF" for c in name[:_SEGMENT_NAME_LENGTH])
    )


def _segment_number(name: str, per_id: int) -> int:
    return int(name[8:16], 16) * per_id + int(name[16:24], 16)

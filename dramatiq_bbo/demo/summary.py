"""The demo's closing summary: what was deleted and kept, how the run went, as a table or JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Summary:
    server: str  # "embedded" or "dsn"
    status: str  # the operation's final status ("finished"), "timeout" or "interrupted"
    operation_id: str
    rows: int  # rows in the table before the operation
    matching: int  # rows the operation had to delete (done, last updated before the cutoff)
    deleted: int
    kept: int
    matching_left: int  # matching rows still there afterwards: 0 when all went well
    processed: int  # rows the keyset walk visited
    jobs: int
    batch_size_first: int
    batch_size_last: int
    batch_size_changes: list[tuple[int, int]]
    operation_seconds: float  # enqueue to finished, holds included
    rows_per_second: float  # processed ÷ operation_seconds
    holds: list[dict[str, Any]]
    hold_note: str | None  # why the health hold part was skipped, if it was
    setup_seconds: float  # server, schema, data
    elapsed_seconds: float  # the whole demo, cleanup included
    data_directory: str | None = None  # the embedded server's (gone after the demo)
    cleanup: list[str] = field(default_factory=list)  # what was stopped, in order
    #: what the demo leaves on a server given by --dsn (empty: nothing), one line each
    left: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.status == "finished"
            and self.matching_left == 0
            and self.deleted == self.matching
            and self.kept == self.rows - self.matching
        )

    def as_json(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "ok": self.ok}, indent=2)

    def as_table(self) -> str:
        changes = len(self.batch_size_changes)
        holds = "; ".join(
            f"{h['reason']} ({h['held_seconds']:.1f} s)"
            if h.get("held_seconds") is not None
            else f"{h['reason']} (not over)"
            for h in self.holds
        )
        rows = [
            ("operation", f"{self.operation_id}: {self.status}"),
            ("rows deleted", f"{self.deleted:,} of {self.matching:,} matching"),
            ("rows kept", f"{self.kept:,} of {self.rows:,}"),
            ("matching rows left", f"{self.matching_left:,}"),
            ("jobs", f"{self.jobs:,}"),
            (
                "batch size",
                f"{self.batch_size_first:,} -> {self.batch_size_last:,} "
                f"({changes} change{'' if changes == 1 else 's'})",
            ),
            ("duration", f"{self.operation_seconds:.1f} s (enqueue to finished)"),
            ("rows/s", f"{self.rows_per_second:,.0f} (rows walked)"),
            ("health holds", f"{len(self.holds)}: {holds}" if self.holds else "0"),
            ("setup", f"{self.setup_seconds:.1f} s (server, schema, {self.rows:,} rows)"),
            ("elapsed", f"{self.elapsed_seconds:.1f} s in all"),
        ]
        if self.hold_note:
            rows.insert(9, ("", f"(hold skipped: {self.hold_note})"))
        if self.server == "dsn":
            rows += [("left on the server", line) for line in self.left or ["nothing"]]
        width = max(len(name) for name, _ in rows)
        lines = [f"  {name:<{width}}  {value}" for name, value in rows]
        return "\n".join(["summary", *lines])

"""What the demo leaves on a server of yours (``--dsn``), and removing all of it it can.

Besides its schema ``bbo_demo`` (:mod:`.table`), a demo run on your server writes its
operation and job rows in the ``bbo`` schema and dramatiq messages in ``dramatiq.queue`` — and
installs both schemas when they were not there. At the end it deletes its own rows and
messages; it drops a schema only when it installed it itself and nothing but its own rows is
in it. Whatever stays is said, one line each, in the summary (``left``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..db import connect
from ..queries import query
from .operation import DATABASE, PurgeDoneTodos


@dataclass
class Leftovers:
    """Which schemas were there before the demo, and what it left at the end."""

    dsn: str
    queue: str
    had_bbo: bool = True
    had_dramatiq: bool = True
    left: list[str] = field(default_factory=list)

    @classmethod
    def before(cls, dsn: str, queue: str) -> Leftovers:
        """Note which schemas exist now, before the demo migrates the database."""
        with connect(dsn, autocommit=True) as conn:
            row = conn.execute(query("demo_schemas_present")).fetchone()
        assert row is not None
        return cls(dsn, queue, had_bbo=bool(row[0]), had_dramatiq=bool(row[1]))

    @property
    def queues(self) -> list[str]:
        return [self.queue, f"{self.queue}.DQ", f"{self.queue}.XQ"]

    def remove(self) -> None:
        """Delete the demo's rows and messages; drop the schemas it installed when nothing
        else is in them; note in ``left`` what stays."""
        names = {
            "database_name": DATABASE,
            "class_name": PurgeDoneTodos.name,
            "queues": self.queues,
        }
        with connect(self.dsn, autocommit=True) as conn, conn.transaction():
            conn.execute(query("demo_delete_jobs"), names)
            conn.execute(query("demo_delete_operations"), names)
            conn.execute(query("demo_delete_messages"), names)
            row = conn.execute(query("demo_foreign_rows"), names).fetchone()
            assert row is not None
            operations, messages = int(row[0]), int(row[1])
            drop_bbo = not self.had_bbo and operations == 0
            drop_dramatiq = not self.had_dramatiq and messages == 0 and drop_bbo
            if drop_dramatiq:
                conn.execute(query("demo_drop_dramatiq_schema"))
            if drop_bbo:
                conn.execute(query("demo_drop_bbo_schema"))
        self.left = self._what_stays(drop_bbo, drop_dramatiq, operations, messages)

    def _what_stays(
        self, drop_bbo: bool, drop_dramatiq: bool, operations: int, messages: int
    ) -> list[str]:
        left = []
        if not drop_bbo:
            why = (
                "it was there before the demo"
                if self.had_bbo
                else f"it holds {operations} operation(s) that are not the demo's"
            )
            left.append(f"schema bbo ({why}; the demo's rows were deleted)")
        if not drop_dramatiq:
            why = (
                "it was there before the demo"
                if self.had_dramatiq
                else "schema bbo stays"
                if not drop_bbo
                else f"it holds {messages} message(s) of other queues"
            )
            left.append(f"schema dramatiq ({why}; the demo's messages were deleted)")
        return left

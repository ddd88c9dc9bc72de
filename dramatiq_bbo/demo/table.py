"""The demo's data: a table of todos in a schema of its own, and the counts the summary checks.

Everything lives in schema ``bbo_demo``, marked by its comment, so the demo never drops a
schema it did not make: a leftover of an interrupted demo is replaced, anything else named
``bbo_demo`` is refused. The statements are the ``demo_*`` queries of ``queries/demo.sql``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from ..db import connect
from ..errors import ConfigurationError
from ..queries import query

SCHEMA = "bbo_demo"
TABLE = "bbo_demo.todos"
#: the schema comment that says "the demo made this" (written by ``demo_mark_schema``)
MARK = "dramatiq-bbo demo data: dropped when the demo ends"
#: rows last updated before ``now - CUTOFF_AGE`` (and done) are the ones the demo deletes
CUTOFF_AGE = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Counts:
    rows: int
    matching: int


def create(dsn: str, rows: int, now: datetime.datetime) -> None:
    """Create and fill ``bbo_demo.todos`` with ``rows`` rows, index it and analyse it."""
    with connect(dsn, autocommit=True) as conn:
        found = conn.execute(query("demo_schema_comment")).fetchone()
        if found is not None and found[0] != MARK:
            raise ConfigurationError(
                f"schema {SCHEMA!r} already exists in this database and was not made by the "
                "demo; drop it or run the demo on another database"
            )
        conn.execute(query("demo_drop_schema"))  # a leftover of an interrupted demo
        with conn.transaction():
            conn.execute(query("demo_create_schema"))
            conn.execute(query("demo_mark_schema"))
            conn.execute(query("demo_create_table"))
            conn.execute(query("demo_fill_table"), {"rows": rows, "now": now})
            conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
            conn.execute(query("demo_add_primary_key"))
        conn.execute(query("demo_analyze"))


def counts(dsn: str, cutoff: datetime.datetime) -> Counts:
    with connect(dsn, autocommit=True) as conn:
        row = conn.execute(query("demo_counts"), {"cutoff": cutoff}).fetchone()
    assert row is not None
    return Counts(rows=int(row[0]), matching=int(row[1]))


def drop(dsn: str) -> None:
    """Drop the demo's schema if it is the demo's own."""
    with connect(dsn, autocommit=True) as conn:
        found = conn.execute(query("demo_schema_comment")).fetchone()
        if found is not None and found[0] == MARK:
            conn.execute(query("demo_drop_schema"))

"""The operations list as the web page pages it: one page of ``bbo.operations`` and a count.

The reading API (:func:`dramatiq_bbo.operate.summaries.list_operations`) returns the newest
operations up to a limit; a page needs an offset and the number of matches as well, so this
module reads the same view through named queries of its own (``queries/web.sql``). The
filters are read by the command layer's parsers (:mod:`..operate.arguments`), so the page
accepts and refuses exactly what the command line and ChatOps do. The count and
the page's keys are read from the operation tables: through the view, Postgres would compute
every operation's job counts and rate before sorting, only to throw all but a page away.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg.rows import dict_row

from ..db import REGISTRY
from ..errors import InvalidArgument
from ..operate import arguments as read
from ..operate.summaries import OperationSummary
from ..queries import query
from ..state.records import OperationStatus

#: operations on one page of the list
PAGE_SIZE = 50
#: the highest page number accepted (beyond it the offset would read past any real table)
MAX_PAGE = 1_000_000


@dataclass(frozen=True)
class Filters:
    """The list's filters, checked; None means no filter."""

    status: str | None = None
    class_name: str | None = None
    organization_id: int | None = None
    scope: str | None = None

    def as_params(self) -> dict[str, Any]:
        code = None if self.status is None else OperationStatus[self.status.upper()].value
        return {
            "status_code": code,
            "class_name": self.class_name,
            "organization_id": self.organization_id,
            "scope": self.scope,
        }

    def as_query(self) -> dict[str, str]:
        """The filters as the page's query string holds them (for the pager's links)."""
        values = {
            "status": self.status,
            "class": self.class_name,
            "organization": self.organization_id,
            "scope": self.scope,
        }
        return {key: str(value) for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class Page:
    """One page of operations, and where it stands among all the matches."""

    operations: list[OperationSummary]
    number: int
    total: int
    size: int
    filters: Filters = field(default_factory=Filters)

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def first_row(self) -> int:
        return 0 if self.total == 0 else (self.number - 1) * self.size + 1

    @property
    def last_row(self) -> int:
        return (self.number - 1) * self.size + len(self.operations)


def filters(values: dict[str, str | None]) -> Filters:
    """Filters from a query string's values (empty means none); InvalidArgument when one is
    not a value the command line accepts (the same parsers: InvalidCommand)."""

    def given(name: str, parse: Callable[..., Any]) -> Any:
        value = values.get(name)
        if value is None or not value.strip():
            return None
        return parse(value, option=name)

    return Filters(
        status=given("status", read.status),
        class_name=given("class", read.class_name),
        organization_id=given("organization", read.organization),
        scope=given("scope", read.scope),
    )


def page_number(text: str | None) -> int:
    """The page asked for (1 when none); InvalidArgument when it is not a page number."""
    if text is None or not text.strip():
        return 1
    if not text.strip().isdecimal() or not 1 <= int(text) <= MAX_PAGE:
        raise InvalidArgument(f"page={text!r} is not a page number (1 to {MAX_PAGE:,})")
    return int(text)


def read_page(database: str, chosen: Filters, number: int = 1, size: int = PAGE_SIZE) -> Page:
    """Page ``number`` of the operations matching ``chosen``, newest first: the count and the
    page's keys from the tables, then those rows from ``bbo.operations``, in the page's order."""
    params = chosen.as_params()
    with REGISTRY.connection(database) as conn, conn.transaction():
        conn.execute(query("web_without_jit"))
        row = conn.execute(query("web_operations_count"), params).fetchone()
        total = int(row[0]) if row else 0
        keys = conn.execute(
            query("web_operations_page"), {**params, "limit": size, "offset": (number - 1) * size}
        ).fetchall()
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                query("web_operations_by_id"), {"ids": [key for _, key in keys]}
            ).fetchall()
    by_key = {(r["scope"], r["id"]): r for r in rows}
    found = [OperationSummary.from_row(by_key[k]) for k in map(tuple, keys) if k in by_key]
    return Page(found, number, total, size, chosen)

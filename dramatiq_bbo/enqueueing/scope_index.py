"""Noticing, at enqueue, a ``scope()`` that no index serves.

A scope narrows the walk inside the cursor's range; without an index on the scope's columns
(followed by the cursor's), every batch reads its whole range to find the scoped rows — on a
big table, minutes of reading for a user's ten rows. Enqueue does not refuse that (the table
may be small, or the index on its way), but it says so: it plans the first batch's probe
(``SELECT cursor FROM table WHERE scope ORDER BY cursor LIMIT batch_size``) with sequential
scans disabled, so that the plan shows whether *some* index can serve the scope whatever the
table's current size, and warns when the target table is still read by a sequential scan, or
by an index scan that filters the scope instead of using it. The warning names the index to
create when the scope's columns can be read from the query: ``CREATE INDEX CONCURRENTLY ON
table (scope columns..., cursor columns...)``.

Planning only (``EXPLAIN`` without ``ANALYZE``), in a savepoint rolled back afterwards; a probe
that fails to plan gives no warning rather than failing the enqueue.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import peewee
import psycopg
from psycopg import sql

from ..logs import logger
from ..queries import query
from ..walk.catalog import TableInfo, quote_ident
from ..walk.keyset import column_field


def unindexed_scope(
    conn: psycopg.Connection[Any],
    table: TableInfo,
    model: Any,
    scoped: Any,
    cursor_columns: Sequence[str],
    batch_size: int,
) -> str | None:
    """A warning when no index serves the scoped query ``scoped`` on ``table``, else None."""
    scope_columns = [c for c in _columns(getattr(scoped, "_where", None), model)]
    scope_columns = [c for c in dict.fromkeys(scope_columns) if c not in cursor_columns]
    try:
        probe = scoped.order_by(*[column_field(model, c) for c in cursor_columns]).limit(batch_size)
        text, params = probe.sql()
        with conn.transaction(force_rollback=True):
            relations = {
                (r[0], r[1])
                for r in conn.execute(query("catalog_table_relations"), {"oid": table.oid})
            }
            conn.execute(query("scope_probe_without_seqscan"))
            explain = sql.SQL("EXPLAIN (FORMAT JSON, VERBOSE) ") + sql.SQL(text)
            row = conn.execute(explain, params).fetchone()
    except Exception as exc:  # a warning must never fail the enqueue it is about
        logger.debug("could not plan the scope probe of %s: %s", table.display, exc)
        return None
    plan = row[0] if row is not None else None
    if isinstance(plan, str):
        plan = json.loads(plan)
    if not plan:
        return None
    scans = [
        n for n in _nodes(plan[0]["Plan"]) if (n.get("Schema"), n.get("Relation Name")) in relations
    ]
    unserved = [n for n in scans if _unserved(n, scope_columns)]
    if not unserved:
        return None
    how = unserved[0]["Node Type"]
    advice = (
        f"add CREATE INDEX CONCURRENTLY ON {table.display} "
        f"({', '.join(quote_ident(c) for c in [*scope_columns, *cursor_columns])})"
        if scope_columns
        else "add an index on the scope's columns followed by the cursor's"
    )
    return (
        f"the scope of this operation on {table.display} is not served by any index (its "
        f"first batch is planned as a {how} of the table, filtering the scope), so every "
        f"batch reads its whole range to find the scoped rows; {advice}"
    )


def _unserved(node: dict[str, Any], scope_columns: list[str]) -> bool:
    """The scan reads the table without an index condition on the scope."""
    if node["Node Type"] == "Seq Scan":
        return True
    if "Filter" not in node:
        return False
    conditions = " ".join(
        str(n.get(key, "")) for n in _nodes(node) for key in ("Index Cond", "Recheck Cond")
    )
    return not any(_mentions(conditions, column) for column in scope_columns)


def _mentions(text: str, column: str) -> bool:
    pattern = r'(?<![\w"$])' + re.escape(quote_ident(column)) + r'(?![\w"$])'
    return re.search(pattern, text) is not None


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    stack = [plan]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.get("Plans", []))


def _columns(node: Any, model: Any, depth: int = 0) -> Iterator[str]:
    """The columns of ``model`` a peewee condition reads (not those of subqueries)."""
    if node is None or depth > 64:
        return
    if isinstance(node, peewee.Field):
        if node.model is model:
            yield node.column_name
        return
    children: list[Any] = []
    if isinstance(node, peewee.Expression):
        children = [node.lhs, node.rhs]
    elif isinstance(node, peewee.NodeList):
        children = list(node.nodes)
    elif isinstance(node, peewee.Function):
        children = list(node.arguments or ())
    elif isinstance(node, peewee.WrappedNode):
        children = [node.node]
    elif isinstance(node, list | tuple):
        children = list(node)
    for child in children:
        yield from _columns(child, model, depth + 1)

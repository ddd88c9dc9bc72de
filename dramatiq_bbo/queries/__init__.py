"""Named SQL queries, loaded once from the ``*.sql`` files beside this module.

Each query in a file starts with a header line ``-- name: query_name``, then a one-line
``-- description``, then the statement (procrastinate's layout). Values are always ``%s`` /
``%(name)s`` parameters. Where a query must name one of our own tables, it writes a
placeholder in braces (``{operations}``, ``{jobs}``) that :func:`query` fills with
``psycopg.sql.Identifier`` values chosen by our code, never by input. Literal braces (``'{}'``)
are written doubled (``'{{}}'``).

A placeholder naming another query (``{same_configuration}``) is filled with that query's
text: a piece written once (a WHERE condition, say) that several statements share.
"""

from __future__ import annotations

import re
import string
from functools import cache
from pathlib import Path
from typing import Any

from psycopg import sql

_HEADER = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@cache
def _all() -> dict[str, str]:
    queries: dict[str, str] = {}
    for path in sorted(Path(__file__).parent.glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        parts = _HEADER.split(text)
        # parts = [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise RuntimeError(f"query {name!r} is defined twice (second in {path.name})")
            lines = [line for line in body.strip().splitlines()]
            statement = "\n".join(line for line in lines if not line.startswith("-- ")).strip()
            queries[name] = statement.rstrip(";")
    return queries


def names() -> list[str]:
    return sorted(_all())


def raw(name: str) -> str:
    """The statement text of ``name`` (placeholders unfilled)."""
    return _all()[name]


def query(name: str, **identifiers: Any) -> sql.Composed | sql.SQL:
    """The statement ``name`` with its ``{placeholders}`` filled by SQL identifiers (or
    fragments of our own), and by the queries they name (see the module docstring)."""
    text = raw(name)
    filled: dict[str, Any] = {
        key: value if isinstance(value, sql.Composable) else sql.Identifier(*value)
        for key, value in identifiers.items()
    }
    for piece in _placeholders(text) - filled.keys():
        if piece in _all():
            filled[piece] = query(piece, **identifiers)
    return sql.SQL(text).format(**filled)  # type: ignore[arg-type]


@cache
def _placeholders_of(text: str) -> frozenset[str]:
    return frozenset(field for _, field, _, _ in string.Formatter().parse(text) if field)


def _placeholders(text: str) -> set[str]:
    return set(_placeholders_of(text))

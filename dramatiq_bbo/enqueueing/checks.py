"""The checks of an ``enqueue()`` call that need no database, and the request they yield.

Each argument is checked on its own and refused with a typed error naming the offending value
(and, for sizes, where the value came from: the call, the class, or the settings). The checks
that need the catalog — the table, its cursor columns and indexes — are in
:mod:`dramatiq_bbo.walk.catalog` and run inside enqueue's transaction.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import psycopg

from ..db import REGISTRY
from ..errors import (
    ColumnNotInCursor,
    InvalidArguments,
    InvalidBatchSizes,
    InvalidConnection,
    InvalidPriority,
    InvalidScope,
    UnknownDatabase,
)
from ..operation import BaseOperation
from ..settings import Settings, check_value, clean_text
from ..walk.catalog import check_identifier

SIZES = (
    "batch_size",
    "sub_batch_size",
    "pause_ms",
    "interval_seconds",
    "min_batch_size",
    "max_batch_size",
)
_BIGINT = range(-(2**63), 2**63)
#: widest integer accepted in arguments (what jsonb holds goes far beyond: this is sanity)
_MAX_INT_BITS = 256
_SMALLINT = range(-(2**15), 2**15)


@dataclass(frozen=True)
class EnqueueRequest:
    """An enqueue call after every check that needs no database."""

    operation_class: type[BaseOperation]
    table_name: str
    column_name: str
    cursor_columns: tuple[str, ...]
    arguments_json: str  # canonical: sorted keys, no spaces
    organization_id: int | None
    user_id: int | None
    database: str
    sizes: dict[str, Any]
    priority: int
    #: the call gave batch_size: it wins over the size the configuration learned
    batch_size_given: bool = False

    @property
    def scope(self) -> str:
        return "cell_local" if self.organization_id is None else "organization"


def check_request(
    operation_class: type[BaseOperation],
    table_name: str,
    column_name: str,
    *,
    arguments: Any,
    organization_id: Any,
    user_id: Any,
    user: Any,
    database: Any,
    sizes: dict[str, Any],
    priority: Any,
) -> EnqueueRequest:
    """Check every argument of an enqueue call that can be checked without a database.

    ``sizes`` holds the call's overrides by name (None: take the class's, else the setting)."""
    organization, user_key = _scope(organization_id, user_id, user)
    return EnqueueRequest(
        operation_class=operation_class,
        table_name=table_name,
        column_name=column_name,
        cursor_columns=_cursor_columns(operation_class, column_name),
        arguments_json=_arguments_json(arguments, REGISTRY.settings),
        organization_id=organization,
        user_id=user_key,
        database=_database(operation_class, database),
        sizes=_sizes(operation_class, REGISTRY.settings, sizes),
        priority=_priority(operation_class, priority),
        batch_size_given=sizes.get("batch_size") is not None,
    )


# -- one check per argument --------------------------------------------------------------
def _cursor_columns(cls: type[BaseOperation], column_name: Any) -> tuple[str, ...]:
    if not isinstance(column_name, str) or not column_name:
        raise ColumnNotInCursor(f"column_name must be a non-empty string, got {column_name!r}")
    check_identifier(column_name, "column_name")
    columns = cls.cursor_columns(column_name)
    if column_name not in columns:
        raise ColumnNotInCursor(
            f"column_name {column_name!r} is not a cursor column of {cls.__name__} "
            f"(cursor: {columns!r}); pass one of them"
        )
    return columns


def _arguments_json(arguments: Any, settings: Settings) -> str:
    """The canonical JSON of the arguments (sorted keys): what is stored, compared, hashed."""
    value = {} if arguments is None else arguments
    if not isinstance(value, dict | list):
        raise InvalidArguments(
            f"arguments must be a JSON object (dict) or array (list), got "
            f"{type(value).__name__}: {short(value)}"
        )
    check_json_value(value, settings.max_arguments_depth)
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False
        )
    except (TypeError, ValueError) as exc:
        raise InvalidArguments(
            f"arguments are not JSON-serialisable ({exc}): {short(value)}"
        ) from None
    size = len(text.encode("utf-8"))
    if size > settings.max_arguments_bytes:
        raise InvalidArguments(
            f"arguments take {size} bytes as JSON, more than the limit of "
            f"{settings.max_arguments_bytes} (setting max_arguments_bytes); pass ids or a "
            "reference to the data instead of the data"
        )
    return text


def check_json_value(value: Any, max_depth: int) -> None:
    """Refuse what JSON or ``jsonb`` cannot hold faithfully, naming where it is: nesting
    deeper than ``max_depth`` (checked without recursing that deep), keys that are not
    strings, strings with a NUL (``jsonb`` refuses ``\\u0000``) or a lone surrogate, floats
    that are NaN or infinite, and values of any other type."""
    stack: list[tuple[Any, str, int]] = [(value, "arguments", 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth > max_depth:
                raise InvalidArguments(
                    f"{path} is nested deeper than {max_depth} levels (setting "
                    "max_arguments_depth); pass a flatter structure"
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise InvalidArguments(
                            f"{path} has a key that is not a string ({short(key, 60)}), "
                            f"in {short(item)}"
                        )
                    _check_text(key, f"{path} key {short(key, 60)}")
                    stack.append((child, f"{path}[{short(key, 60)}]", depth + 1))
            else:
                stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        elif isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidArguments(f"{path} is {item!r}, which JSON cannot hold")
        elif isinstance(item, int) and item.bit_length() > _MAX_INT_BITS:
            raise InvalidArguments(
                f"{path} is an int of {item.bit_length()} bits; integers in arguments are "
                f"limited to {_MAX_INT_BITS} bits (pass a string for larger numbers)"
            )
        elif item is not None and not isinstance(item, bool | int | float):
            raise InvalidArguments(
                f"{path} is a {type(item).__name__}, not a JSON value: {short(item)}"
            )


def _check_text(text: str, path: str) -> None:
    if not clean_text(text):
        raise InvalidArguments(
            f"{path} holds a NUL character or a lone surrogate, which the database cannot "
            f"store: {short(text)}"
        )


def short(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters; never fails (a huge int cannot repr)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"<a {type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[:limit] + "..."


def _scope(organization_id: Any, user_id: Any, user: Any) -> tuple[int | None, int | None]:
    if user is not None:
        if organization_id is not None or user_id is not None:
            raise InvalidScope(
                f"give user= or organization_id=/user_id=, not both (user={user!r}, "
                f"organization_id={organization_id!r}, user_id={user_id!r})"
            )
        try:
            organization_id, user_id = user.organization_id, user.id
        except AttributeError:
            raise InvalidScope(
                f"user= must have .id and .organization_id, got {short(user)}"
            ) from None
        if organization_id is None or user_id is None:
            raise InvalidScope(
                f"user {short(user)} has organization_id={organization_id!r} and "
                f"id={user_id!r}; both are needed for an organization-scoped operation"
            )
    if (organization_id is None) != (user_id is None):
        raise InvalidScope(
            f"give both organization_id and user_id (organization-scoped) or neither "
            f"(cell-local), got organization_id={organization_id!r}, user_id={user_id!r}"
        )
    for name, value in (("organization_id", organization_id), ("user_id", user_id)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value not in _BIGINT
        ):
            raise InvalidScope(f"{name} must be an int (bigint range), got {value!r}")
    return organization_id, user_id


def _database(cls: type[BaseOperation], database: Any) -> str:
    name = cls.database if database is None else database
    if not isinstance(name, str):
        raise UnknownDatabase(f"database must be a configured name, got {name!r}")
    REGISTRY.get(name)  # UnknownDatabase, or ConfigurationError before configure()
    return name


def _sizes(
    cls: type[BaseOperation], settings: Settings, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Per-call value, else class attribute, else setting; each checked and named by origin."""
    sizes: dict[str, Any] = {}
    for name in SIZES:
        value, origin = overrides[name], f"enqueue({name}=...)"
        if value is None:
            value, origin = getattr(cls, name), f"{cls.__name__}.{name}"
        if value is None:
            value, origin = getattr(settings, name), f"setting {name}"
        sizes[name] = _checked_size(name, value, origin)
    if sizes["sub_batch_size"] > sizes["batch_size"]:
        raise InvalidBatchSizes(
            f"sub_batch_size {sizes['sub_batch_size']!r} is larger than batch_size "
            f"{sizes['batch_size']!r}; a sub-batch is a slice of a batch"
        )
    if sizes["min_batch_size"] > sizes["max_batch_size"]:
        raise InvalidBatchSizes(
            f"min_batch_size {sizes['min_batch_size']!r} is larger than max_batch_size "
            f"{sizes['max_batch_size']!r}"
        )
    return sizes


def _checked_size(name: str, value: Any, origin: str) -> Any:
    """A size checked against the bounds of the setting of the same name (one place)."""
    return check_value(name, value, origin=origin, error=InvalidBatchSizes)


def _priority(cls: type[BaseOperation], priority: Any) -> int:
    """The call's priority, else the class's, else 0."""
    origin = "priority"
    if priority is None:
        priority, origin = getattr(cls, "priority", None), f"{cls.__name__}.priority"
    return 0 if priority is None else check_priority(priority, origin)


def check_priority(priority: Any, origin: str = "priority") -> int:
    """``priority`` as an int in Postgres's smallint range, or InvalidPriority naming it."""
    if isinstance(priority, bool) or not isinstance(priority, int) or priority not in _SMALLINT:
        raise InvalidPriority(f"{origin} must be an int in -32768..32767, got {priority!r}")
    return priority


def psycopg_connection(connection: Any) -> psycopg.Connection[Any]:
    if isinstance(connection, psycopg.Connection):
        conn = connection
    elif callable(getattr(connection, "connection", None)):
        conn = connection.connection()  # a peewee database: its current connection
    else:
        conn = None
    if not isinstance(conn, psycopg.Connection):
        raise InvalidConnection(
            "connection= must be a psycopg 3 Connection or a peewee Psycopg3Database, "
            f"got {short(connection)}"
        )
    if conn.closed:
        raise InvalidConnection(f"connection= is closed: {short(connection)}")
    return conn

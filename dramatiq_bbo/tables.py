"""peewee models of the tables operations walk, so an author writes ``self.table.done == True``.

The model of a target table is reflected from the catalog (``playhouse.reflection``) the first
time an operation needs it, limited to that one table: foreign keys are read as plain columns,
so reflecting ``todos`` never drags in ``users`` and ``row.user_id`` is a value, not a lazy
query. Fields are named exactly like their columns (``literal_column_names``), which is what
an author reading the table's DDL expects, mixed case included. An operation class may bring
its own model (``model = Todo``) instead; it must be bound to the same database as the state
tables, since the sub-batch transaction and its checkpoint share one connection.

Models are cached per peewee database object (a new ``configure()`` builds new databases, so a
stale model never outlives its configuration) and per ``(schema, table)``; so is what the
catalog says about a stored table name (:func:`table_info`), which every job needs and which
does not change while operations run. After a migration that changes a target table's columns,
call :func:`forget` (or ``configure()`` again). Enqueue validation never uses these caches: it
always reads the catalog.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import peewee
from playhouse.reflection import Introspector, PostgresqlMetadata

from .catalog import TableInfo, resolve_table
from .db import REGISTRY
from .errors import TableNotFound
from .reconnect import heal, is_connection_error

_cache: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], type[peewee.Model]]] = (
    weakref.WeakKeyDictionary()
)
_infos: weakref.WeakKeyDictionary[Any, dict[str, TableInfo]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class _OneTableMetadata(PostgresqlMetadata):  # type: ignore[misc]
    """Reflection metadata that reports no foreign keys (see the module docstring)."""

    def get_foreign_keys(self, table: str, schema: str | None = None) -> list[Any]:
        return []


def peewee_database(database_name: str) -> peewee.Database:
    """The peewee database registered for ``database_name`` (from ``configure()``)."""
    from .models import database_for

    return database_for(database_name)


def table_info(database_name: str, table: TableInfo | str) -> TableInfo:
    """Resolve a stored table name (``schema.table``, literal parts) through the catalog,
    once per process and configuration (see the module docstring)."""
    if isinstance(table, TableInfo):
        return table
    database = peewee_database(database_name)
    with _lock:
        cached = _infos.get(database, {}).get(table)
    if cached is not None:
        return cached
    with REGISTRY.connection(database_name) as conn:
        info = resolve_table(conn, table)
    with _lock:
        return _infos.setdefault(database, {}).setdefault(table, info)


def table_model(
    database_name: str, table: TableInfo | str, *, operation_class: Any = None
) -> type[peewee.Model]:
    """The peewee model of ``table`` in ``database_name``: the class's own ``model`` if it
    names one, else a reflected one, cached."""
    own = getattr(operation_class, "model", None)
    if own is not None:
        return own  # type: ignore[no-any-return]
    info = table_info(database_name, table)
    database = peewee_database(database_name)
    key = (info.schema, info.name)
    with _lock:
        cached = _cache.get(database, {}).get(key)
    if cached is not None:
        return cached
    model = _reflect(database, info)
    with _lock:
        return _cache.setdefault(database, {}).setdefault(key, model)


def forget(database_name: str | None = None) -> None:
    """Drop cached models and catalog answers (after a migration changed a target table)."""
    with _lock:
        if database_name is None:
            _cache.clear()
            _infos.clear()
        else:
            database = peewee_database(database_name)
            _cache.pop(database, None)
            _infos.pop(database, None)


def _reflect(database: peewee.Database, info: TableInfo) -> type[peewee.Model]:
    """Reflect one table on this thread's peewee connection; a connection found dead (a
    restart or ``pg_terminate_backend`` since its last use) is replaced and the reflection,
    which only reads the catalog, tried once more on a new one."""
    heal(database)
    try:
        models = _generate(database, info)
    except Exception as exc:
        if not is_connection_error(exc) or not heal(database):
            raise
        models = _generate(database, info)
    model = models.get(info.name)
    if model is None:
        raise TableNotFound(
            f"table {info.display} could not be reflected (it disappeared, or the role may "
            "not read its catalog entries)"
        )
    return model  # type: ignore[no-any-return]


def _generate(database: peewee.Database, info: TableInfo) -> dict[str, Any]:
    # the metadata object reads pg_type as it is built: on the connection too
    introspector = Introspector(_OneTableMetadata(database), schema=info.schema)
    return introspector.generate_models(  # type: ignore[no-any-return]
        table_names=[info.name], literal_column_names=True
    )


def column_field(model: type[peewee.Model], column: str) -> peewee.Field:
    """The model field stored in ``column`` (fields may be named differently from columns)."""
    try:
        return model._meta.columns[column]  # type: ignore[attr-defined,no-any-return]
    except KeyError:
        names = ", ".join(sorted(model._meta.columns))  # type: ignore[attr-defined]
        raise TableNotFound(
            f"model {model.__name__} has no field for column {column!r} (columns: {names}); "
            "a model given by the operation class must map every cursor column"
        ) from None

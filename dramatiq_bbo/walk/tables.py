"""peewee models of the tables operations walk, so an author writes ``self.table.done == True``.

The model of a target table is reflected from the catalog (``playhouse.reflection``) the first
time an operation needs it, limited to that one table: foreign keys are read as plain columns,
so reflecting ``todos`` never drags in ``users`` and ``row.user_id`` is a value, not a lazy
query. Fields are named exactly like their columns (``literal_column_names``), which is what
an author reading the table's DDL expects, mixed case included. An operation class may bring
its own model (``model = Todo``) instead; it must be bound to the same database as the state
tables, since the sub-batch transaction and its checkpoint share one connection.

Models are cached per peewee database object (a new ``configure()`` builds new databases, so a
stale model never outlives its configuration) and per ``(schema, table, oid)``; so is what
the catalog says about a stored table (:func:`table_info`), which every job needs and which
does not change while operations run. After a migration that changes a target table's columns,
call :func:`forget` (or ``configure()`` again). Enqueue validation never uses these caches: it
always reads the catalog.

The stored table is the operation row's ``(table_schema, table_name, table_oid)``
(:class:`~dramatiq_bbo.walk.catalog.TableRef`), looked up by exact schema and name — never a text
parsed again. Each :func:`table_info` call checks, with one indexed catalog lookup, that the
pair still names the table of that oid (:class:`~dramatiq_bbo.errors.TableChanged` if not), so
a table dropped and re-created, or renamed away with another renamed into its place, is never
walked by an operation validated on the old one.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any

import peewee
import psycopg
from playhouse.reflection import Introspector, Metadata, PostgresqlMetadata

from ..db import REGISTRY, database_for
from ..errors import OperationDefinitionError, TableNotFound
from ..queries import query, raw
from ..reconnect import heal, is_connection_error
from .catalog import TableInfo, TableRef, display_name, resolve_stored, resolve_table

_cache: weakref.WeakKeyDictionary[Any, dict[tuple[str, str, int], type[peewee.Model]]] = (
    weakref.WeakKeyDictionary()
)
_infos: weakref.WeakKeyDictionary[Any, dict[TableRef, TableInfo]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


#: the type map reflection reads from ``pg_type`` (several hundred rows), once per database
_type_maps: weakref.WeakKeyDictionary[Any, dict[int, Any]] = weakref.WeakKeyDictionary()


class _OneTableMetadata(PostgresqlMetadata):  # type: ignore[misc]
    """Reflection metadata for the one table an operation walks: no foreign keys (see the
    module docstring), no indexes (the model queries its table, it never creates one), and
    the type map read from ``pg_type`` once per database rather than for every table
    (:func:`forget` drops it too: after ``CREATE EXTENSION hstore``, say)."""

    def __init__(self, database: Any, table: TableInfo) -> None:
        with _lock:
            known = _type_maps.get(database)
        if known is None:
            super().__init__(database)
            types: dict[int, Any] = getattr(self, "column_map")  # noqa: B009 (untyped base)
            with _lock:
                _type_maps[database] = dict(types)
        else:
            Metadata.__init__(self, database)
            self.column_map = dict(known)
        #: what the metadata reads the catalog through while the introspector asks it
        #: (:meth:`_AnyNameIntrospector.introspect`); the models are bound to ``database``
        self.one_table = _OneTableDatabase(database, table)

    def get_foreign_keys(self, table: str, schema: str | None = None) -> list[Any]:
        return []

    def get_indexes(self, table: str, schema: str | None = None) -> list[Any]:
        return []


#: peewee's column description (its fields past ``default`` came in peewee 3.17)
_COLUMN: Any = peewee.ColumnMetadata


class _OneTableDatabase:
    """The peewee database as reflection sees it: its schema holds the one table (reflection
    lists every table of the schema first, which costs as much as the rest in a schema of
    thousands), whose columns and primary key are read from the catalog by oid (peewee's
    own queries read ``information_schema``, whose views take milliseconds to plan). A
    table that vanished meanwhile reflects no column: :func:`_reflect` says so."""

    def __init__(self, database: Any, table: TableInfo) -> None:
        self._database, self._table = database, table

    def get_tables(self, schema: str | None = None) -> list[str]:
        return [self._table.name]

    def get_columns(self, table: str, schema: str | None = None) -> list[Any]:
        cursor = self._database.execute_sql(
            raw("catalog_reflect_columns"), {"oid": self._table.oid}
        )
        names = ("name", "data_type", "null", "primary_key", "default", "full_type", "identity")
        return [_COLUMN(table=table, **dict(zip(names, row, strict=True))) for row in cursor]

    def get_primary_keys(self, table: str, schema: str | None = None) -> list[str]:
        cursor = self._database.execute_sql(
            raw("catalog_reflect_primary_key"), {"oid": self._table.oid}
        )
        return [row[0] for row in cursor]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._database, name)


class _AnyNameIntrospector(Introspector):  # type: ignore[misc]
    """peewee names the model class after the table, and fails on a table name with no
    letter or digit in it (``"✓"``, ``" "``): any table name must reflect. The catalog is
    read through the one-table view of the database (:class:`_OneTableDatabase`) while the
    tables are introspected; the models made afterwards are bound to the database itself."""

    def introspect(self, *args: Any, **kwargs: Any) -> Any:
        database = self.metadata.database
        self.metadata.database = self.metadata.one_table
        try:
            return super().introspect(*args, **kwargs)
        finally:
            self.metadata.database = database

    def make_model_name(self, table: str, snake_case: bool = True) -> str:
        try:
            return str(super().make_model_name(table, snake_case))
        except IndexError:
            return "Table"


def peewee_database(database_name: str) -> peewee.Database:
    """The peewee database registered for ``database_name`` (from ``configure()``)."""
    return database_for(database_name)


def table_info(
    database_name: str,
    table: TableInfo | TableRef | str,
    conn: psycopg.Connection[Any] | None = None,
    *,
    current_oid: int | None = None,
) -> TableInfo:
    """The stored table (schema, name, validated oid) as the catalog describes it; its
    columns read once per process and configuration, its identity checked on every call
    (see the module docstring), on ``conn`` when the caller holds one (so a caller holding a
    pooled connection never waits for a second one). A ``str`` is a name as a caller would
    give it to enqueue (``"todos"``, ``'"Sales"."Orders"'``): resolved, never cached.
    ``current_oid``: the oid the stored name names, as the caller just read it in its own
    round trip (a claim does): the identity check then needs none."""
    if isinstance(table, TableInfo):
        return table
    if isinstance(table, TableRef) and current_oid is not None:
        cached = _cached_info(peewee_database(database_name), table)
        if cached is not None and cached.oid == current_oid:
            return cached
    with contextlib.ExitStack() as stack:
        if conn is None:
            conn = stack.enter_context(REGISTRY.connection(database_name))
        if isinstance(table, str):
            return resolve_table(conn, table)
        return _checked_info(database_name, table, conn)
    raise AssertionError("unreachable")  # pragma: no cover


def _checked_info(database_name: str, table: TableRef, conn: psycopg.Connection[Any]) -> TableInfo:
    database = peewee_database(database_name)
    cached = _cached_info(database, table)
    if cached is not None:
        row = conn.execute(
            query("catalog_table_oid"), {"schema": table.schema, "name": table.name}
        ).fetchone()
        if row is not None and row[0] == cached.oid:
            return cached
    info = resolve_stored(conn, table)
    with _lock:
        _infos.setdefault(database, {})[table] = info
    return info


def _cached_info(database: Any, table: TableRef) -> TableInfo | None:
    with _lock:
        return _infos.get(database, {}).get(table)


def table_model(
    database_name: str, table: TableInfo | TableRef | str, *, operation_class: Any = None
) -> type[peewee.Model]:
    """The peewee model of ``table`` in ``database_name``: the class's own ``model`` if it
    names one (it must be bound to that table), else a reflected one, cached."""
    own = getattr(operation_class, "model", None)
    info = table_info(database_name, table)
    if own is not None:
        meta = own._meta
        if meta.table_name != info.name or meta.schema not in (None, info.schema):
            raise OperationDefinitionError(
                f"{operation_class.__name__}.model ({own.__name__}) is bound to table "
                f"{display_name(meta.schema, meta.table_name)}, not to {info.display} the "
                "operation runs on"
            )
        return own  # type: ignore[no-any-return]
    database = peewee_database(database_name)
    key = (info.schema, info.name, info.oid)
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
            _type_maps.clear()
        else:
            database = peewee_database(database_name)
            _cache.pop(database, None)
            _infos.pop(database, None)
            _type_maps.pop(database, None)


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
    if model is None or not model._meta.columns:
        raise TableNotFound(
            f"table {info.display} could not be reflected (it disappeared, or the role may "
            "not read its catalog entries)"
        )
    return model  # type: ignore[no-any-return]


def _generate(database: peewee.Database, info: TableInfo) -> dict[str, Any]:
    # the metadata object reads pg_type as it is built: on the connection too
    metadata = _OneTableMetadata(database, info)
    introspector = _AnyNameIntrospector(metadata, schema=info.schema)
    return introspector.generate_models(  # type: ignore[no-any-return]
        table_names=[info.name], literal_column_names=True
    )

"""The author's operation class instantiated for one operation record (and job): what every
runner, the job creator and the splitter start from.

It sits low in the package, apart from the runners (:mod:`dramatiq_bbo.jobs.run`), so that
what only needs the keyset (splitting a job, :mod:`dramatiq_bbo.jobs.planning`) does not
depend on running one.

**Built once per operation.** Reflecting the table, building its model and the keyset (its
compiled probes) cost far more than a job's bookkeeping; a run of many jobs of one operation
builds them once. The cache key is everything they are built from — the peewee database the
model is bound to (a new one after ``configure()``), the operation's id, its class (as
registered now), its arguments, its table (with its oid) and cursor columns — so an entry is never
reused for anything it was not built for (none of these change after enqueue anyway). Sizes
(batch, sub-batch, pause) are not part of it: they are read from the operation record each
job is given, never from the cache. The author's instance itself is made afresh for every
call (a few microseconds): it carries the job and its engine, and an author's own attributes
must not leak from one job, or one thread, to the next. The table's identity (its oid) is
still checked for every job, by :func:`build_operation` on a hit, or by a caller that checked
it in its own transaction (``verified``, see :func:`identity_query`).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import peewee
import psycopg

from ..operation import BaseOperation, own_scope, resolve
from ..queries import query
from ..state.records import JobRecord, OperationRecord
from ..walk.catalog import TableInfo
from ..walk.keyset import Keyset
from ..walk.tables import peewee_database, table_info, table_model

#: operations whose built keyset a process keeps (least recently used dropped first)
CACHE_SIZE = 256


@dataclass(frozen=True)
class _Built:
    cls: type[BaseOperation]
    info: TableInfo
    model: type[peewee.Model]
    keyset: Keyset


_cache: OrderedDict[tuple[Any, ...], _Built] = OrderedDict()
_lock = threading.Lock()


def _key(operation: OperationRecord) -> tuple[Any, ...]:
    arguments = json.dumps(operation.job_arguments, sort_keys=True, default=str)
    return (
        peewee_database(operation.database_name),  # the model is bound to it (reconfigured?)
        operation.database_name,
        str(operation.id),
        operation.job_class_name,
        arguments,
        operation.table_ref,
        tuple(operation.cursor_columns),
    )


def build_operation(
    operation: OperationRecord,
    job: JobRecord | None = None,
    conn: psycopg.Connection[Any] | None = None,
    *,
    verified: bool = False,
    table_oid: int | None = None,
) -> tuple[BaseOperation, Keyset]:
    """The author's class instantiated for ``operation`` (arguments, table model, records)
    and its keyset. Reflection happens here, outside any transaction, once per operation
    (see the module docstring). The stored table's identity is checked on ``conn`` when the
    caller holds one (TableChanged if replaced), unless the caller just checked it
    (``verified``: :func:`identity_query` in its own transaction) or just read the oid its
    stored name names now (``table_oid``, as a claim does: compared here, no round trip)."""
    cls = resolve(operation.job_class_name)
    key = _key(operation)
    with _lock:
        built = _cache.get(key)
        if built is not None:
            _cache.move_to_end(key)
    if built is not None and built.cls is cls and table_oid is not None:
        verified = table_oid == built.info.oid
        built = built if verified else None
    if built is not None and built.cls is cls and not verified:
        info = table_info(operation.database_name, operation.table_ref, conn)
        if info.oid != built.info.oid:
            built = None
    if built is None or built.cls is not cls:
        built = _build(cls, operation, conn, table_oid)
        with _lock:
            _cache[key] = built
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    instance = cls(operation.job_arguments, table=built.model)
    instance.operation = operation
    if job is not None:
        instance.job = job
    return instance, built.keyset


def _build(
    cls: type[BaseOperation],
    operation: OperationRecord,
    conn: psycopg.Connection[Any] | None,
    table_oid: int | None = None,
) -> _Built:
    info = table_info(operation.database_name, operation.table_ref, conn, current_oid=table_oid)
    model = table_model(operation.database_name, info, operation_class=cls)
    instance = cls(operation.job_arguments, table=model)
    instance.operation = operation
    keyset = Keyset.for_operation(instance, info, operation.cursor_columns, own_scope(instance))
    return _Built(cls, info, model, keyset)


def identity_query(operation: OperationRecord) -> tuple[Any, dict[str, Any]] | None:
    """``catalog_table_oid`` for the operation's cached table, to send in the caller's own
    pipeline (no round trip of its own); None when nothing is cached (build it first).
    Pass its answer to :func:`identity_holds`."""
    with _lock:
        built = _cache.get(_key(operation))
    if built is None:
        return None
    return query("catalog_table_oid"), {"schema": built.info.schema, "name": built.info.name}


def identity_holds(operation: OperationRecord, row: Any) -> bool:
    """Whether ``catalog_table_oid``'s ``row`` is still the cached table's oid; when not,
    the entry is dropped, so the next :func:`build_operation` resolves the table again (and
    raises TableChanged if it was replaced)."""
    key = _key(operation)
    with _lock:
        built = _cache.get(key)
        if built is not None and row is not None and row[0] == built.info.oid:
            return True
        _cache.pop(key, None)
    return False

"""``enqueue()``: validate an operation, detect a duplicate, and create it.

Everything is checked before anything is written, each failure a typed error naming the
offending value: the class, the arguments, the sizes, the scope, the database
(:mod:`dramatiq_bbo.enqueueing.checks`), then, inside the transaction and before the first
write, the table — resolved through the catalog (:mod:`dramatiq_bbo.walk.catalog`), outside the
refused schemas and among the class's declared tables, the one the class's model is bound to,
readable by the role (:mod:`dramatiq_bbo.enqueueing.table_policy`) — and its cursor. The operation
stores the table as the catalog names it (schema, bare name) with its oid, never as text to
parse again. A scope no index serves is not refused but warned about
(:mod:`dramatiq_bbo.enqueueing.scope_index`, ``EnqueueResult.warnings``).

Duplicates. An unfinished operation (queued, active or paused) with the same class, table,
column, arguments (``jsonb`` equality, so key order does not matter), organization and
database is returned instead of a new one, with ``duplicate=True`` and a warning event. A
unique index on a partitioned table must include the partition key, so the partial unique
index cannot see a duplicate in another partition: enqueue first takes a transaction-scoped
advisory lock on a hash of the configuration, then looks in every partition, then inserts.
Racing enqueues of one configuration therefore queue on the lock and create exactly one row.

Transactions. Without ``connection=``, enqueue runs in its own READ COMMITTED transaction on a
pooled connection, then :func:`after_commit`: the pipeline's wake, then the middleware's
``after_enqueue``. Inside the transaction, right after the insert, the pipeline starts the
operation (a transactional outbox, :func:`~dramatiq_bbo.pipeline.wake.start_in_transaction`):
when a slot of capacity is free and no operation is waiting for one, enqueue creates the first
job and writes the runner's message itself, so the job starts on commit (one hop); otherwise
the operation waits in the pool for the next freed slot, in the dispatch order. Both are plain
code, not middleware: they are the pipeline itself, always there once ``setup(broker)`` ran,
and do nothing without it. With ``connection=`` (a psycopg 3 connection, or a peewee
``Psycopg3Database`` whose current connection is used), enqueue joins the transaction in
progress, writes the orchestrator's first message there (a wake-up, which applies the same
order when it runs: the capacity lock is not held across the caller's transaction), so the
operation — and that first message — exist only if the caller commits;
:func:`after_commit` is then *not* called. A non-autocommit psycopg connection counts as the
caller's transaction too (the caller commits). An idle autocommit connection gets a
transaction of ours, committed before returning, and :func:`after_commit` runs. The
connection must point at the database the operation names (``database=``); that cannot be
checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from ..db import REGISTRY
from ..errors import ConcurrentEnqueue, OperationDefinitionError
from ..jobs.learned_sizes import configuration, recall
from ..jobs.optimizer import target_duration
from ..logs import (
    DUPLICATE_ENQUEUE,
    SCOPE_NOT_INDEXED,
    WORKER_TRANSITION,
    event,
    logger,
    operation_fields,
)
from ..migrations import requires_schema
from ..operation import BaseOperation, resolve
from ..partitions.tables import current_partition as newest_partition
from ..pipeline.runtime import current
from ..pipeline.setup_checks import warn_without_pipeline
from ..pipeline.wake import start_in_transaction, wake
from ..queries import query
from ..state.records import OperationRecord
from ..state.store import CELL_LOCAL, ORGANIZATION
from ..walk.catalog import (
    TableInfo,
    cursor_bounds,
    estimate_query_rows,
    estimate_tuples,
    resolve_table,
    validate_cursor,
)
from .checks import EnqueueRequest, check_request, psycopg_connection
from .current_organization import scope_arguments
from .table_policy import (
    check_model_table,
    check_privileges,
    check_table_allowed,
    privilege_error,
)

if TYPE_CHECKING:
    from ..pipeline.orchestrator import Started


@dataclass(frozen=True)
class EnqueueResult:
    """The operation enqueue created, or the unfinished one it duplicates."""

    operation: OperationRecord
    duplicate: bool
    #: what enqueue noticed but did not refuse (e.g. a scope no index serves), also logged
    warnings: tuple[str, ...] = ()
    #: the pipeline's start of the operation in enqueue's own transaction (internal)
    started: Started | None = field(default=None, repr=False, compare=False)


@requires_schema
def enqueue(
    operation_class_or_name: type[BaseOperation] | str,
    table_name: str,
    column_name: str,
    *,
    arguments: Any = None,
    organization_id: int | None = None,
    user_id: int | None = None,
    user: Any = None,
    database: str | None = None,
    batch_size: int | None = None,
    sub_batch_size: int | None = None,
    pause_ms: int | None = None,
    interval_seconds: float | None = None,
    min_batch_size: int | None = None,
    max_batch_size: int | None = None,
    priority: int | None = None,
    connection: Any = None,
) -> EnqueueResult:
    """Create an operation over ``table_name`` batched on ``column_name`` (or return the
    unfinished duplicate). Sizes and priority: this call's value, else the class attribute,
    else the setting (priority: 0) — except batch_size, for which the size an earlier
    operation of the same class, table, column and database learned comes before the class's
    and the setting's (:mod:`dramatiq_bbo.jobs.learned_sizes`). Scope: ``organization_id`` +
    ``user_id`` (or ``user=``), or neither for a cell-local operation — then the current
    organization's in a :func:`~dramatiq_bbo.current_organization` block (explicit arguments
    win). See the module docstring for ``connection=`` and duplicates."""
    organization_id, user_id, user = scope_arguments(organization_id, user_id, user)
    request = check_request(
        resolve(operation_class_or_name),
        table_name,
        column_name,
        arguments=arguments,
        organization_id=organization_id,
        user_id=user_id,
        user=user,
        database=database,
        sizes={
            "batch_size": batch_size,
            "sub_batch_size": sub_batch_size,
            "pause_ms": pause_ms,
            "interval_seconds": interval_seconds,
            "min_batch_size": min_batch_size,
            "max_batch_size": max_batch_size,
        },
        priority=priority,
    )
    if connection is None:
        with REGISTRY.connection(request.database) as conn:
            result = _enqueue_in_own_transaction(conn, request)
    else:
        conn = psycopg_connection(connection)
        if not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
            result = _enqueue(conn, request)  # the caller's transaction: the caller commits
            announce(result)
            return result
        result = _enqueue_in_own_transaction(conn, request)
    if not result.duplicate:  # committed (and the pool connection is back)
        after_commit(result.operation, result.started)
    return result


def after_commit(operation: OperationRecord, started: Started | None = None) -> None:
    """What follows a committed new operation: what starting it in the transaction calls for
    (its queued → active transition), else the pipeline wakes it (its database is not the
    broker's: no message was written in the transaction; a no-op without ``setup``), then
    the middleware's ``after_enqueue`` runs. Nothing raises: a failed wake only costs latency
    (the scheduler's pass re-drives the operation) and a failing hook is logged."""
    if started is not None:
        try:
            started.after_commit(operation.database_name)
        except Exception:
            logger.exception("after starting operation %s", operation.id)
    elif operation.database_name not in current().messenger.outbox_databases:
        wake(operation)
    current().after_enqueue(operation)


# -- the transaction ----------------------------------------------------------------------------
def _enqueue_in_own_transaction(
    conn: psycopg.Connection[Any], request: EnqueueRequest
) -> EnqueueResult:
    with conn.transaction():
        # Each statement sees what committed before it: after waiting on the advisory lock,
        # the duplicate check sees the operation the lock holder just created.
        conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        result = _enqueue(conn, request, own=True)
    announce(result)
    return result


def _enqueue(
    conn: psycopg.Connection[Any], request: EnqueueRequest, *, own: bool = False
) -> EnqueueResult:
    """Catalog checks, then lock → duplicate check → insert in a savepoint, twice at most:
    a caller's older snapshot can miss a just-committed twin that the partial unique index
    then catches; the retry (new statement snapshot under READ COMMITTED) finds it."""
    table = resolve_table(conn, request.table_name)
    cls = request.operation_class
    check_table_allowed(conn, cls, table)
    check_model_table(conn, cls, table)
    check_privileges(conn, table)
    validate_cursor(conn, table, request.cursor_columns)
    failure: psycopg.Error | None = None
    for _attempt in range(2):
        try:
            with conn.transaction():
                return _lock_check_insert(conn, request, table, own)
        except (pg_errors.UniqueViolation, pg_errors.SerializationFailure) as exc:
            failure = exc
        except pg_errors.InsufficientPrivilege as exc:
            raise privilege_error(exc, table) from None
    raise ConcurrentEnqueue(
        f"an identical unfinished {request.operation_class.name} operation on "
        f"{table.display}.{request.column_name} was committed concurrently and is not visible "
        f"to this transaction ({type(failure).__name__}); retry the transaction"
    ) from failure


def _lock_check_insert(
    conn: psycopg.Connection[Any], request: EnqueueRequest, table: TableInfo, own: bool
) -> EnqueueResult:
    conn.execute(query("operation_lock_configuration"), {"key": lock_key(request, table)})
    scope = ORGANIZATION if request.organization_id is not None else CELL_LOCAL
    operations = scope.operations_table
    values: dict[str, Any] = {
        "job_class_name": request.operation_class.name,
        "table_schema": table.schema,
        "table_name": table.name,
        "column_name": request.column_name,
        "database_name": request.database,
        "job_arguments": request.arguments_json,
        "organization_id": request.organization_id,
    }
    find = query(
        "operation_find_unfinished", operations=operations, scope_condition=scope.condition()
    )
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(find, values).fetchone()
        if row is not None:
            return EnqueueResult(OperationRecord.from_row(row), duplicate=True)
        bounds, warnings, scoped_rows = _bounds(conn, request, table)
        values.update(
            request.sizes,
            batch_size=_initial_batch_size(conn, request, table),
            table_oid=table.oid,
            partition=current_partition(conn, request.scope),
            user_id=request.user_id,
            cursor_columns=list(request.cursor_columns),
            priority=request.priority,
            min_cursor=json.dumps(bounds[0] if bounds else []),
            max_cursor=json.dumps(bounds[1]) if bounds else None,
            total_tuple_count=estimate_tuples(conn, table) if scoped_rows is None else scoped_rows,
        )
        insert = query(
            "operation_insert",
            operations=operations,
            scope_columns=scope.columns("user_id"),
            scope_values=scope.values("user_id"),
        )
        row = cur.execute(insert, values).fetchone()
    assert row is not None
    operation = OperationRecord.from_row(row)
    started = _start_in_transaction(conn, operation, own)
    return EnqueueResult(operation, duplicate=False, warnings=warnings, started=started)


def _initial_batch_size(
    conn: psycopg.Connection[Any], request: EnqueueRequest, table: TableInfo
) -> int:
    """The call's batch_size; else the one this configuration learned when an earlier
    operation of it finished (:mod:`dramatiq_bbo.jobs.learned_sizes`); else the class's or the
    setting's."""
    default = int(request.sizes["batch_size"])
    if request.batch_size_given:
        return default
    cls, column = request.operation_class, request.column_name
    key = configuration(cls.name, table.schema, table.name, column, request.database)
    interval = float(request.sizes["interval_seconds"])
    target = target_duration(interval, float(REGISTRY.settings.min_job_budget_seconds))
    learned = recall(conn, key, target_seconds=target, sizes=request.sizes)
    return default if learned is None else learned


def _start_in_transaction(
    conn: psycopg.Connection[Any], operation: OperationRecord, own: bool
) -> Started | None:
    """The operation's first job and runner message (or the orchestrator's first message),
    committed with the operation; a failure is logged and undone (its own savepoint), never
    failing the enqueue: the scheduler's pass covers it."""
    if not current().messenger.ready:  # no setup here: no savepoint for nothing
        return None
    try:
        with conn.transaction():
            return start_in_transaction(conn, operation, own=own)
    except Exception:
        logger.exception("starting operation %s in the enqueue transaction failed", operation.id)
        return None


def lock_key(request: EnqueueRequest, table: TableInfo) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock`` naming the configuration
    (the same in every process and Python version, unlike ``hash()``)."""
    parts = [
        "dramatiq_bbo.enqueue",
        request.operation_class.name,
        table.schema,
        table.name,
        request.column_name,
        request.arguments_json,
        request.organization_id,
        request.database,
    ]
    text = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def current_partition(conn: psycopg.Connection[Any], scope: str) -> int:
    """The partition new ``scope`` operations go to: the newest one, the same for both scopes
    (the partition manager opens each partition in the four tables at once,
    :mod:`dramatiq_bbo.partitions`). The duplicate check above looks in every partition, so
    an unfinished twin left in an older one is still found."""
    return newest_partition(conn)


def _bounds(
    conn: psycopg.Connection[Any], request: EnqueueRequest, table: TableInfo
) -> tuple[tuple[list[Any], list[Any]] | None, tuple[str, ...], int | None]:
    """The keyset range at enqueue time, honouring the class's ``scope()`` when it has one:
    the scoped peewee query becomes the subquery the bounds are read from. Also the
    warnings about that scope (one no index serves: :mod:`dramatiq_bbo.enqueueing.scope_index`),
    and the planner's estimate of the scope's rows (None without a scope: the table's own
    estimate is the walk's size)."""
    cls = request.operation_class
    columns = request.cursor_columns
    if cls.scope is BaseOperation.scope:
        return cursor_bounds(conn, table, columns), (), None
    from ..walk.keyset import column_field
    from ..walk.tables import table_model
    from .scope_index import unindexed_scope

    model: Any = table_model(request.database, table, operation_class=cls)
    instance = cls(json.loads(request.arguments_json), table=model)
    try:
        scoped = instance.scope(model.select(*[column_field(model, c) for c in columns]))
        text, params = scoped.sql()
    except Exception as exc:
        raise OperationDefinitionError(
            f"{cls.__name__}.scope() failed while computing the range of {table.display}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    relation = sql.SQL("({}) AS {}").format(sql.SQL(text), sql.Identifier("bbo_scoped"))
    bounds = cursor_bounds(conn, table, columns, params=params, relation=relation)
    warning = unindexed_scope(conn, table, model, scoped, columns, request.sizes["batch_size"])
    return bounds, () if warning is None else (warning,), estimate_query_rows(conn, text, params)


def enqueue_request(conn: psycopg.Connection[Any], request: EnqueueRequest) -> EnqueueResult:
    """What ``enqueue`` does for a checked request inside the caller's transaction on
    ``conn``, logging nothing: for a caller that announces the result itself (a cron firing,
    for which finding its operation still running is routine)."""
    return _enqueue(conn, request)


def announce(result: EnqueueResult, *, duplicate_level: int = logging.WARNING) -> None:
    """Log what enqueue did: the operation queued, or the unfinished twin it returned (at
    ``duplicate_level``: a warning for a caller who expected a new operation)."""
    op = result.operation
    fields = operation_fields(op, "table_schema", "column_name", "organization_id")
    for warning in result.warnings:
        event(SCOPE_NOT_INDEXED, level=logging.WARNING, reason=warning, **fields)
    if result.duplicate:
        event(DUPLICATE_ENQUEUE, level=duplicate_level, status=op.status.name.lower(), **fields)
    else:
        event(WORKER_TRANSITION, previous_state=None, new_state="queued", **fields)
        warn_without_pipeline(op)

"""peewee models over the four state tables, for Python code and tests that read or fix state.

The SQL files in ``schema/sql/`` are the source of truth: these models only mirror them (a test
compares every model with the catalog) and are never used to create or alter tables. They are
bound late, through ``database_proxy`` (:mod:`dramatiq_bbo.db`), when
``dramatiq_bbo.configure()`` runs: to the application's own peewee database if it gave one,
else to a psycopg 3 database built from the DSN. Hot paths (enqueue, the pipeline) are meant
to use named SQL queries on pooled connections.

Keys: every table's primary key is ``(partition, id)``, so every model declares
``CompositeKey("partition", "id")``. An ``UPDATE`` from ``save()`` therefore names the row's
partition and id and touches that row only, and ``Model.get_by_id((partition, id))`` works.
``id`` is left to Postgres (identity for the cell-local tables, ``gen_random_uuid()`` for the
organization tables): ``save()`` on an instance whose ``id`` is None inserts it and reads back
every column, defaults and the generated digest included, with ``RETURNING``. To insert with a
chosen id, use ``Model.create(id=...)`` or ``save(force_insert=True)``. To move a row to another
partition, run an ``UPDATE`` query (``save()`` after changing ``partition`` updates nothing).

``arguments_digest`` is a ``GENERATED ALWAYS ... STORED`` column: readable, but Postgres refuses
any value for it, so ``save()`` never writes a ``GeneratedField``.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from typing import Any

import peewee
from playhouse.postgres_ext import ArrayField, BinaryJSONField, DateTimeTZField

from ..db import database_for, database_proxy
from ..state.records import JobStatus, OperationStatus


class StatusField(peewee.SmallIntegerField):
    """A smallint status read back as its ``IntEnum`` member (which still compares as an int)."""

    def __init__(self, enum_class: type[enum.IntEnum], **kwargs: Any) -> None:
        self.enum_class = enum_class
        super().__init__(**kwargs)

    def python_value(self, value: Any) -> Any:
        return None if value is None else self.enum_class(value)

    def db_value(self, value: Any) -> Any:
        return None if value is None or isinstance(value, peewee.Node) else int(value)


class GeneratedField(peewee.TextField):
    """A ``GENERATED ALWAYS ... STORED`` column: selected like any column, never written."""


class GeneratedDateTimeField(DateTimeTZField, GeneratedField):  # type: ignore[misc]
    """A generated ``timestamptz`` column (``next_run_at``, schema 0009)."""


def _jsonb(null: bool = False) -> Any:
    return BinaryJSONField(null=null, index=False)


class _StateModel(peewee.Model):
    """Composite-key saving with server-side ids and defaults (see the module docstring)."""

    class Meta:
        database = database_proxy
        schema = "bbo"
        primary_key = peewee.CompositeKey("partition", "id")

    partition = peewee.BigIntegerField()
    id: Any  # each concrete model declares it: bigint (cell-local) or uuid (organization)

    def save(self, force_insert: bool = False, only: Any = None) -> int:
        """Insert (``id`` None) or update this row, then reload it from ``RETURNING``."""
        fields = [f for f in self._meta.sorted_fields if not isinstance(f, GeneratedField)]
        if only is not None:
            wanted = {f if isinstance(f, str) else f.name for f in only}
            fields = [f for f in fields if f.name in wanted]
        data = {f.name: self.__data__[f.name] for f in fields if f.name in self.__data__}
        model: Any = type(self)
        query: Any
        if force_insert or self.__data__.get("id") is None:
            if data.get("id") is None:
                data.pop("id", None)  # Postgres generates it
            query = model.insert(data)
        else:
            data.pop("id", None)
            data.pop("partition", None)
            if not data:
                raise ValueError(f"{model.__name__}.save(): no column to update")
            this_row = (model.partition == self.partition) & (model.id == self.id)
            query = model.update(data).where(this_row)
        rows = list(query.returning(*self._meta.sorted_fields).dicts().execute())
        for row in rows:
            self.__data__.update(row)
        self._dirty.difference_update(data)  # type: ignore[attr-defined]
        return len(rows)


class OperationBase(_StateModel):
    """Columns shared by both operation ("worker") tables."""

    job_class_name = peewee.TextField()
    table_schema = peewee.TextField()
    table_name = peewee.TextField()
    table_oid = peewee.BigIntegerField(null=True)
    column_name = peewee.TextField()
    cursor_columns = ArrayField(peewee.TextField, index=False)
    job_arguments = _jsonb()
    arguments_digest = GeneratedField(null=True)
    database_name = peewee.TextField()
    status = StatusField(OperationStatus)
    priority = peewee.SmallIntegerField()
    batch_size = peewee.IntegerField()
    sub_batch_size = peewee.IntegerField()
    min_batch_size = peewee.IntegerField()
    max_batch_size = peewee.IntegerField()
    pause_ms = peewee.IntegerField()
    interval_seconds = peewee.DoubleField()
    min_cursor = _jsonb()
    max_cursor = _jsonb(null=True)
    next_cursor = _jsonb(null=True)
    total_tuple_count = peewee.BigIntegerField(null=True)
    processed_tuple_count = peewee.BigIntegerField()
    affected_tuple_count = peewee.BigIntegerField()
    on_hold_until = DateTimeTZField(null=True)
    hold_reason = peewee.TextField(null=True)
    lease_owner = peewee.TextField(null=True)
    lease_expires_at = DateTimeTZField(null=True)
    last_run_at = DateTimeTZField(null=True)
    started_at = DateTimeTZField(null=True)
    finished_at = DateTimeTZField(null=True)
    created_at = DateTimeTZField()
    updated_at = DateTimeTZField()
    #: the exception of the most recent failed job attempt (schema 0005)
    last_error_class = peewee.TextField(null=True)
    last_error_message = peewee.TextField(null=True)
    last_error_at = DateTimeTZField(null=True)
    #: when it is next due: Postgres computes it (schema 0009)
    next_run_at = GeneratedDateTimeField(null=True)


class CellLocalOperation(OperationBase):
    """System work (cron): bigint identity ids, never moved between cells."""

    id = peewee.BigIntegerField()

    class Meta:
        table_name = "background_operation_workers_cell_local"


class OrganizationOperation(OperationBase):
    """User-triggered work: uuid ids, so the row can move with its organization."""

    id = peewee.UUIDField()
    organization_id = peewee.BigIntegerField()
    user_id = peewee.BigIntegerField()

    class Meta:
        table_name = "background_operation_workers"


class JobBase(_StateModel):
    """Columns shared by both job tables: one keyset batch of one operation."""

    worker_partition = peewee.BigIntegerField()
    status = StatusField(JobStatus)
    attempts = peewee.SmallIntegerField()
    interruptions = peewee.SmallIntegerField()
    batch_size = peewee.IntegerField()
    sub_batch_size = peewee.IntegerField()
    pause_ms = peewee.IntegerField()
    min_cursor = _jsonb()
    max_cursor = _jsonb()
    checkpoint_cursor = _jsonb(null=True)
    processed_tuple_count = peewee.BigIntegerField()
    affected_tuple_count = peewee.BigIntegerField()
    lease_owner = peewee.TextField(null=True)
    lease_expires_at = DateTimeTZField(null=True)
    heartbeat_at = DateTimeTZField(null=True)
    started_at = DateTimeTZField(null=True)
    finished_at = DateTimeTZField(null=True)
    metrics = _jsonb()
    exception_class = peewee.TextField(null=True)
    exception_message = peewee.TextField(null=True)
    created_at = DateTimeTZField()
    updated_at = DateTimeTZField()
    #: counts the job's operation does not have yet (schema 0008)
    unrolled_processed = peewee.BigIntegerField()
    unrolled_affected = peewee.BigIntegerField()


class CellLocalJob(JobBase):
    id = peewee.BigIntegerField()
    worker_id = peewee.BigIntegerField()

    class Meta:
        table_name = "background_operation_jobs_cell_local"


class OrganizationJob(JobBase):
    id = peewee.UUIDField()
    organization_id = peewee.BigIntegerField()
    worker_id = peewee.UUIDField()

    class Meta:
        table_name = "background_operation_jobs"


ALL_MODELS: tuple[type[_StateModel], ...] = (
    CellLocalOperation,
    OrganizationOperation,
    CellLocalJob,
    OrganizationJob,
)


def operation_model(organization_scoped: bool) -> type[OperationBase]:
    return OrganizationOperation if organization_scoped else CellLocalOperation


def job_model(organization_scoped: bool) -> type[JobBase]:
    return OrganizationJob if organization_scoped else CellLocalJob


@contextlib.contextmanager
def bound_to(name: str) -> Iterator[peewee.Database]:
    """Point every model at database ``name`` for the block (several-databases case).

    ``bind_ctx`` rebinds the model classes themselves, so this is not for concurrent threads
    working on different databases; they should pass ``database_for(name)`` to queries.
    """
    database = database_for(name)
    with database.bind_ctx(ALL_MODELS):
        yield database

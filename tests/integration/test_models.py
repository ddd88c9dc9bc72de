"""The peewee models mirror the SQL tables and read and write every column faithfully."""

from __future__ import annotations

import datetime as dt
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import peewee
import psycopg
import pytest
from playhouse.postgres_ext import ArrayField, Psycopg3Database
from psycopg import sql

import dramatiq_bbo as bbo
from dramatiq_bbo.contrib import models
from dramatiq_bbo.contrib.models import (
    ALL_MODELS,
    CellLocalJob,
    CellLocalOperation,
    GeneratedField,
    JobStatus,
    OperationStatus,
    OrganizationJob,
    OrganizationOperation,
)
from dramatiq_bbo.errors import UnknownDatabase

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
T0 = dt.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=dt.UTC)
ROW_UUID = "5f0c6a2e-3c4b-4d5e-8f9a-0b1c2d3e4f50"


def _timestamps(**extra: Any) -> dict[str, Any]:
    """Distinct aware datetimes, some in a non-UTC zone; Postgres returns equal instants."""
    stamps = {
        "lease_expires_at": T0 + dt.timedelta(minutes=5),
        "started_at": T0.astimezone(IST),
        "finished_at": T0 + dt.timedelta(hours=2, microseconds=1),
        "created_at": T0 - dt.timedelta(days=1),
        "updated_at": T0 + dt.timedelta(seconds=1),
    }
    return {**stamps, **extra}


def full_operation(**extra: Any) -> dict[str, Any]:
    return {
        "partition": 1,
        "job_class_name": "Backfill::Ünïcode",
        "table_schema": "sales",
        "table_name": "order_items",
        "table_oid": 16_384,
        "column_name": "id",
        "cursor_columns": ["created_at", "external_id", "id"],
        "job_arguments": {
            "since": "2024-01-01",
            "ids": [1, 2, 3],
            "nested": {"name": "Zoë ✓ 東京", "flag": True, "none": None, "ratio": 0.25},
        },
        "database_name": "main",
        "status": OperationStatus.PAUSED,
        "priority": 3,
        "batch_size": 5000,
        "sub_batch_size": 250,
        "min_batch_size": 500,
        "max_batch_size": 50_000,
        "pause_ms": 0,
        "interval_seconds": 2.5,
        "min_cursor": ["2024-01-01T00:00:00+00:00", ROW_UUID, 1],
        "max_cursor": ["2024-12-31T23:59:59.999999+00:00", ROW_UUID, 9_007_199_254_740_993],
        "next_cursor": ["2024-06-01T12:00:00+00:00", ROW_UUID, 42],
        "total_tuple_count": 10_000_000_000,
        "processed_tuple_count": 4_000_000_000,
        "affected_tuple_count": 17,
        "on_hold_until": (T0 + dt.timedelta(minutes=10)).astimezone(IST),
        "hold_reason": "health: replication lag 12s > 5s",
        "lease_owner": "host-1:4242:MainThread",
        "last_run_at": T0,
        "last_error_class": "RuntimeError",
        "last_error_message": "the disk is full ✗",
        "last_error_at": T0,
        **_timestamps(),
        **extra,
    }


def full_job(**extra: Any) -> dict[str, Any]:
    return {
        "partition": 1,
        "worker_partition": 1,
        "status": JobStatus.RUNNING,
        "attempts": 2,
        "interruptions": 1,
        "batch_size": 5000,
        "sub_batch_size": 250,
        "pause_ms": 10,
        "min_cursor": [1],
        "max_cursor": [5001],
        "checkpoint_cursor": [2501],
        "processed_tuple_count": 2500,
        "affected_tuple_count": 12,
        "unrolled_processed": 500,
        "unrolled_affected": 2,
        "lease_owner": "host-1:4242:MainThread",
        "heartbeat_at": T0,
        "metrics": {"sub_batches": [{"ms": 12.5, "tuples": 250}], "note": "ünï"},
        "exception_class": "psycopg.errors.LockNotAvailable",
        "exception_message": 'could not obtain lock on row in relation "order_items"\n…',
        **_timestamps(),
        **extra,
    }


FULL_ROWS: dict[type[models.OperationBase] | type[models.JobBase], Callable[[], dict[str, Any]]] = {
    CellLocalOperation: full_operation,
    OrganizationOperation: lambda: full_operation(organization_id=2**40, user_id=2**33 + 1),
    CellLocalJob: lambda: full_job(worker_id=2**40),
    OrganizationJob: lambda: full_job(organization_id=2**40, worker_id=uuid.UUID(ROW_UUID)),
}

MINIMAL_ROWS: dict[Any, dict[str, Any]] = {
    CellLocalOperation: {
        "job_class_name": "X",
        "table_schema": "public",
        "table_name": "t",
        "column_name": "id",
        "cursor_columns": ["id"],
        "batch_size": 10,
        "sub_batch_size": 5,
        "min_cursor": [0],
    },
    CellLocalJob: {
        "worker_id": 1,
        "worker_partition": 1,
        "batch_size": 10,
        "sub_batch_size": 5,
        "min_cursor": [0],
        "max_cursor": [10],
    },
}
MINIMAL_ROWS[OrganizationOperation] = {
    **MINIMAL_ROWS[CellLocalOperation],
    "organization_id": 1,
    "user_id": 1,
}
MINIMAL_ROWS[OrganizationJob] = {
    **MINIMAL_ROWS[CellLocalJob],
    "organization_id": 1,
    "worker_id": uuid.uuid4(),
}

MODEL_IDS = [m.__name__ for m in ALL_MODELS]

# peewee field type -> Postgres udt_name, for the mirror test.
UDT = {
    "BIGINT": "int8",
    "INT": "int4",
    "SMALLINT": "int2",
    "TEXT": "text",
    "UUID": "uuid",
    "DOUBLE": "float8",
    "TIMESTAMPTZ": "timestamptz",
    "JSONB": "jsonb",
}


def _column_values(instance: peewee.Model) -> dict[str, Any]:
    return {f.name: getattr(instance, f.name) for f in type(instance)._meta.sorted_fields}


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
def test_models_mirror_the_catalog(conn: psycopg.Connection[Any], model: Any) -> None:
    meta = model._meta
    catalog = conn.execute(
        """
        SELECT a.attname, t.typname, NOT a.attnotnull, a.attgenerated = 's'
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
        """,
        [f"{meta.schema}.{meta.table_name}"],
    ).fetchall()
    expected = {
        f.column_name: (
            "_" + UDT[f.field_type] if isinstance(f, ArrayField) else UDT[f.field_type],
            f.null,
            isinstance(f, GeneratedField),
        )
        for f in meta.sorted_fields
    }
    assert {name: (typ, null, gen) for name, typ, null, gen in catalog} == expected

    primary_key = conn.execute(
        """
        SELECT array_agg(a.attname ORDER BY k.ord)
        FROM pg_constraint c
        CROSS JOIN unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
        WHERE c.conrelid = %s::regclass AND c.contype = 'p'
        """,
        [f"{meta.schema}.{meta.table_name}"],
    ).fetchone()
    assert primary_key is not None
    assert tuple(primary_key[0]) == meta.primary_key.field_names


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
def test_every_column_round_trips(configured: str, model: Any) -> None:
    values = FULL_ROWS[model]()
    created = model.create(**values)
    loaded = model.get_by_id((1, created.id))

    got = _column_values(loaded)
    assert got.pop("arguments_digest", None) == getattr(created, "arguments_digest", None)
    if "next_run_at" in got:  # generated: the latest of its creation, hold, lease, last run
        assert got.pop("next_run_at") >= values["created_at"]
    assert got.pop("id") == created.id
    assert got == values
    assert all(got[k].tzinfo is not None for k in values if isinstance(values[k], dt.datetime))
    assert type(loaded.status) is type(values["status"])


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
def test_nullable_columns_round_trip_as_none(configured: str, model: Any) -> None:
    nullable = [f.name for f in model._meta.sorted_fields if f.null]
    created = model.create(**{**FULL_ROWS[model](), **dict.fromkeys(nullable)})
    loaded = model.get_by_id((1, created.id))
    generated = {f.name for f in model._meta.sorted_fields if isinstance(f, GeneratedField)}
    assert {name: getattr(loaded, name) for name in nullable if name not in generated} == {
        name: None for name in nullable if name not in generated
    }


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
def test_save_inserts_with_server_side_id_and_defaults(configured: str, model: Any) -> None:
    instance = model(**MINIMAL_ROWS[model])
    assert instance.save() == 1
    stored = model.get_by_id((instance.partition, instance.id))
    assert _column_values(stored) == _column_values(instance)
    assert instance.partition == 1
    assert instance.status == 0 and type(instance.status) in (OperationStatus, JobStatus)
    assert instance.processed_tuple_count == 0
    assert instance.created_at.tzinfo is not None


def test_cell_local_ids_come_from_the_identity(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        """INSERT INTO bbo.background_operation_workers_cell_local
           (job_class_name, table_schema, table_name, column_name, cursor_columns, batch_size,
            sub_batch_size, min_cursor)
           VALUES ('Raw', 'public', 't', 'id', '{id}', 10, 5, '[0]')"""
    )
    first = CellLocalOperation.create(**{**MINIMAL_ROWS[CellLocalOperation], "table_name": "a"})
    second = CellLocalOperation.create(**{**MINIMAL_ROWS[CellLocalOperation], "table_name": "b"})
    assert (first.id, second.id) == (2, 3)
    job = CellLocalJob.create(**MINIMAL_ROWS[CellLocalJob])
    assert job.id == 1


@pytest.mark.parametrize(
    "model", [OrganizationOperation, OrganizationJob], ids=lambda m: m.__name__
)
def test_organization_ids_are_generated_by_postgres(configured: str, model: Any) -> None:
    created = model.create(**MINIMAL_ROWS[model])
    assert isinstance(created.id, uuid.UUID) and created.id.version == 4
    assert model.get_by_id((1, created.id)).id == created.id


@pytest.mark.parametrize("model", [CellLocalOperation, OrganizationOperation], ids=MODEL_IDS[:2])
def test_arguments_digest_is_read_but_never_written(
    configured: str, conn: psycopg.Connection[Any], model: Any
) -> None:
    table = sql.Identifier("bbo", model._meta.table_name)
    md5_query = sql.SQL("SELECT arguments_digest, md5(job_arguments::text) FROM {} WHERE id = %s")

    operation = model.create(**FULL_ROWS[model]())
    stored, computed = conn.execute(md5_query.format(table), [operation.id]).fetchone() or ()
    assert operation.arguments_digest == stored == computed

    loaded = model.get_by_id((1, operation.id))
    loaded.arguments_digest = "not a digest"
    loaded.job_arguments = {"changed": ["é", 1]}
    assert loaded.save() == 1
    stored, computed = conn.execute(md5_query.format(table), [operation.id]).fetchone() or ()
    assert stored == computed == loaded.arguments_digest != operation.arguments_digest

    with pytest.raises(peewee.DatabaseError, match="arguments_digest"):
        model.update(arguments_digest="forced").where(model.id == operation.id).execute()


@pytest.mark.parametrize("model", ALL_MODELS, ids=MODEL_IDS)
def test_save_updates_only_the_row_with_the_same_partition_and_id(
    configured: str, conn: psycopg.Connection[Any], model: Any
) -> None:
    table = model._meta.table_name
    conn.execute(
        sql.SQL("CREATE TABLE bbo.{} PARTITION OF bbo.{} FOR VALUES IN (2)").format(
            sql.Identifier(f"{table}_2"), sql.Identifier(table)
        )
    )
    mine = model.create(**MINIMAL_ROWS[model])
    twin = model.create(**{**MINIMAL_ROWS[model], "partition": 2, "id": mine.id})
    neighbour = model.create(**{**MINIMAL_ROWS[model], "status": 3})  # finished/succeeded

    loaded = model.get_by_id((1, mine.id))
    loaded.processed_tuple_count = 99
    assert loaded.save() == 1

    counts = {
        (row.partition, row.id): row.processed_tuple_count
        for row in model.select(model.partition, model.id, model.processed_tuple_count)
    }
    assert counts == {(1, mine.id): 99, (2, twin.id): 0, (1, neighbour.id): 0}


def test_save_of_a_row_that_is_gone_updates_nothing(configured: str) -> None:
    operation = CellLocalOperation.create(**MINIMAL_ROWS[CellLocalOperation])
    CellLocalOperation.delete().where(CellLocalOperation.id == operation.id).execute()
    operation.priority = 5
    assert operation.save() == 0


def test_models_use_psycopg3(configured: str) -> None:
    database = models.database_for()
    assert isinstance(database, Psycopg3Database)
    connection = models.database_proxy.connection()
    assert isinstance(connection, psycopg.Connection)
    assert type(connection).__module__.startswith("psycopg")
    assert not type(connection).__module__.startswith("psycopg2")


def test_reset_closes_our_connection(configured: str) -> None:
    connection = models.database_proxy.connection()
    bbo.reset()
    assert connection.closed
    assert models.database_proxy.obj is None


def _spell(dsn: str, spelling: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["application_name"] = "bbo models test"
    if spelling == "keywords":
        return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})
    dbname = urllib.parse.quote(str(params.pop("dbname")))
    query = urllib.parse.urlencode(
        {k: str(v) for k, v in params.items()}, quote_via=urllib.parse.quote
    )
    return f"{spelling}:///{dbname}?{query}"


@pytest.mark.parametrize("spelling", ["keywords", "postgresql", "postgres"])
def test_every_dsn_spelling_reaches_libpq_intact(dsn: str, spelling: str) -> None:
    """peewee only treats ``postgresql://`` as a conninfo; the models accept any libpq DSN."""
    bbo.configure(dsn=_spell(dsn, spelling))
    try:
        cursor = models.database_for().execute_sql(
            "SELECT current_database(), current_setting('application_name')"
        )
        assert cursor.fetchone() == (
            psycopg.conninfo.conninfo_to_dict(dsn)["dbname"],
            "bbo models test",
        )
    finally:
        bbo.reset()


@pytest.fixture
def app_database(dsn: str) -> Iterator[Psycopg3Database]:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    database = Psycopg3Database(params.pop("dbname"), **params)
    yield database
    database.close()


def test_configure_with_the_apps_database_binds_the_models_to_it(
    app_database: Psycopg3Database,
) -> None:
    bbo.configure(database=app_database)
    try:
        assert models.database_proxy.obj is app_database
        assert models.database_for() is app_database
        operation = CellLocalOperation.create(**MINIMAL_ROWS[CellLocalOperation])
        assert not app_database.is_closed()
        with app_database.atomic() as transaction:
            operation.priority = 9
            operation.save()
            transaction.rollback()
        assert CellLocalOperation.get_by_id((1, operation.id)).priority == 0
    finally:
        bbo.reset()
    assert not app_database.is_closed(), "reset() must not close the application's database"


def test_several_databases_are_reachable_by_name(
    dsn: str, database_factory: Callable[..., str]
) -> None:
    other = database_factory(migrated=True)
    bbo.configure(dsn=dsn, databases={"ci": other})
    try:
        assert models.database_for("ci") is not models.database_for()
        with models.bound_to("ci") as ci:
            CellLocalOperation.create(**MINIMAL_ROWS[CellLocalOperation])
            assert ci.execute_sql("SELECT current_database()").fetchone()[0] in other
        assert CellLocalOperation.select().count() == 0
        with models.bound_to("ci"):
            assert CellLocalOperation.select().count() == 1
        with pytest.raises(UnknownDatabase, match="ci, main"):
            models.database_for("nope")
    finally:
        bbo.reset()

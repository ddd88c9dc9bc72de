"""The model of a walked table, reflected from the catalog by oid: the same fields as
peewee's own reflection (``playhouse.reflection``) makes of the same table, without its
``information_schema`` queries; a vanished table is reported, not modelled empty."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from playhouse.reflection import Introspector

from dramatiq_bbo.errors import TableNotFound
from dramatiq_bbo.walk import tables
from dramatiq_bbo.walk.catalog import resolve_table

COLUMNS = """
    id bigint GENERATED ALWAYS AS IDENTITY,
    tenant int NOT NULL,
    small smallint,
    serial_no serial,
    "Mixed Name" text NOT NULL DEFAULT 'x',
    code varchar(40),
    letter char(3),
    amount numeric(12, 2),
    ratio double precision,
    half real,
    flag boolean NOT NULL DEFAULT false,
    born date,
    seen_at timestamptz DEFAULT now(),
    local_at timestamp,
    at_time time,
    token uuid,
    doc jsonb,
    plain json,
    tags text[],
    counts int[],
    blob bytea,
    mood mood,
    PRIMARY KEY (tenant, id)
"""


def fields(model: Any) -> dict[str, tuple[str, bool, bool, str]]:
    return {
        name: (type(field).__name__, field.null, field.primary_key, field.column_name)
        for name, field in model._meta.fields.items()
    }


def test_the_model_has_the_fields_peewee_reflection_gives_the_same_table(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("CREATE TYPE mood AS ENUM ('calm', 'busy')")
    conn.execute(f"CREATE TABLE reflected ({COLUMNS})")
    database = tables.peewee_database("main")
    info = resolve_table(conn, "reflected")

    ours = tables.table_model("main", info)
    stock = Introspector.from_database(database, schema="public").generate_models(
        table_names=["reflected"], literal_column_names=True
    )["reflected"]

    assert fields(ours) == fields(stock)
    assert ours._meta.database is database  # bound to the database, not to a view of it
    assert type(ours._meta.primary_key).__name__ == "CompositeKey"
    assert ours._meta.primary_key.field_names == ("tenant", "id")
    assert fields(ours)["Mixed_Name"][3] == "Mixed Name"


def test_a_table_gone_before_its_reflection_is_not_found(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("CREATE TABLE fleeting (id bigint PRIMARY KEY)")
    info = resolve_table(conn, "fleeting")
    conn.execute("DROP TABLE fleeting")
    with pytest.raises(TableNotFound, match="could not be reflected"):
        tables.table_model("main", info)

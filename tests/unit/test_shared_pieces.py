"""Pieces written once and shared: the query pieces, the scope's key columns, the event
fields of an operation, and the walk over wrapped errors."""

from __future__ import annotations

import uuid

import psycopg

from dramatiq_bbo.errors import ConnectionFailed, SubBatchTimeout, error_chain
from dramatiq_bbo.logs import operation_fields
from dramatiq_bbo.queries import query, raw
from dramatiq_bbo.reconnect import is_connection_error
from dramatiq_bbo.state.store import CELL_LOCAL, ORGANIZATION, operation_ref, tables_for
from dramatiq_bbo.walk.timeouts import timeout_kind
from tests.servers import operation_record


def _text(name: str, **identifiers: object) -> str:
    return query(name, **identifiers).as_string(None)  # type: ignore[arg-type]


def test_the_duplicate_lookup_and_the_cron_lookup_share_one_where_piece() -> None:
    piece = raw("same_configuration")
    enqueue_lookup = _text(
        "operation_find_unfinished",
        operations=CELL_LOCAL.operations_table,
        scope_condition=CELL_LOCAL.condition(),
    )
    cron_lookup = _text("cron_recent_operation", operations=CELL_LOCAL.operations_table)
    assert piece in enqueue_lookup and piece in cron_lookup
    assert "job_arguments = %(job_arguments)s::jsonb" in piece


def test_one_insert_serves_both_scopes_and_only_an_organization_writes_its_id() -> None:
    def insert(scope: object) -> str:
        return _text(
            "operation_insert",
            operations=scope.operations_table,  # type: ignore[attr-defined]
            scope_columns=scope.columns("user_id"),  # type: ignore[attr-defined]
            scope_values=scope.values("user_id"),  # type: ignore[attr-defined]
        )

    cell_local, organization = insert(CELL_LOCAL), insert(ORGANIZATION)
    assert "organization_id" not in cell_local and "user_id" not in cell_local
    assert '"organization_id", "user_id"' in organization
    assert "%(organization_id)s, %(user_id)s" in organization
    assert CELL_LOCAL.condition().as_string(None) == "TRUE"
    assert ORGANIZATION.condition().as_string(None) == '"organization_id" = %(organization_id)s'


def test_an_operation_ref_parses_once_and_knows_its_tables() -> None:
    cell = operation_ref("main", "42")
    org = operation_ref("other", str(uuid.UUID(int=7)))
    assert (cell.database, cell.id, cell.scope) == ("main", 42, CELL_LOCAL)
    assert org.scope is ORGANIZATION and org.id == uuid.UUID(int=7)
    assert tables_for(cell) == (cell.operations_table, cell.jobs_table) == CELL_LOCAL.tables
    assert str(cell) == "42"


def test_every_event_about_an_operation_names_it_the_same_way() -> None:
    operation = operation_record("items", "main")
    fields = operation_fields(operation, "column_name")
    assert fields == {
        "operation_id": str(operation.id),
        "job_class_name": operation.job_class_name,
        "table_name": "items",
        "database_name": "main",
        "column_name": operation.column_name,
    }


class _PeeweeLike(Exception):
    """Wraps the driver's error in ``orig``, as peewee does."""

    def __init__(self, orig: BaseException) -> None:
        super().__init__("wrapped")
        self.orig = orig


def test_wrapped_errors_are_found_through_causes_contexts_orig_and_arguments() -> None:
    lost = ConnectionFailed("gone")
    locked = psycopg.errors.LockNotAvailable("lock timeout")
    outer = RuntimeError(_PeeweeLike(lost))
    assert lost in list(error_chain(outer))
    assert is_connection_error(outer)
    assert timeout_kind(_PeeweeLike(locked)) == "lock_timeout"
    assert timeout_kind(SubBatchTimeout("slow", kind="statement_timeout")) == "statement_timeout"
    assert not is_connection_error(ValueError("x")) and timeout_kind(ValueError("x")) is None

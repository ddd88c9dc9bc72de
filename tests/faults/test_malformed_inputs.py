"""A corpus of malformed inputs over the API, the settings and the command line.

Every entry must be refused with its typed error (a :class:`~dramatiq_bbo.errors.BBOError`
subclass, never a database error, a ``RecursionError`` or a ``UnicodeEncodeError``), and must
write nothing: the bbo state tables and the broker's queue hold the same rows before and after.
The command line must exit non-zero with one line of error and no traceback.
"""

from __future__ import annotations

import math
import subprocess
import sys
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import errors
from dramatiq_bbo.cli.main import main as cli
from dramatiq_bbo.operation import unregister
from dramatiq_bbo.pipeline.schedules import scheduled, unschedule
from tests.faults.identifier_support import written_rows

pytestmark = pytest.mark.timeout(180)


def _deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


def _deep_object(levels: int) -> Any:
    value: Any = {}
    for _ in range(levels):
        value = {"k": value}
    return value


class _Todos(bbo.BaseOperation):
    """The operation the corpus aims at ``todos``; declares the tables it may run on."""

    name = "malformed_inputs_todos"
    tables = ("todos", "public.archive")

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.delete()


class _Anywhere(bbo.BaseOperation):
    """An operation declaring no tables: only the refused schemas limit it."""

    name = "malformed_inputs_anywhere"

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.delete()


def enqueue(table: Any = "todos", column: Any = "id", **options: Any) -> Callable[[], Any]:
    cls = options.pop("cls", _Todos)
    return lambda: bbo.enqueue(cls, table, column, **options)


def schedule(table: Any = "todos", column: Any = "id", **options: Any) -> Callable[[], Any]:
    cls = options.pop("cls", _Todos)
    cron = options.pop("cron", "0 * * * *")
    name = f"malformed_{uuid.uuid4().hex[:8]}"
    return lambda: bbo.schedule(cls, table, column, cron=cron, name=name, **options)


def control(action: str, value: Any) -> Callable[[], Any]:
    functions = {
        "get": bbo.get_operation,
        "pause": bbo.pause,
        "resume": bbo.resume,
        "cancel": bbo.cancel,
    }
    return lambda: functions[action](value)


E = errors
API_CASES: list[tuple[str, Callable[[], Any], type[Exception]]] = [
    # -- table names ----------------------------------------------------------------------------
    ("table-nul", enqueue("to\x00dos"), E.InvalidIdentifier),
    ("table-lone-surrogate", enqueue("to\ud800dos"), E.InvalidIdentifier),
    ("table-64-bytes", enqueue("t" * 64, cls=_Anywhere), E.InvalidIdentifier),
    ("table-64-bytes-unicode", enqueue("é" * 32, cls=_Anywhere), E.InvalidIdentifier),
    ("table-schema-64-bytes", enqueue("s" * 64 + ".todos"), E.InvalidIdentifier),
    ("table-three-parts", enqueue("a.b.c"), E.TableNotFound),
    ("table-unbalanced-quote", enqueue('"todos'), E.TableNotFound),
    ("table-empty", enqueue(""), E.TableNotFound),
    ("table-empty-part", enqueue("public."), E.TableNotFound),
    ("table-none", enqueue(None), E.TableNotFound),
    ("table-int", enqueue(42), E.TableNotFound),
    ("table-bytes", enqueue(b"todos"), E.TableNotFound),
    ("table-missing", enqueue("no_such_table", cls=_Anywhere), E.TableNotFound),
    ("table-missing-schema", enqueue("nowhere.todos", cls=_Anywhere), E.TableNotFound),
    ("table-view", enqueue("todo_view", cls=_Anywhere), E.TableNotFound),
    (
        "table-dramatiq-queue",
        enqueue("dramatiq.queue", "message_id", cls=_Anywhere),
        E.TableNotAllowed,
    ),
    (
        "table-bbo",
        enqueue("bbo.background_operation_workers_cell_local", cls=_Anywhere),
        E.TableNotAllowed,
    ),
    (
        "table-bbo-migrations",
        enqueue("bbo.schema_migrations", "version", cls=_Anywhere),
        E.TableNotAllowed,
    ),
    ("table-pg-class", enqueue("pg_catalog.pg_class", "oid", cls=_Anywhere), E.TableNotAllowed),
    ("table-pg-class-search-path", enqueue("pg_class", "oid", cls=_Anywhere), E.TableNotAllowed),
    (
        "table-information-schema",
        enqueue("information_schema.sql_features", "feature_id", cls=_Anywhere),
        E.TableNotAllowed,
    ),
    (
        "table-quoted-dramatiq",
        enqueue('"dramatiq"."queue"', "message_id", cls=_Anywhere),
        E.TableNotAllowed,
    ),
    ("table-outside-declared", enqueue("others"), E.TableNotAllowed),
    ("table-declared-name-other-schema", enqueue("app.todos"), E.TableNotAllowed),
    # -- column names ---------------------------------------------------------------------------
    ("column-nul", enqueue(column="i\x00d"), E.InvalidIdentifier),
    ("column-lone-surrogate", enqueue(column="i\udc00d"), E.InvalidIdentifier),
    ("column-64-bytes", enqueue(column="c" * 64), E.InvalidIdentifier),
    ("column-empty", enqueue(column=""), E.ColumnNotInCursor),
    ("column-none", enqueue(column=None), E.ColumnNotInCursor),
    ("column-missing", enqueue(column="nope"), E.ColumnNotFound),
    # -- arguments ------------------------------------------------------------------------------
    ("arguments-nul-value", enqueue(arguments={"a": "x\x00y"}), E.InvalidArguments),
    ("arguments-nul-key", enqueue(arguments={"a\x00": 1}), E.InvalidArguments),
    ("arguments-surrogate-value", enqueue(arguments={"a": "\ud800"}), E.InvalidArguments),
    ("arguments-surrogate-key", enqueue(arguments={"\udfff": 1}), E.InvalidArguments),
    ("arguments-surrogate-in-list", enqueue(arguments=["ok", ["\ud83d"]]), E.InvalidArguments),
    ("arguments-100k-deep", enqueue(arguments=_deep(100_000)), E.InvalidArguments),
    ("arguments-33-deep-objects", enqueue(arguments=_deep_object(33)), E.InvalidArguments),
    ("arguments-nan", enqueue(arguments={"a": math.nan}), E.InvalidArguments),
    ("arguments-infinity", enqueue(arguments={"a": [-math.inf]}), E.InvalidArguments),
    ("arguments-set", enqueue(arguments={"a": {1, 2}}), E.InvalidArguments),
    ("arguments-object", enqueue(arguments={"a": object()}), E.InvalidArguments),
    ("arguments-bytes", enqueue(arguments={"a": b"raw"}), E.InvalidArguments),
    ("arguments-int-key", enqueue(arguments={1: "a"}), E.InvalidArguments),
    ("arguments-string", enqueue(arguments="delete everything"), E.InvalidArguments),
    ("arguments-oversized", enqueue(arguments={"a": "x" * 70_000}), E.InvalidArguments),
    ("arguments-huge-int", enqueue(arguments={"a": 10**5000}), E.InvalidArguments),
    # -- sizes and priority ---------------------------------------------------------------------
    ("batch-size-nan", enqueue(batch_size=math.nan), E.InvalidBatchSizes),
    ("batch-size-infinity", enqueue(batch_size=math.inf), E.InvalidBatchSizes),
    ("batch-size-negative", enqueue(batch_size=-1), E.InvalidBatchSizes),
    ("batch-size-zero", enqueue(batch_size=0), E.InvalidBatchSizes),
    ("batch-size-beyond-int32", enqueue(batch_size=2**31), E.InvalidBatchSizes),
    ("batch-size-float", enqueue(batch_size=1.5), E.InvalidBatchSizes),
    ("batch-size-string", enqueue(batch_size="100"), E.InvalidBatchSizes),
    ("batch-size-bool", enqueue(batch_size=True), E.InvalidBatchSizes),
    ("sub-batch-larger-than-batch", enqueue(batch_size=10, sub_batch_size=11), E.InvalidBatchSizes),
    ("pause-negative", enqueue(pause_ms=-1), E.InvalidBatchSizes),
    ("pause-over-an-hour", enqueue(pause_ms=3_600_001), E.InvalidBatchSizes),
    ("interval-nan", enqueue(interval_seconds=math.nan), E.InvalidBatchSizes),
    ("interval-negative", enqueue(interval_seconds=-1.0), E.InvalidBatchSizes),
    ("interval-ten-years", enqueue(interval_seconds=3.2e8), E.InvalidBatchSizes),
    ("min-over-max-batch", enqueue(min_batch_size=5000, max_batch_size=4000), E.InvalidBatchSizes),
    ("priority-beyond-smallint", enqueue(priority=2**15), E.InvalidPriority),
    ("priority-nan", enqueue(priority=math.nan), E.InvalidPriority),
    # -- scope, database, class -----------------------------------------------------------------
    ("organization-without-user", enqueue(organization_id=1), E.InvalidScope),
    ("organization-beyond-bigint", enqueue(organization_id=2**63, user_id=1), E.InvalidScope),
    ("organization-nan", enqueue(organization_id=math.nan, user_id=1), E.InvalidScope),
    (
        "user-without-ids",
        enqueue(user=SimpleNamespace(id=None, organization_id=None)),
        E.InvalidScope,
    ),
    ("database-unknown", enqueue(database="elsewhere"), E.UnknownDatabase),
    ("database-nul", enqueue(database="ma\x00in"), E.UnknownDatabase),
    ("class-unknown", lambda: bbo.enqueue("no_such_class", "todos", "id"), E.UnknownOperationClass),
    ("class-name-nul", lambda: bbo.enqueue("Todo\x00s", "todos", "id"), E.UnknownOperationClass),
    ("class-not-an-operation", lambda: bbo.enqueue(dict, "todos", "id"), E.UnknownOperationClass),
    ("connection-not-a-connection", enqueue(connection="postgresql://x"), E.InvalidConnection),
    # -- operation ids --------------------------------------------------------------------------
    ("get-id-text", control("get", "not-an-id"), E.InvalidOperationId),
    ("get-id-nul", control("get", "1\x00"), E.InvalidOperationId),
    ("get-id-surrogate", control("get", "\ud800"), E.InvalidOperationId),
    ("get-id-float", control("get", 1.5), E.InvalidOperationId),
    ("get-id-none", control("get", None), E.InvalidOperationId),
    ("get-id-beyond-bigint", control("get", 2**63), E.InvalidOperationId),
    ("get-id-20-digits", control("get", "9" * 20), E.InvalidOperationId),
    ("get-id-absent", control("get", 424242), E.OperationNotFound),
    ("pause-id-text", control("pause", "x"), E.InvalidOperationId),
    ("pause-id-broken-uuid", control("pause", str(uuid.uuid4())[:-1]), E.InvalidOperationId),
    ("resume-id-list", control("resume", [1]), E.InvalidOperationId),
    ("cancel-id-bool", control("cancel", True), E.InvalidOperationId),
    ("cancel-id-absent-uuid", control("cancel", uuid.uuid4()), E.OperationNotFound),
    # -- schedule -------------------------------------------------------------------------------
    ("schedule-bad-cron", schedule(cron="every hour"), E.InvalidCronExpression),
    ("schedule-cron-nul", schedule(cron="0 * * * *\x00"), E.InvalidCronExpression),
    ("schedule-table-nul", schedule("to\x00dos"), E.InvalidIdentifier),
    ("schedule-table-dramatiq", schedule("dramatiq.queue", cls=_Anywhere), E.TableNotAllowed),
    (
        "schedule-table-pg-catalog",
        schedule("pg_catalog.pg_class", cls=_Anywhere),
        E.TableNotAllowed,
    ),
    ("schedule-table-outside-declared", schedule("others"), E.TableNotAllowed),
    ("schedule-column-surrogate", schedule(column="\ud800"), E.InvalidIdentifier),
    ("schedule-arguments-deep", schedule(arguments=_deep(100_000)), E.InvalidArguments),
    ("schedule-dedupe-nan", schedule(dedupe_seconds=math.nan), E.InvalidBatchSizes),
    ("schedule-dedupe-a-century", schedule(dedupe_seconds=3.2e9), E.InvalidBatchSizes),
    (
        "schedule-actor-name-nul",
        lambda: bbo.schedule(_Todos, "todos", "id", cron="0 * * * *", name="a\x00"),
        E.OperationDefinitionError,
    ),
    ("schedule-batch-size-zero", schedule(batch_size=0), E.InvalidBatchSizes),
    ("schedule-organization", schedule(organization_id=1), E.InvalidScope),
]


@pytest.fixture
def world(configured: str, conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("CREATE TABLE todos (id bigint PRIMARY KEY, done boolean NOT NULL)")
    conn.execute("INSERT INTO todos SELECT g, g %% 2 = 0 FROM generate_series(1, 20) AS g", [])
    conn.execute("CREATE TABLE others (id bigint PRIMARY KEY)")
    conn.execute("CREATE SCHEMA app")
    conn.execute("CREATE TABLE app.todos (id bigint PRIMARY KEY)")
    conn.execute("CREATE VIEW todo_view AS SELECT * FROM todos")
    # a first operation and a broker message, so "nothing written" compares non-empty tables
    bbo.enqueue(_Todos, "todos", "id", arguments={"seed": True})
    conn.execute(
        "INSERT INTO dramatiq.queue (message_id, queue_name, state, message)"
        " VALUES (gen_random_uuid(), 'seed', 'queued', '{}')"
    )
    return conn


def test_the_corpus_holds_at_least_sixty_malformed_inputs() -> None:
    assert len(API_CASES) + len(SETTINGS_CASES) + len(CLI_CASES) >= 60


@pytest.mark.parametrize(("case", "call", "error"), API_CASES, ids=[c[0] for c in API_CASES])
def test_a_malformed_api_input_is_refused_with_its_typed_error_and_writes_nothing(
    world: psycopg.Connection[Any], case: str, call: Callable[[], Any], error: type[Exception]
) -> None:
    before = written_rows(world)
    with pytest.raises(error) as caught:
        call()
    assert isinstance(caught.value, errors.BBOError)
    assert str(caught.value), case
    assert written_rows(world) == before
    for declared in scheduled():
        if declared.actor_name.startswith("malformed_"):
            unschedule(declared.actor_name)


@pytest.mark.parametrize(
    "tables",
    ["todos", (), ("to\x00dos",), (42,), ("bbo.workers",), ("a.b.c",), ("x",) * 101, [None]],
    ids=["string", "empty", "nul", "int", "refused-schema", "three-parts", "too-many", "none"],
)
def test_a_malformed_tables_declaration_fails_at_class_creation(tables: Any) -> None:
    with pytest.raises(errors.OperationDefinitionError):
        type("BadTables", (bbo.BaseOperation,), {"tables": tables, "perform": lambda self: None})
    unregister("BadTables")


# -- settings ----------------------------------------------------------------------------------
SETTINGS_CASES: list[tuple[str, dict[str, Any]]] = [
    ("lease-nan", {"lease_seconds": math.nan}),
    ("lease-negative", {"lease_seconds": -10}),
    ("lease-zero", {"lease_seconds": 0}),
    ("lease-ten-years", {"lease_seconds": 3.2e8}),
    ("lease-infinity", {"lease_seconds": math.inf}),
    ("lease-string", {"lease_seconds": "300"}),
    ("statement-timeout-negative", {"statement_timeout_ms": -1}),
    ("statement-timeout-zero", {"statement_timeout_ms": 0}),
    ("statement-timeout-float", {"statement_timeout_ms": 1.5}),
    ("lock-timeout-over-a-day", {"lock_timeout_ms": 86_400_001}),
    ("max-attempts-zero", {"max_attempts": 0}),
    ("max-running-jobs-negative", {"max_running_jobs": -1}),
    ("queue-name-empty", {"queue_name": ""}),
    ("queue-name-space", {"queue_name": "a queue"}),
    ("queue-name-nul", {"queue_name": "q\x00"}),
    ("queue-name-int", {"queue_name": 7}),
    ("batch-size-beyond-int32", {"batch_size": 2**31}),
    ("pause-nan", {"pause_ms": math.nan}),
    ("budget-fraction-zero", {"job_budget_fraction": 0}),
    ("hold-negative", {"health_hold_seconds": -1}),
    ("arguments-bytes-negative", {"max_arguments_bytes": -1}),
    ("arguments-depth-zero", {"max_arguments_depth": 0}),
    ("unknown-setting", {"lease_second": 30}),
    ("health-not-a-mapping", {"health": "off"}),
    ("dsn-nul", {"dsn": "postgresql://x@127.0.0.1/\x00"}),
    ("dsn-not-a-string", {"dsn": 42}),
    ("dsn-malformed", {"dsn": "not a dsn"}),
    ("database-name-empty", {"databases": {"": "postgresql://x@127.0.0.1/x"}}),
]


@pytest.mark.parametrize(("case", "overrides"), SETTINGS_CASES, ids=[c[0] for c in SETTINGS_CASES])
def test_a_bad_setting_raises_configuration_error_and_changes_nothing(
    world: psycopg.Connection[Any], configured: str, case: str, overrides: dict[str, Any]
) -> None:
    settings_before = bbo.settings()
    before = written_rows(world)
    arguments = {"dsn": configured, **overrides}
    with pytest.raises(errors.ConfigurationError):
        bbo.configure(**arguments)
    assert bbo.settings() == settings_before
    assert written_rows(world) == before
    # still configured on the test's database, as before the refused call
    assert bbo.enqueue(_Todos, "todos", "id", arguments={"after": case}).duplicate is False


# -- the command line --------------------------------------------------------------------------
CLI_CASES: list[tuple[str, list[str], int]] = [
    ("migrate-malformed-dsn", ["migrate", "--dsn", "not a dsn"], 1),
    ("migrate-unreachable", ["migrate", "--dsn", "postgresql://nobody@127.0.0.1:1/x"], 1),
    ("migrate-no-socket", ["migrate", "--dsn", "host=/nonexistent dbname=x"], 1),
    ("migrate-bad-uri", ["migrate", "--dsn", "postgresql://[::1/x"], 1),
    ("migrate-unknown-option", ["migrate", "--force"], 2),
    ("demo-rows-negative", ["demo", "--rows", "-5"], 2),
    ("demo-rows-zero", ["demo", "--rows", "0"], 2),
    ("demo-rows-text", ["demo", "--rows", "many"], 2),
    ("demo-rows-absurd", ["demo", "--rows", "10000000000"], 2),
    ("demo-timeout-nan", ["demo", "--timeout", "nan"], 2),
    ("demo-timeout-negative", ["demo", "--timeout", "-1"], 2),
    ("demo-unreachable", ["demo", "--rows", "10", "--dsn", "postgresql://nobody@127.0.0.1:1/x"], 1),
    ("unknown-command", ["frobnicate"], 2),
]


@pytest.mark.parametrize(("case", "argv", "code"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_a_malformed_command_line_exits_non_zero_with_one_error_and_no_traceback(
    capsys: pytest.CaptureFixture[str], case: str, argv: list[str], code: int
) -> None:
    assert cli(argv) == code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert "error" in captured.err


@pytest.mark.parametrize(
    "argv",
    [
        ["migrate", "--dsn", "postgresql://nobody@127.0.0.1:1/x"],
        ["demo", "--timeout", "inf"],
    ],
    ids=["migrate-unreachable", "demo-timeout-infinite"],
)
def test_the_installed_command_refuses_without_a_traceback(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dramatiq_bbo.cli.main", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "error" in done.stderr

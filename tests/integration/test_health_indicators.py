"""Issue 5: the long-transaction, saturation, Prometheus and user indicators, each against a
real state of a real server — a session holding a transaction open, connections opened for
the test, a local HTTP server answering Prometheus's query API — never a mocked query.

Thresholds are set low where the real default would take minutes to reach; answers are
polled with a deadline (the indicators' caches are switched off) instead of slept for.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest
from psycopg import sql

import dramatiq_bbo as bbo
from dramatiq_bbo import health
from dramatiq_bbo.logs import HEALTH_SIGNAL
from tests.helpers import wait_until

Signal = health.Signal

#: every indicator answers at once in these tests: no cached answers to wait out
NO_CACHE = {name: 0 for name in health.BUILTIN_INDICATORS}


class Touch(bbo.BaseOperation):
    """The operation the indicators are asked about (it never runs here)."""

    name = "health_indicators.touch"

    def perform(self) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.update(visits=self.table.visits + 1)


@pytest.fixture
def prepare(
    dsn: str, conn: psycopg.Connection[Any]
) -> Iterator[Callable[..., bbo.OperationRecord]]:
    """``prepare(**thresholds)``: bbo configured on the test database with those health
    thresholds, and an operation over its ``items`` table."""
    conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
    conn.execute("INSERT INTO items (id) SELECT generate_series(1, 100)")

    def make(dsn: str = dsn, **thresholds: Any) -> bbo.OperationRecord:
        bbo.configure(dsn=dsn, health={"cache_seconds": NO_CACHE, **thresholds})
        health.clear_cache()
        return bbo.enqueue(Touch, "items", "id").operation

    yield make
    health.clear_cache()
    bbo.reset()


@pytest.fixture
def registered() -> Iterator[Callable[..., Any]]:
    """``health.register`` for this test only."""
    names: list[str] = []

    def register(fn: Any, **options: Any) -> Any:
        options.setdefault("name", f"user_{uuid.uuid4().hex[:8]}")
        names.append(options["name"])
        return health.register(fn, **options)

    yield register
    for name in names:
        health.unregister(name)


def answer(operation: bbo.OperationRecord, indicator: str) -> health.Result:
    [result] = health.evaluate(operation, indicators=[indicator]).results
    return result


def answers(operation: bbo.OperationRecord, indicator: str, signal: Signal) -> Any:
    """A predicate for wait_until: the indicator's answer once it is ``signal``."""

    def check() -> health.Result | None:
        result = answer(operation, indicator)
        return result if result.signal is signal else None

    return check


# -- long_transaction ------------------------------------------------------------------------------
def test_a_session_holding_a_transaction_with_an_xid_open_stops_until_it_ends(
    prepare: Callable[..., bbo.OperationRecord], dsn: str
) -> None:
    operation = prepare(max_transaction_age_seconds=1)
    assert answer(operation, "long_transaction").signal is Signal.NORMAL

    with psycopg.connect(dsn) as other:  # not autocommit: the SELECT opens a transaction
        other.execute("SELECT txid_current()")
        stop = wait_until(answers(operation, "long_transaction", Signal.STOP), timeout=15)
        assert f"session {other.info.backend_pid}" in stop.reason
        assert "idle in transaction" in stop.reason
        assert "max_transaction_age_seconds 1" in stop.reason
        other.commit()

        wait_until(answers(operation, "long_transaction", Signal.NORMAL), timeout=15)


def test_a_snapshot_held_while_transaction_ids_are_consumed_stops_on_the_xmin_age(
    prepare: Callable[..., bbo.OperationRecord], dsn: str, conn: psycopg.Connection[Any]
) -> None:
    operation = prepare(max_xmin_age_xids=20)
    with psycopg.connect(dsn) as reader:
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT count(*) FROM items")  # holds its snapshot, no xid of its own
        for _ in range(25):  # each autocommit txid_current() consumes one transaction id
            conn.execute("SELECT txid_current()")
        stop = wait_until(answers(operation, "long_transaction", Signal.STOP), timeout=15)
        assert f"session {reader.info.backend_pid}" in stop.reason
        assert "xmin horizon" in stop.reason and "max_xmin_age_xids 20" in stop.reason
        reader.rollback()
        wait_until(answers(operation, "long_transaction", Signal.NORMAL), timeout=15)


def test_a_snapshot_of_another_role_the_checker_may_not_read_is_not_available(
    prepare: Callable[..., bbo.OperationRecord], dsn: str, conn: psycopg.Connection[Any]
) -> None:
    operation = prepare()
    role = f"bbo_health_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        unprivileged = psycopg.conninfo.make_conninfo(dsn, user=role, password="")
        bbo.configure(dsn=unprivileged, health={"cache_seconds": NO_CACHE})
        with psycopg.connect(dsn) as other:  # the test's (superuser) role
            other.execute("SELECT txid_current()")
            result = wait_until(
                answers(operation, "long_transaction", Signal.NOT_AVAILABLE), timeout=15
            )
            assert "pg_read_all_stats" in result.reason
    finally:
        bbo.reset()
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# -- saturation ------------------------------------------------------------------------------------
def client_backends(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE backend_type = 'client backend'),"
        " current_setting('max_connections')::int FROM pg_stat_activity"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_connections_opened_past_the_ratio_stop_and_closing_them_is_normal_again(
    prepare: Callable[..., bbo.OperationRecord], dsn: str, conn: psycopg.Connection[Any]
) -> None:
    # The server is shared with other tests: rather than filling it, put the threshold just
    # above the current usage and open a few more connections than that margin.
    margin = 3
    operation = prepare()
    answer(operation, "saturation")  # the checker's own pooled connection now exists
    current, max_connections = client_backends(conn)
    ratio = (current + margin) / max_connections
    operation = prepare(max_connection_ratio=ratio)
    answer(operation, "saturation")

    extra = [psycopg.connect(dsn) for _ in range(margin + 3)]
    try:
        stop = wait_until(answers(operation, "saturation", Signal.STOP), timeout=15)
        assert f"of max_connections {max_connections} in use" in stop.reason
    finally:
        for connection in extra:
            connection.close()
    wait_until(answers(operation, "saturation", Signal.NORMAL), timeout=15)


# -- prometheus ------------------------------------------------------------------------------------
class FakePrometheus:
    """A local HTTP server answering ``/api/v1/query`` with ``self.reply`` (status, body)."""

    def __init__(self) -> None:
        self.reply: tuple[int, dict[str, Any]] = (200, vector())
        self.queries: list[str] = []
        self.hold = threading.Event()
        self.hold.set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                fake.queries.extend(parse_qs(url.query).get("query", []))
                fake.hold.wait(30)
                status, body = fake.reply if url.path == "/api/v1/query" else (404, {})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


def vector(*values: float) -> dict[str, Any]:
    result = [{"metric": {"job": f"web{i}"}, "value": [1.0, str(v)]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    yield server
    server.stop()


QUERY = 'histogram_quantile(0.99, rate(http_request_duration_seconds_bucket{job="web"}[5m]))'


def test_prometheus_stops_when_the_sli_breaks_the_slo_and_is_normal_within_it(
    prepare: Callable[..., bbo.OperationRecord], prometheus: FakePrometheus
) -> None:
    operation = prepare(prometheus_url=prometheus.url, prometheus_query=QUERY, prometheus_slo=0.5)
    assert "prometheus" in [i.name for i in health.configured(health.settings.current())]

    prometheus.reply = (200, vector(0.2, 0.3))
    result = answer(operation, "prometheus")
    assert result.signal is Signal.NORMAL and "SLI 0.3 within SLO 0.5" in result.reason

    prometheus.reply = (200, vector(0.2, 0.9))  # the worst series counts
    result = answer(operation, "prometheus")
    assert result.signal is Signal.STOP and result.reason.startswith("SLI 0.9 above SLO 0.5")
    assert prometheus.queries[-1] == QUERY


def test_prometheus_below_mode_stops_when_the_sli_falls_under_the_slo(
    prepare: Callable[..., bbo.OperationRecord], prometheus: FakePrometheus
) -> None:
    operation = prepare(
        prometheus_url=prometheus.url + "/",
        prometheus_query="apdex",
        prometheus_slo=0.95,
        prometheus_stop_when="below",
    )
    scalar = {"resultType": "scalar", "result": [1, "0.97"]}
    prometheus.reply = (200, {"status": "success", "data": scalar})
    assert answer(operation, "prometheus").signal is Signal.NORMAL
    prometheus.reply = (200, vector(0.99, 0.91))
    result = answer(operation, "prometheus")
    assert result.signal is Signal.STOP and "SLI 0.91 below SLO 0.95" in result.reason


def test_prometheus_without_a_sample_is_not_available_and_an_error_is_unknown(
    prepare: Callable[..., bbo.OperationRecord], prometheus: FakePrometheus
) -> None:
    operation = prepare(prometheus_url=prometheus.url, prometheus_query=QUERY, prometheus_slo=1)
    prometheus.reply = (200, vector())
    assert answer(operation, "prometheus").signal is Signal.NOT_AVAILABLE
    prometheus.reply = (400, {"status": "error", "error": "parse error at char 3"})
    result = answer(operation, "prometheus")
    assert result.signal is Signal.UNKNOWN and "HTTP 400: parse error at char 3" in result.reason


def test_prometheus_too_slow_to_answer_is_unknown(
    prepare: Callable[..., bbo.OperationRecord], prometheus: FakePrometheus
) -> None:
    operation = prepare(
        prometheus_url=prometheus.url,
        prometheus_query=QUERY,
        prometheus_slo=1,
        indicator_timeout_seconds=0.5,
    )
    prometheus.hold.clear()  # the server accepts the request and does not answer in time
    result = answer(operation, "prometheus")
    assert result.signal is Signal.UNKNOWN and "timed out" in result.reason


def test_prometheus_down_is_unknown(
    prepare: Callable[..., bbo.OperationRecord], prometheus: FakePrometheus
) -> None:
    operation = prepare(prometheus_url=prometheus.url, prometheus_query=QUERY, prometheus_slo=1)
    prometheus.reply = (200, vector(0.5))
    assert answer(operation, "prometheus").signal is Signal.NORMAL
    prometheus.stop()
    result = answer(operation, "prometheus")
    assert result.signal is Signal.UNKNOWN
    assert f"cannot query Prometheus at {prometheus.url}" in result.reason


# -- user callables --------------------------------------------------------------------------------
def test_a_user_callable_answers_with_a_signal_or_a_signal_and_reason(
    prepare: Callable[..., bbo.OperationRecord], registered: Callable[..., Any]
) -> None:
    operation = prepare()
    registered(lambda context: Signal.STOP, name="plain_stop")
    registered(lambda context: (Signal.STOP, "replica 40s behind"), name="reasoned_stop")
    evaluation = health.evaluate(operation)
    user = {r.indicator: r for r in evaluation.results if r.indicator.endswith("_stop")}
    assert user["plain_stop"] == health.Result("plain_stop", Signal.STOP, "")
    assert user["reasoned_stop"] == health.Result(
        "reasoned_stop", Signal.STOP, "replica 40s behind"
    )
    assert evaluation.stop is not None


def test_a_user_callable_gets_the_operation_and_a_connection_to_its_database(
    prepare: Callable[..., bbo.OperationRecord], registered: Callable[..., Any]
) -> None:
    operation = prepare()

    def rows_left(context: health.Context) -> Any:
        table = sql.Identifier(context.operation.table_schema, context.operation.table_name)
        row = context.connection.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE visits = 0").format(table)
        ).fetchone()
        return Signal.STOP, f"{row[0]} rows in {context.operation.table_display}"

    registered(rows_left, name="rows_left")
    assert answer(operation, "rows_left") == health.Result(
        "rows_left", Signal.STOP, "100 rows in public.items"
    )
    assert bbo.get_operation(operation.id) == operation  # read-only: nothing changed


def test_a_user_callable_that_raises_is_unknown_and_logged(
    prepare: Callable[..., bbo.OperationRecord],
    registered: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    operation = prepare()

    def broken(context: health.Context) -> Signal:
        raise ValueError("metrics endpoint gone")

    registered(broken, name="broken")
    with caplog.at_level(logging.INFO, logger="dramatiq_bbo"):
        result = answer(operation, "broken")
    assert result.signal is Signal.UNKNOWN
    assert result.reason == "raised ValueError: metrics endpoint gone"
    logged = [getattr(r, "bbo", {}) for r in caplog.records]
    assert {
        "message": HEALTH_SIGNAL,
        "indicator": "broken",
        "signal": "unknown",
        "operation_id": str(operation.id),
    }.items() <= next(e for e in logged if e.get("indicator") == "broken").items()


def test_a_user_callable_hanging_past_its_timeout_is_unknown(
    prepare: Callable[..., bbo.OperationRecord], registered: Callable[..., Any]
) -> None:
    operation = prepare()
    release = threading.Event()
    registered(lambda context: release.wait(30) and Signal.NORMAL, name="hang", timeout_seconds=0.3)
    try:
        result = answer(operation, "hang")
        assert result.signal is Signal.UNKNOWN and "no answer within 0.3s" in result.reason
    finally:
        release.set()
    wait_until(answers(operation, "hang", Signal.NORMAL))


def test_a_user_query_that_hangs_is_cut_by_the_statement_timeout(
    prepare: Callable[..., bbo.OperationRecord], registered: Callable[..., Any]
) -> None:
    operation = prepare(indicator_timeout_seconds=0.3)
    registered(lambda context: context.connection.execute("SELECT pg_sleep(30)"), name="slow_sql")
    result = answer(operation, "slow_sql")
    # cancelled by the server before the deadline: the thread and its connection come back
    assert result.signal is Signal.UNKNOWN
    assert result.reason.startswith("raised QueryCanceled") and "statement timeout" in result.reason

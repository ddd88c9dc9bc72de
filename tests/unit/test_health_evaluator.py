"""The health evaluator's rules, with indicators that need no database: deadlines, errors,
caching, logging, the configured set, the settings, registration and the pipeline hooks.

The indicators against real server states are in tests/integration/test_health_indicators.py.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import health
from dramatiq_bbo.errors import ConfigurationError
from dramatiq_bbo.health import evaluator
from dramatiq_bbo.health.hold import MAX_HOLD_REASON, hold_reason
from dramatiq_bbo.health.user import as_result
from dramatiq_bbo.logs import HEALTH_SIGNAL
from dramatiq_bbo.metrics import PrometheusMetrics
from dramatiq_bbo.state.records import OperationRecord, OperationStatus
from tests.helpers import wait_until

Signal = health.Signal
NOW = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def operation(table: str = "items", id: int = 7) -> OperationRecord:
    return OperationRecord(
        id=id, partition=1, job_class_name="op", table_name=table, column_name="id",
        cursor_columns=("id",), job_arguments={}, database_name="main",
        status=OperationStatus.ACTIVE, priority=0, batch_size=10, sub_batch_size=5,
        min_batch_size=1, max_batch_size=10, pause_ms=0, interval_seconds=0, min_cursor=[1],
        max_cursor=[10], next_cursor=None, total_tuple_count=10, processed_tuple_count=0,
        affected_tuple_count=0, on_hold_until=None, hold_reason=None, lease_owner=None,
        lease_expires_at=None, last_run_at=None, started_at=None, finished_at=None,
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip


class Fake:
    """An indicator answering ``answer()`` (a Result, or raising), counting its calls; it
    never touches ``context.connection``, so no connection is ever opened."""

    def __init__(
        self,
        name: str,
        answer: Callable[[], Any] = lambda: Signal.NORMAL,
        *,
        cache_seconds: float = 0.0,
        per_table: bool = True,
        timeout_seconds: float | None = None,
    ) -> None:
        self.name = name
        self.answer = answer
        self.cache_seconds = cache_seconds
        self.per_table = per_table
        self.timeout_seconds = timeout_seconds
        self.calls = 0
        self.contexts: list[health.Context] = []

    def check(self, context: health.Context) -> health.Result:
        self.calls += 1
        self.contexts.append(context)
        return as_result(self.name, self.answer())


@pytest.fixture(autouse=True)
def configured() -> Iterator[None]:
    """A registry entry (never connected to: these indicators need no connection)."""
    bbo.configure(dsn="postgresql://unit@127.0.0.1:1/unit_health")
    health.clear_cache()
    yield
    health.clear_cache()
    bbo.reset()


@pytest.fixture
def released() -> Iterator[threading.Event]:
    """An event hung indicators wait on; set at teardown so their threads end."""
    event = threading.Event()
    yield event
    event.set()


def signals(evaluation: health.Evaluation) -> list[tuple[str, Signal]]:
    return [(r.indicator, r.signal) for r in evaluation.results]


def health_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    fields = [getattr(r, "bbo", {}) for r in caplog.records]
    return [f for f in fields if f.get("message") == HEALTH_SIGNAL]


# -- evaluation ------------------------------------------------------------------------------------
def test_every_answer_is_kept_in_order_and_the_first_stop_is_the_verdict() -> None:
    fakes = [
        Fake("calm"),
        Fake("busy", lambda: (Signal.STOP, "first")),
        Fake("later", lambda: (Signal.STOP, "second")),
        Fake("blind", lambda: Signal.NOT_AVAILABLE),
    ]
    evaluation = health.evaluate(operation(), indicators=fakes)
    assert signals(evaluation) == [
        ("calm", Signal.NORMAL),
        ("busy", Signal.STOP),
        ("later", Signal.STOP),
        ("blind", Signal.NOT_AVAILABLE),
    ]
    assert evaluation.stop == health.Result("busy", Signal.STOP, "first")


def test_without_a_stop_there_is_no_verdict_even_when_indicators_are_unknown() -> None:
    evaluation = health.evaluate(operation(), indicators=[Fake("a", lambda: Signal.UNKNOWN)])
    assert evaluation.stop is None


def test_an_indicator_that_raises_answers_unknown_with_the_error_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom() -> Any:
        raise RuntimeError("catalog on fire")

    with caplog.at_level(logging.INFO, logger="dramatiq_bbo"):
        evaluation = health.evaluate(operation(), indicators=[Fake("fragile", boom)])
    [result] = evaluation.results
    assert result.signal is Signal.UNKNOWN
    assert result.reason == "raised RuntimeError: catalog on fire"
    [logged] = health_events(caplog)
    assert logged["indicator"] == "fragile" and logged["signal"] == "unknown"
    assert logged["operation_id"] == "7" and "catalog on fire" in logged["reason"]
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.WARNING)


def test_an_indicator_past_its_deadline_answers_unknown_and_is_not_started_again(
    released: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    hung = Fake("hung", lambda: released.wait(30) and Signal.NORMAL, timeout_seconds=0.2)
    quick = Fake("quick")
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="dramatiq_bbo"):
        first = health.evaluate(operation(), indicators=[hung, quick])
    waited = time.monotonic() - started
    assert signals(first) == [("hung", Signal.UNKNOWN), ("quick", Signal.NORMAL)]
    assert "no answer within 0.2s" in first.results[0].reason
    assert 0.15 <= waited < 2.0
    # asked again while the first run still hangs: UNKNOWN at once, no second thread
    started = time.monotonic()
    again = health.evaluate(operation(), indicators=[hung])
    assert time.monotonic() - started < 0.1
    assert signals(again) == [("hung", Signal.UNKNOWN)]
    assert hung.calls == 1
    assert [e["indicator"] for e in health_events(caplog)] == ["hung"]  # logged once
    # once it returns, it is asked afresh
    released.set()
    wait_until(
        lambda: (
            signals(health.evaluate(operation(), indicators=[hung])) == [("hung", Signal.NORMAL)]
        )
    )
    assert hung.calls == 2


def test_answers_are_reused_for_cache_seconds_per_database_table_and_indicator() -> None:
    per_table = Fake("per_table", cache_seconds=60)
    server = Fake("server", cache_seconds=60, per_table=False)
    uncached = Fake("uncached")
    for table in ("items", "items", "other"):
        health.evaluate(operation(table), indicators=[per_table, server, uncached])
    assert per_table.calls == 2  # once for items, once for other
    assert server.calls == 1  # one answer for every table
    assert uncached.calls == 3


def test_a_cached_answer_expires_after_its_cache_period() -> None:
    flipping = Fake("flipping", cache_seconds=0.2)
    health.evaluate(operation(), indicators=[flipping])
    flipping.answer = lambda: Signal.STOP
    assert health.evaluate(operation(), indicators=[flipping]).stop is None  # still cached
    wait_until(lambda: health.evaluate(operation(), indicators=[flipping]).stop, timeout=5)
    assert flipping.calls == 2


def test_the_cache_seconds_setting_overrides_an_indicators_own_period() -> None:
    bbo.configure(
        dsn="postgresql://unit@127.0.0.1:1/unit_health", health={"cache_seconds": {"x": 0}}
    )
    cached = Fake("x", cache_seconds=60)
    for _ in range(3):
        health.evaluate(operation(), indicators=[cached])
    assert cached.calls == 3


def test_only_fresh_answers_other_than_normal_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    stop = Fake("stopper", lambda: (Signal.STOP, "too busy"), cache_seconds=60)
    blind = Fake("blind", lambda: (Signal.NOT_AVAILABLE, "archiving is off"))
    with caplog.at_level(logging.INFO, logger="dramatiq_bbo"):
        for _ in range(3):
            health.evaluate(operation(), indicators=[stop, blind, Fake("calm")])
    events = health_events(caplog)
    assert [(e["indicator"], e["signal"]) for e in events] == [
        ("stopper", "stop"),
        ("blind", "not_available"),  # once: three checks, one change
    ]
    assert events[0]["reason"] == "too busy" and events[0]["table_name"] == "items"


def test_not_available_is_logged_again_only_after_the_indicator_answered_something_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = iter([Signal.NOT_AVAILABLE] * 3 + [Signal.NORMAL] + [Signal.NOT_AVAILABLE] * 2)
    blind = Fake("blind", lambda: (next(answers), "no replica"))
    with caplog.at_level(logging.INFO, logger="dramatiq_bbo"):
        for _ in range(6):
            health.evaluate(operation(), indicators=[blind])
        health.evaluate(
            operation(table="other"),
            indicators=[Fake("blind", lambda: (Signal.NOT_AVAILABLE, "no replica"))],
        )
    events = health_events(caplog)
    assert [(e["signal"], e["table_name"]) for e in events] == [
        ("not_available", "items"),
        ("not_available", "items"),  # after the normal answer
        ("not_available", "other"),  # another table's answer is news of its own
    ]


def test_the_indicator_gets_the_operation_and_the_thresholds_in_force() -> None:
    bbo.configure(
        dsn="postgresql://unit@127.0.0.1:1/unit_health", health={"max_connection_ratio": 0.5}
    )
    seen = Fake("seen")
    health.evaluate(operation(), indicators=[seen])
    [context] = seen.contexts
    assert context.operation == operation() and context.database == "main"
    assert context.settings["max_connection_ratio"] == 0.5
    assert context.settings["max_transaction_age_seconds"] == 600.0


# -- the configured set ----------------------------------------------------------------------------
def test_builtins_run_by_default_except_prometheus_which_needs_a_url() -> None:
    names = [i.name for i in health.configured(health.settings.current())]
    assert {"long_transaction", "saturation"} <= set(names)
    assert "prometheus" not in names
    bbo.configure(
        dsn="postgresql://unit@127.0.0.1:1/unit_health",
        health={
            "prometheus_url": "http://127.0.0.1:9",
            "prometheus_query": "up",
            "prometheus_slo": 1,
            "disabled_indicators": ["saturation"],
        },
    )
    names = [i.name for i in health.configured(health.settings.current())]
    assert "prometheus" in names and "saturation" not in names
    assert set(names) <= set(health.BUILTIN_INDICATORS)


def test_a_builtin_whose_module_is_missing_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    from dramatiq_bbo.health import indicators

    monkeypatch.setitem(indicators.BUILTIN_INDICATORS, "ghost", "dramatiq_bbo.health.ghost:Ghost")
    names = [i.name for i in health.configured(health.settings.current())]
    assert "ghost" not in names and "long_transaction" in names


def test_registered_callables_run_after_the_builtins_and_can_be_disabled() -> None:
    @health.register(name="app_check")
    def app_check(context: health.Context) -> Signal:
        return Signal.NORMAL

    try:
        names = [i.name for i in health.configured(health.settings.current())]
        assert names[-1] == "app_check"
        settings = {**health.settings.current(), "disabled_indicators": ["app_check"]}
        assert "app_check" not in [i.name for i in health.configured(settings)]
    finally:
        health.unregister(app_check)
    assert "app_check" not in [u.name for u in health.registered()]


def test_register_refuses_a_builtin_name_and_a_non_callable() -> None:
    with pytest.raises(ConfigurationError, match="built-in"):
        health.register(lambda c: Signal.NORMAL, name="saturation")
    with pytest.raises(ConfigurationError, match="callable"):
        health.register("not a function")  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Signal.STOP, (Signal.STOP, "")),
        ((Signal.STOP, "replica behind"), (Signal.STOP, "replica behind")),
        (health.Result("other", Signal.NOT_AVAILABLE, "x"), (Signal.NOT_AVAILABLE, "x")),
        (True, (Signal.UNKNOWN, "returned True; expected a health.Signal or a (Signal, reason)"
                                " tuple")),
        (("stop", "why"), (Signal.UNKNOWN, None)),
    ],
)  # fmt: skip
def test_what_a_user_callable_returns_becomes_a_result(
    value: Any, expected: tuple[Signal, str | None]
) -> None:
    result = as_result("mine", value)
    assert result.indicator == "mine" and result.signal is expected[0]
    if expected[1] is not None:
        assert result.reason == expected[1]


# -- settings --------------------------------------------------------------------------------------
def test_an_unknown_threshold_name_is_refused_with_the_known_names() -> None:
    with pytest.raises(ConfigurationError) as caught:
        bbo.configure(dsn="postgresql://unit@127.0.0.1:1/x", health={"max_conection_ratio": 1})
    message = str(caught.value)
    assert "'max_conection_ratio'" in message
    assert "max_connection_ratio" in message and "max_transaction_age_seconds" in message


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_connection_ratio": "high"},
        {"max_transaction_age_seconds": -1},
        {"disabled_indicators": "saturation"},
        {"cache_seconds": {"saturation": "soon"}},
        {"prometheus_stop_when": "sideways"},
        {"prometheus_url": "http://prometheus:9090"},  # without a query and an SLO
    ],
)
def test_a_threshold_of_the_wrong_kind_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        bbo.configure(dsn="postgresql://unit@127.0.0.1:1/x", health=overrides)


def test_the_thresholds_in_force_are_the_defaults_merged_with_configure() -> None:
    bbo.configure(dsn="postgresql://unit@127.0.0.1:1/x", health={"max_xmin_age_xids": 5})
    current = health.settings.current()
    assert current["max_xmin_age_xids"] == 5
    assert {k: v for k, v in current.items() if k != "max_xmin_age_xids"} == {
        k: v for k, v in health.DEFAULTS.items() if k != "max_xmin_age_xids"
    }


# -- hooks and holds -------------------------------------------------------------------------------
def test_the_default_middleware_is_a_fresh_health_middleware_each_time() -> None:
    first, second = bbo.default_middleware(), bbo.default_middleware()
    assert [type(m) for m in first] == [health.HealthMiddleware, PrometheusMetrics]
    assert all(isinstance(m, bbo.Middleware) for m in first)
    assert first[0] is not second[0]  # a list the caller may change, as dramatiq's


def test_a_hold_reason_names_the_indicator_and_fits_the_column() -> None:
    assert hold_reason(health.Result("wal_rate", Signal.STOP, "90 MB/s")) == "wal_rate: 90 MB/s"
    long = hold_reason(health.Result("x", Signal.STOP, "y" * 5000))
    assert len(long) == MAX_HOLD_REASON and long.startswith("x: yyy") and long.endswith("...")


def test_between_sub_batches_an_expired_answer_is_served_while_a_fresh_one_is_asked_for(
    released: threading.Event,
) -> None:
    slow = Fake("slow", cache_seconds=0.2)
    health.evaluate(operation(), indicators=[slow], stale=True)  # NORMAL, cached
    slow.answer = lambda: released.wait(30) and (Signal.STOP, "found late")

    def refresh_started() -> bool:
        health.evaluate(operation(), indicators=[slow], stale=True)
        return slow.calls == 2

    wait_until(refresh_started)  # the answer expired: a refresh runs (and hangs) behind
    started = time.monotonic()
    served = health.evaluate(operation(), indicators=[slow], stale=True)
    assert time.monotonic() - started < 0.1  # no wait on the refresh
    assert signals(served) == [("slow", Signal.NORMAL)]
    released.set()
    stop = wait_until(lambda: health.evaluate(operation(), indicators=[slow], stale=True).stop)
    assert stop.reason == "found late" and slow.calls == 2


def test_between_sub_batches_an_uncached_answer_is_the_previous_checks() -> None:
    flipping = Fake("flipping")

    def check() -> health.Evaluation:
        return health.evaluate(operation(), indicators=[flipping], stale=True)

    assert check().stop is None and flipping.calls == 1  # nothing to reuse: waited for
    flipping.answer = lambda: (Signal.STOP, "now")
    assert check().stop is None  # the previous check's answer; a fresh one is asked for
    wait_until(lambda: flipping.calls == 2 and not evaluator._flights)
    assert check().stop == health.Result("flipping", Signal.STOP, "now")


def test_before_a_job_an_expired_answer_is_waited_for() -> None:
    flipping = Fake("flipping", cache_seconds=0.05)
    health.evaluate(operation(), indicators=[flipping])
    flipping.answer = lambda: Signal.STOP
    wait_until(lambda: health.evaluate(operation(), indicators=[flipping]).stop, timeout=5)
    assert flipping.calls == 2  # the first evaluation after expiry already saw the stop

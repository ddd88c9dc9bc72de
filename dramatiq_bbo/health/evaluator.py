"""Asking the indicators about one operation: deadlines, caching, and the log of signals.

Each indicator that has no fresh cached answer runs on a worker thread of its own; its
``context.connection`` (opened on first use) is a pooled connection to the operation's
database whose ``statement_timeout`` is 80% of the indicator's timeout, so a slow query
answers "statement timeout" itself. The evaluator waits for each until its deadline. An
indicator that raises or misses its deadline answers ``UNKNOWN`` (logged) — the evaluation
never raises because of one.

Answers are cached per (database, table, indicator) for the indicator's ``cache_seconds``
(server-wide indicators, ``per_table = False``, share one answer across tables). Between
sub-batches (``stale=True``) an expired answer is still served — if no older than its cache
period again, one second at least, and while the fresh one is within its deadline — and the
fresh one is asked for in the background, for the next check. So checking before every
sub-batch costs no wait on a catalog query or a user callable, and a stop is seen within one
cache period plus one sub-batch (an uncached indicator's answer is the one asked for during
the previous sub-batch). Before a job, expired answers are waited for. A run still under way
is joined rather than started again, so a hung indicator never piles up threads: once past
its deadline it answers ``UNKNOWN`` at once until it returns.

Every fresh answer other than ``NORMAL`` is logged as ``HEALTH_SIGNAL`` with the
indicator, signal, reason and operation — except ``NOT_AVAILABLE``, which is logged once when
an indicator starts answering it (per database, table and indicator), not at every check: an
indicator that cannot measure (no replica, archiving off) says so once, not every second.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.pq import TransactionStatus

from ..db import REGISTRY
from ..logs import HEALTH_SIGNAL, event, logger, operation_fields
from ..state.records import OperationRecord
from . import indicators as registry
from . import settings as health_settings
from .base import Context, Indicator, Result, Signal
from .workers import WORKERS

CacheKey = tuple[str, str | None, str]


@dataclass(frozen=True)
class Evaluation:
    """Every indicator's answer for one operation, in the order they were configured."""

    results: tuple[Result, ...]

    @property
    def stop(self) -> Result | None:
        """The first ``STOP``, or None: only a stop halts work."""
        return next((r for r in self.results if r.signal is Signal.STOP), None)


class _Flight:
    """One run of one indicator, which any number of evaluations may wait for."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.done = threading.Event()
        self.result: Result | None = None
        self.timeout_logged = False


@dataclass(frozen=True)
class _Cached:
    result: Result
    #: reused as it is until then
    fresh_until: float
    #: until then, reused while a fresher answer is being asked for
    stale_until: float


#: an expired answer may be served (``stale=True``) for its cache period again, and at least
#: this many seconds — for an uncached indicator, the answer of the previous check
STALE = 1.0

_lock = threading.Lock()
_cache: dict[CacheKey, _Cached] = {}
_flights: dict[CacheKey, _Flight] = {}
#: each indicator's previous fresh signal: NOT_AVAILABLE is logged when it starts
_last_signal: dict[CacheKey, Signal] = {}


def clear_cache() -> None:
    """Forget every cached answer and every run under way (tests, or after changing a
    threshold at run time): later evaluations ask afresh."""
    with _lock:
        _cache.clear()
        _flights.clear()
        _last_signal.clear()


def evaluate(
    operation: OperationRecord,
    *,
    indicators: Sequence[Indicator | str] | None = None,
    settings: Mapping[str, Any] | None = None,
    stale: bool = False,
) -> Evaluation:
    """Ask the configured indicators (or ``indicators``: instances or names) about
    ``operation``, with the thresholds in force (or ``settings`` merged over them).
    ``stale=True`` accepts an expired answer while a fresh one is asked for in the
    background (between sub-batches); otherwise an expired answer is waited for."""
    merged = health_settings.current()
    if settings:
        merged = merged.replace(**settings)
    chosen = registry.configured(merged) if indicators is None else _resolve(indicators)
    database = operation.database_name
    dsn = REGISTRY.get(database).dsn
    waiting: list[tuple[int, Indicator, _Flight, float]] = []
    results: list[Result | None] = [None] * len(chosen)
    now = time.monotonic()
    for index, indicator in enumerate(chosen):
        key = _key(dsn, operation, indicator)
        timeout = _timeout(indicator, merged)
        with _lock:
            cached = _cache.get(key)
            if cached is not None and cached.fresh_until > now:
                results[index] = cached.result
                continue
            flight = _flights.get(key)
            if flight is None:
                flight = _flights[key] = _Flight(now + timeout)
                _start(key, flight, indicator, operation, merged, timeout)
            if stale and cached is not None and cached.stale_until > now and flight.deadline > now:
                results[index] = cached.result  # refreshed in the background meanwhile
                continue
        waiting.append((index, indicator, flight, timeout))
    for index, indicator, flight, timeout in waiting:
        flight.done.wait(max(0.0, flight.deadline - time.monotonic()))
        result = flight.result
        if result is None:
            result = _timed_out(indicator, flight, operation, timeout)
        results[index] = result
    return Evaluation(tuple(r for r in results if r is not None))


def _resolve(indicators: Sequence[Indicator | str]) -> list[Indicator]:
    by_name = {u.name: u for u in registry.registered()}
    chosen: list[Indicator] = []
    for item in indicators:
        if not isinstance(item, str):
            chosen.append(item)
            continue
        found = by_name.get(item) or (
            registry.builtin(item) if item in registry.BUILTIN_INDICATORS else None
        )
        if found is None:
            raise LookupError(f"no health indicator {item!r} is installed or registered")
        chosen.append(found)
    return chosen


def _key(dsn: str, operation: OperationRecord, indicator: Indicator) -> CacheKey:
    table = operation.table_display if getattr(indicator, "per_table", True) else None
    return (dsn, table, indicator.name)


def _timeout(indicator: Indicator, settings: Mapping[str, Any]) -> float:
    own = getattr(indicator, "timeout_seconds", None)
    return float(own if own is not None else settings["indicator_timeout_seconds"])


def _cache_seconds(indicator: Indicator, settings: Mapping[str, Any]) -> float:
    return float(settings["cache_seconds"].get(indicator.name, indicator.cache_seconds))


def _start(
    key: CacheKey,
    flight: _Flight,
    indicator: Indicator,
    operation: OperationRecord,
    settings: Mapping[str, Any],
    timeout: float,
) -> None:
    def run() -> None:
        result = _ask(indicator, operation, settings, timeout)
        flight.result = result
        cache_seconds = _cache_seconds(indicator, settings)
        with _lock:
            if _flights.get(key) is flight:  # else forgotten by clear_cache(): not cached
                del _flights[key]
                fresh_until = time.monotonic() + cache_seconds
                stale_until = fresh_until + max(cache_seconds, STALE)
                _cache[key] = _Cached(result, fresh_until, stale_until)
            previous = _last_signal.get(key)
            _last_signal[key] = result.signal
        if _worth_logging(result.signal, previous):
            log_signal(result, operation)
        flight.done.set()

    WORKERS.submit(run)


def _ask(
    indicator: Indicator, operation: OperationRecord, settings: Mapping[str, Any], timeout: float
) -> Result:
    """One indicator's answer; whatever goes wrong becomes UNKNOWN."""
    database = operation.database_name
    try:
        with contextlib.ExitStack() as stack:

            def connect() -> Any:
                conn = stack.enter_context(REGISTRY.connection(database))
                stack.callback(_reset, conn)
                # under the deadline, so that a slow query is reported as such
                conn.execute(
                    sql.SQL("SET statement_timeout = {}").format(
                        sql.Literal(f"{max(1, int(timeout * 800))}ms")
                    )
                )
                return conn

            result = indicator.check(Context(operation, None, database, settings, connect=connect))
    except Exception as exc:
        logger.warning("health indicator %s raised", indicator.name, exc_info=True)
        return Result(indicator.name, Signal.UNKNOWN, f"raised {type(exc).__name__}: {exc}")
    if not isinstance(result, Result):
        return Result(indicator.name, Signal.UNKNOWN, f"returned {result!r:.200}, not a Result")
    if result.indicator != indicator.name:
        result = Result(indicator.name, result.signal, result.reason)
    return result


def _reset(conn: Any) -> None:
    """Leave the pooled connection as it was lent (or close it so the pool drops it)."""
    try:
        if conn.info.transaction_status != TransactionStatus.IDLE:  # left a transaction open
            conn.rollback()
        conn.execute("RESET statement_timeout")
    except Exception:
        conn.close()


def _timed_out(
    indicator: Indicator, flight: _Flight, operation: OperationRecord, timeout: float
) -> Result:
    result = Result(
        indicator.name, Signal.UNKNOWN, f"no answer within {timeout:g}s (indicator timeout)"
    )
    with _lock:
        first = not flight.timeout_logged
        flight.timeout_logged = True
    if first:
        log_signal(result, operation)
    return result


def _worth_logging(signal: Signal, previous: Signal | None) -> bool:
    """Any answer but NORMAL; NOT_AVAILABLE only when it changed (a steady state, not news)."""
    if signal is Signal.NOT_AVAILABLE:
        return previous is not Signal.NOT_AVAILABLE
    return signal is not Signal.NORMAL


def log_signal(result: Result, operation: OperationRecord) -> None:
    """The HEALTH_SIGNAL event for one answer other than normal."""
    event(
        HEALTH_SIGNAL,
        level=logging.INFO if result.signal is Signal.NOT_AVAILABLE else logging.WARNING,
        indicator=result.indicator,
        signal=result.signal.value,
        reason=result.reason,
        **operation_fields(operation),
    )

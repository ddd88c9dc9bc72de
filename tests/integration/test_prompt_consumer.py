"""A worker set up by ``bbo.setup(broker)`` refills a freed prefetch slot at once, burst after
burst (dramatiq_bbo.pipeline.broker.PromptConsumer).

dramatiq-pg's own consumer, after a first burst, waits 0.5–1 s each time its prefetch is full
(a backoff whose miss counter is never reset), and a whole ``worker_timeout`` for messages whose
NOTIFY its connection check had already buffered: 20 messages of 10 ms on 2 threads take about
4 s a few seconds after a first burst, against about 0.15 s with the prompt consumer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import psycopg
import pytest
from dramatiq_pg import PostgresBroker
from dramatiq_pg.broker import PostgresConsumer
from psycopg import sql

import dramatiq_bbo as bbo
from dramatiq_bbo.db import REGISTRY
from dramatiq_bbo.pipeline import runner
from dramatiq_bbo.pipeline.broker import PromptConsumer, default_middleware, refill_promptly
from tests.helpers import wait_until
from tests.integration.enqueue_support import define_operation

__all__ = ["define_operation"]  # the fixture, re-exported for pytest

QUEUE = "prompt_consumer_test"
THREADS = 2  # dramatiq's default prefetch: 2 × threads = 4
BURST = 20
JOB_MS = 10
#: a later burst's deadline: about 0.15 s prompt, about 4 s (≥ 1 s with one of the two
#: waits left) with dramatiq-pg's consumer
LATER_BURST_SECONDS = 0.9
#: 24 small operations' deadline: about 2–3 s prompt, 20–27 s with dramatiq-pg's consumer
SMALL_OPERATIONS_SECONDS = 8.0


@pytest.fixture
def broker(configured: str) -> Iterator[PostgresBroker]:
    broker = PostgresBroker(url=configured, results=False, middleware=default_middleware())
    yield broker
    broker.close()


def test_a_later_burst_runs_back_to_back_on_a_worker_set_up_by_bbo(
    broker: PostgresBroker,
) -> None:
    bbo.setup(broker)
    done: set[str] = set()
    lock = threading.Lock()

    @dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0)
    def work(key: str) -> None:
        time.sleep(JOB_MS / 1000)
        with lock:
            done.add(key)

    def burst(tag: str) -> float:
        keys = [f"{tag}{i}" for i in range(BURST)]
        sent = time.monotonic()
        for key in keys:
            work.send(key)
        wait_until(lambda: done.issuperset(keys), timeout=15, interval=0.005)
        return time.monotonic() - sent

    worker = dramatiq.Worker(broker, queues={QUEUE}, worker_threads=THREADS)
    worker.start()
    try:
        assert worker.queue_prefetch == 2 * THREADS
        burst("first")  # fills the prefetch again and again
        time.sleep(0.5)  # the consumer goes back to waiting for a NOTIFY
        elapsed = burst("later")
        consumers = [thread.consumer for thread in worker.consumers.values()]
    finally:
        worker.stop()
        runner.shutting_down.clear()  # set by the worker's stop (WorkerShutdown)
    assert elapsed < LATER_BURST_SECONDS, f"{BURST} × {JOB_MS} ms took {elapsed:.2f} s"
    assert consumers and all(isinstance(c, PromptConsumer) for c in consumers)
    assert all(c.misses == 0 for c in consumers)  # dramatiq-pg's backoff never ran


def test_setup_wraps_consume_once_and_leaves_an_applications_own_consumer(
    broker: PostgresBroker, configured: str
) -> None:
    refill_promptly(broker)
    wrapped = broker.consume
    bbo.setup(broker)
    assert broker.consume is wrapped  # idempotent: setup again does not wrap twice
    consumer = broker.consume("q", prefetch=3, timeout=250)
    assert type(consumer) is PromptConsumer
    assert (consumer.prefetch, consumer.timeout, consumer.pool) == (3, 0.25, broker.pool)

    class OwnConsumer(PostgresConsumer):  # type: ignore[misc]
        pass

    class AppBroker(PostgresBroker):  # type: ignore[misc]
        def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Any:
            return OwnConsumer(
                pool=self.pool, queue_name=queue_name, prefetch=prefetch, timeout=timeout
            )

    app = AppBroker(url=configured, results=False)
    try:
        refill_promptly(app)
        assert type(app.consume("q")) is OwnConsumer
    finally:
        app.close()


def test_many_small_operations_finish_without_consumer_waits(
    broker: PostgresBroker,
    configured: str,
    conn: psycopg.Connection[Any],
    define_operation: Callable[..., type[bbo.BaseOperation]],
) -> None:
    """24 operations of 4 one-sub-batch jobs on one worker × 4 threads: about 2 s with the
    prompt consumer, 20–27 s with dramatiq-pg's (its prefetch of 8 is full all along)."""
    count = 24
    for i in range(count):
        table = sql.Identifier(f"t{i}")
        conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, done boolean)").format(table))
        insert = "INSERT INTO {} SELECT g, g % 2 = 0 FROM generate_series(1, 400) AS g"
        conn.execute(sql.SQL(insert).format(table))

    def perform(self: Any) -> None:
        for sub_batch in self.each_sub_batch():
            sub_batch.where(self.table.done == True).delete()  # noqa: E712

    purge = define_operation(perform=perform, pause_ms=0)
    bbo.configure(dsn=configured, max_running_jobs=100)
    bbo.setup(broker)
    worker = dramatiq.Worker(broker, queues={REGISTRY.settings.queue_name}, worker_threads=4)
    worker.start()
    try:
        started = time.monotonic()
        for i in range(count):
            bbo.enqueue(
                purge, f"t{i}", "id", batch_size=100, min_batch_size=100, max_batch_size=100,
                sub_batch_size=100, interval_seconds=0,
            )  # fmt: skip
        wait_until(lambda: finished(conn) == count, timeout=60)
        elapsed = time.monotonic() - started
    finally:
        worker.stop()
        runner.shutting_down.clear()
    jobs = conn.execute("SELECT count(*) FROM bbo.jobs").fetchone()
    assert jobs == (4 * count,)
    assert elapsed < SMALL_OPERATIONS_SECONDS, f"{count} operations took {elapsed:.1f} s"


def finished(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM bbo.operations WHERE status = 'finished'").fetchone()
    return int(row[0]) if row else 0

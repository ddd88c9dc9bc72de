"""The pipeline's state in this process: its broker, queue, outbox databases and middleware.

``bbo.setup(broker, ...)`` builds one :class:`Runtime` and installs it; every stage reads the
one in force through :func:`current`, and ``bbo.reset()`` drops it. Without ``setup`` the
process runs with the empty runtime: no broker (stages write no message, enqueue wakes
nothing) and no middleware — which is how ``run_to_completion``, tests and tools drive
operations in-process. A runtime is frozen: changing the pipeline means installing another
one (:func:`installed` does it for a block and puts the previous one back).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ..jobs.outcomes import JobOutcome, worker_event
from ..logs import logger
from ..middleware import Middleware
from ..state.records import JobRecord, OperationRecord, OperationStatus
from .outbox import send_in_transaction


@dataclass(frozen=True)
class Messenger:
    """Sends stage messages: through the outbox, in the caller's transaction, when the
    operation's database holds the broker's queue, else through the broker."""

    broker: Any = None
    queue_name: str = "background_operations"
    #: registry names of the databases that hold the broker's ``dramatiq.queue`` table
    outbox_databases: frozenset[str] = field(default_factory=lambda: frozenset({"main"}))

    @property
    def ready(self) -> bool:
        return self.broker is not None

    def send(
        self,
        conn: psycopg.Connection[Any],
        database: str,
        actor: str,
        *args: Any,
        delay_ms: int | None = None,
    ) -> str:
        """Send ``actor(*args)``: in ``conn``'s transaction when ``database`` holds the queue,
        else through the broker right away (the scheduler covers a crash in between)."""
        if not self.ready:
            return ""
        if database in self.outbox_databases:
            return send_in_transaction(
                conn, actor, self.queue_name, args=args, delay_ms=delay_ms or None
            )
        actor_obj = self.broker.get_actor(actor)
        message = actor_obj.send_with_options(args=args, delay=delay_ms or None)
        return str(message.message_id)


@dataclass(frozen=True)
class Runtime:
    """What ``setup()`` configured in this process; calls the middleware's hooks."""

    messenger: Messenger = field(default_factory=Messenger)
    middleware: tuple[Middleware, ...] = ()

    # -- gates: the first answer wins, exceptions propagate ---------------------------------------
    def before_job(self, conn: psycopg.Connection[Any], operation: OperationRecord) -> bool | str:
        """The first middleware's objection to starting a job (a reason, or True), else False."""
        for middleware in self.middleware:
            answer = middleware.before_job(conn, operation)
            if answer:
                return answer
        return False

    def between_sub_batches(self, operation: OperationRecord, job: JobRecord) -> str | None:
        for middleware in self.middleware:
            reason = middleware.between_sub_batches(operation, job)
            if reason:
                return str(reason)
        return None

    # -- notifications: every middleware is told, a failure is logged ----------------------------
    def after_enqueue(self, operation: OperationRecord) -> None:
        for middleware in self.middleware:
            with _logged(middleware, "after_enqueue"):
                middleware.after_enqueue(operation)

    def after_job(self, operation: OperationRecord, outcome: JobOutcome) -> None:
        for middleware in self.middleware:
            with _logged(middleware, "after_job"):
                middleware.after_job(operation, outcome)

    def after_hold(self, operation: OperationRecord, *, reason: str, indicator: str | None) -> None:
        for middleware in self.middleware:
            with _logged(middleware, "after_hold"):
                middleware.after_hold(operation, reason=reason, indicator=indicator)

    def after_transition(
        self, operation: OperationRecord, previous: OperationStatus, new: OperationStatus
    ) -> None:
        for middleware in self.middleware:
            with _logged(middleware, "after_transition"):
                middleware.after_transition(operation, previous, new)


@contextlib.contextmanager
def _logged(middleware: Middleware, hook: str) -> Iterator[None]:
    try:
        yield
    except Exception:  # what the hook reports on already committed
        logger.exception("%s.%s failed", type(middleware).__name__, hook)


_EMPTY = Runtime()
_current = _EMPTY
_lock = threading.Lock()


def current() -> Runtime:
    """The runtime in force in this process (the empty one before ``setup``)."""
    return _current


def install(runtime: Runtime) -> Runtime:
    """Put ``runtime`` in force (``setup`` does); returns the one it replaces."""
    global _current
    with _lock:
        previous, _current = _current, runtime
    return previous


def clear() -> None:
    """Back to the empty runtime: no broker, no middleware (``bbo.reset()`` does)."""
    install(_EMPTY)


@contextlib.contextmanager
def installed(runtime: Runtime) -> Iterator[Runtime]:
    """``runtime`` in force for the block, then the previous one again (tests and tools that
    drive the stages in-process)."""
    previous = install(runtime)
    try:
        yield runtime
    finally:
        install(previous)


def transitioned(operation: OperationRecord, previous: OperationStatus) -> None:
    """An operation's committed status change: logged, then told to the middleware."""
    worker_event(operation, previous)
    current().after_transition(operation, previous, operation.status)


def messenger() -> Messenger:
    """The messenger of the runtime in force (``setup(broker, ...)`` configures it)."""
    return current().messenger

"""Setup mistakes that would otherwise be silent: a broker the pipeline cannot use, a
middleware list with something else in it, and operations enqueued in a process where the
pipeline was never set up.

All are cheap and import nothing heavy: ``enqueue`` calls :func:`warn_without_pipeline` on
every new operation, which only reads the runtime in force (:mod:`dramatiq_bbo.pipeline.runtime`).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import InvalidMiddleware, UnsupportedBroker
from ..logs import PIPELINE_NOT_SET_UP, event
from ..middleware import Middleware
from ..migrations import ensure_schema, schema_errors
from ..state.records import OperationRecord
from .runtime import current

_warned = threading.Event()


def check_broker(broker: Any) -> None:
    """Refuse a broker that is not dramatiq-pg's ``PostgresBroker`` (or a subclass of it):
    the pipeline writes its messages straight into dramatiq-pg's ``dramatiq.queue`` table, in
    the transaction of the state change, so another broker would never deliver them."""
    from dramatiq_pg import PostgresBroker

    if isinstance(broker, PostgresBroker):
        return
    kind = type(broker)
    raise UnsupportedBroker(
        f"setup() needs dramatiq-pg's PostgresBroker, got {kind.__module__}.{kind.__qualname__}: "
        "the pipeline's messages are rows of dramatiq-pg's dramatiq.queue table, which no other "
        "broker reads. Build the broker with `dramatiq_pg.PostgresBroker(url=<your DSN>)` "
        "(tests too: a StubBroker would never see the messages) and pass that to setup()"
    )


def schema_checked(fn: Callable[..., Any], *, every_database: bool = False) -> Callable[..., Any]:
    """An actor function that first checks the schema of its database (its first argument;
    every configured one for the periodic tick) once per process, so an unmigrated database
    fails each message with "run dramatiq-bbo migrate" instead of a raw UndefinedTable."""

    @functools.wraps(fn)
    def actor(*args: Any, **kwargs: Any) -> Any:
        if every_database:
            names = REGISTRY.names()
        else:
            names = [str(args[0] if args else kwargs.get("database", DEFAULT_DATABASE))]
        for name in names:
            ensure_schema(name)
        with schema_errors(names[0] if len(names) == 1 else DEFAULT_DATABASE):
            return fn(*args, **kwargs)

    return actor


def check_middleware(middleware: tuple[Any, ...]) -> None:
    """Refuse anything but :class:`~dramatiq_bbo.Middleware` instances, naming it."""
    for item in middleware:
        if isinstance(item, Middleware):
            continue
        if isinstance(item, type) and issubclass(item, Middleware):
            hint = f"pass an instance, {item.__name__}(), not the class"
        else:
            hint = (
                "subclass dramatiq_bbo.Middleware (dramatiq's own broker middleware goes to "
                "the broker, not to bbo.setup)"
            )
        raise InvalidMiddleware(f"setup(middleware=[...]) got {item!r}: {hint}")


def warn_without_pipeline(operation: OperationRecord) -> None:
    """Warn once per process when ``operation`` was enqueued in a process where
    ``setup(broker)`` was not called: nothing here wakes it, so it waits for a worker's
    scheduler tick (up to a minute), and never runs if no worker process is set up either."""
    if _warned.is_set():
        return
    if current().messenger.ready:
        return
    _warned.set()
    event(
        PIPELINE_NOT_SET_UP,
        level=logging.WARNING,
        operation_id=str(operation.id),
        job_class_name=operation.job_class_name,
        database_name=operation.database_name,
        hint=(
            "no pipeline actor is declared in this process (bbo.setup(broker) was not called): "
            "the operation is not started now; it waits until a worker's scheduler tick picks "
            "it up (up to a minute), and never runs if no worker calls setup either. Call "
            "bbo.setup(broker) with your dramatiq-pg PostgresBroker after bbo.configure() in "
            "every process that enqueues, or run it yourself with bbo.run_to_completion(id)"
        ),
    )


def forget_warning() -> None:
    """Warn again at the next enqueue without a pipeline (tests)."""
    _warned.clear()

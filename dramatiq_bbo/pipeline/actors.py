"""``setup(broker)``: register the pipeline's actors on the application's dramatiq-pg broker.

Actors cannot be declared at import time because the broker belongs to the application and
exists only once it has built it; ``setup`` declares them on that broker, on their own queue.
Call it in every process that enqueues or works (web and workers alike) after ``configure``.

Messages carry ids only (database name, operation id, job id, lease token); all state is in
the tables. dramatiq's own retries are off for these actors: the state machine (attempts,
leases, the scheduler's recovery) owns retrying, and a dramatiq retry would run a stage twice.

Connection budget: each worker thread that runs a job holds one connection of the peewee
database for its sub-batches and briefly one pooled bookkeeping connection; dramatiq-pg's
broker pool (``maxconn``, default 16 per process) must cover the consumer and listener
connections plus one per worker thread that acks. Size ``max_connections`` for
``processes × (threads × 2 + broker maxconn)``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from periodiq import PeriodiqMiddleware

from ..db import REGISTRY
from ..health.middleware import HealthMiddleware
from ..metrics import PrometheusMetrics
from ..middleware import Middleware as BBOMiddleware
from ..reconnect import retrying
from ..tracking.purge import declare_purge as declare_tracking_purge
from . import messages, orchestrator, runner, runtime, scheduler, shutdown
from .broker import refill_promptly
from .cron import cron_spec
from .schedules import declare_cron_operations
from .setup_checks import check_broker, check_middleware, schema_checked
from .watchdog import WATCHDOG

logger = logging.getLogger("dramatiq_bbo")

#: a runner's dramatiq time limit (ms): jobs bound themselves by their own time budget
RUNNER_TIME_LIMIT_MS = 24 * 3600 * 1000


class WorkerShutdown(Middleware):
    """A worker's life cycle as the pipeline needs it (see :mod:`.shutdown`, :mod:`.watchdog`).

    At boot, the watchdog starts: a scheduler pass every ``scheduler_pass_seconds`` in this
    process, so a dead worker's job is taken over soon after its lease expires. At shutdown,
    running jobs stop at their next checkpoint and give their job back (an interruption, not
    a failed attempt), this process stops consuming at once, and the operations' next
    messages — and those it had taken — are handed to live workers once it stopped."""

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        runner.shutting_down.clear()
        WATCHDOG.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        WATCHDOG.stop()
        shutdown.begin(worker)

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # Every worker thread has stopped: a process that keeps running jobs (the demo,
        # run_to_completion after an in-process worker) must not inherit the stop request.
        shutdown.finish(broker)


def default_middleware() -> list[BBOMiddleware]:
    """Fresh instances of the middleware ``setup`` installs when given none: the health
    throttling (:class:`~dramatiq_bbo.health.HealthMiddleware`) and the operations' metrics
    on dramatiq's Prometheus exposition (:class:`~dramatiq_bbo.metrics.PrometheusMetrics`).
    Extend it with ``setup(broker, middleware=[*bbo.default_middleware(), Mine()])``."""
    return [HealthMiddleware(), PrometheusMetrics()]


def setup(
    broker: dramatiq.Broker,
    *,
    queue_name: str | None = None,
    cron: str = "* * * * *",
    outbox_databases: set[str] | None = None,
    middleware: Sequence[BBOMiddleware] | None = None,
) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Declare the scheduler, orchestrator and runner actors on ``broker``.

    - ``queue_name``: the dramatiq queue (default: the ``queue_name`` setting).
    - ``cron``: when periodiq fires the scheduler tick (default every minute).
    - ``outbox_databases``: registry names whose Postgres database holds the broker's
      ``dramatiq.queue`` (default ``{"main"}``): messages of operations there are written
      in the same transaction as the state change.
    - ``middleware``: :class:`dramatiq_bbo.Middleware` instances, called in this order
      (default: :func:`default_middleware`; a list replaces the defaults, ``[]`` runs none).

    Called again, it installs a new runtime; declared actors stay. The broker then builds
    :class:`~.broker.PromptConsumer` consumers (dramatiq-pg's wait up to 1 s to refill a slot).
    A broker that is not dramatiq-pg's ``PostgresBroker`` is refused
    (:class:`~dramatiq_bbo.errors.UnsupportedBroker`): the messages are rows of its queue table.
    """
    check_broker(broker)
    refill_promptly(broker)
    installed = tuple(default_middleware() if middleware is None else middleware)
    check_middleware(installed)
    queue = queue_name or REGISTRY.settings.queue_name
    if not any(isinstance(m, PeriodiqMiddleware) for m in broker.middleware):
        broker.add_middleware(PeriodiqMiddleware())
    if not any(isinstance(m, WorkerShutdown) for m in broker.middleware):
        broker.add_middleware(WorkerShutdown())
    outbox = frozenset(outbox_databases or {"main"})
    messenger = runtime.Messenger(broker=broker, queue_name=queue, outbox_databases=outbox)
    runtime.install(runtime.Runtime(messenger=messenger, middleware=installed))

    def declare(fn: Any, name: str, **options: Any) -> dramatiq.Actor[Any, Any]:
        if name in broker.actors:  # setup() called again: keep one declaration
            return broker.get_actor(name)  # type: ignore[no-any-return]
        options["max_retries"] = 0
        # An application may build its broker without dramatiq's Retries or TimeLimit
        # middleware; dramatiq then refuses their options. Without Retries nothing is
        # retried anyway, and without TimeLimit nothing is time-limited.
        for option in ("max_retries", "time_limit"):
            if option not in broker.actor_options:
                options.pop(option, None)
        return dramatiq.actor(fn, broker=broker, actor_name=name, queue_name=queue, **options)

    actors = {
        messages.TICK: declare(
            schema_checked(_tick_all, every_database=True), messages.TICK, periodic=cron_spec(cron)
        ),
        messages.SCHEDULER: declare(schema_checked(_scheduler), messages.SCHEDULER),
        messages.ORCHESTRATOR: declare(schema_checked(_orchestrator), messages.ORCHESTRATOR),
        messages.RUNNER: declare(
            schema_checked(_runner), messages.RUNNER, time_limit=RUNNER_TIME_LIMIT_MS
        ),
    }
    actors.update(declare_cron_operations(broker, queue), **declare_tracking_purge(declare))
    return actors


def _tick_all() -> None:
    """periodiq's every-minute tick: one scheduler pass per configured database."""
    for name in REGISTRY.names():
        try:
            report = retrying(
                f"scheduler tick on {name}",
                functools.partial(scheduler.tick, name),
                settings=REGISTRY.settings,
            )
            logger.debug("scheduler tick on %s: %s", name, report)
        except Exception:
            logger.exception("scheduler tick on database %s failed", name)


def _scheduler(database: str) -> None:
    retrying(
        f"scheduler tick on {database}",
        lambda: scheduler.tick(database),
        settings=REGISTRY.settings,
    )


def _orchestrator(
    database: str, operation_id: str, token: str | None = None, wake: bool = False
) -> None:
    args = (database, operation_id, token) + ((True,) if wake else ())
    if shutdown.refuse(messages.ORCHESTRATOR, args):
        return
    try:
        # Idempotent under its lease token: a try whose COMMIT was lost and then ran again
        # finds the operation leased by the message it wrote, and stops.
        retrying(
            f"orchestrating operation {operation_id}",
            lambda: orchestrator.orchestrate(database, operation_id, token, wake),
            settings=REGISTRY.settings,
        )
    except Exception:
        # Give the stage lease back so the scheduler re-drives the operation at its next
        # tick instead of after the whole lease.
        orchestrator.release_after_failure(database, operation_id, token)
        raise


def _runner(
    database: str, operation_id: str, job_id: str, token: str | None = None, gate: bool = False
) -> None:
    args = (database, operation_id, job_id, token) + ((True,) if gate else ())
    if shutdown.refuse(messages.RUNNER, args):
        return
    runner.run(database, operation_id, job_id, token, gate)

"""The application the pipeline acceptance tests run under real ``dramatiq`` worker processes:

    BBO_APP_DSN=... python -m dramatiq tests.acceptance.pipeline_app -Q background_operations

It does what an application does in every process that works: ``configure``, build its
dramatiq-pg broker, ``set_broker``, ``setup(broker, middleware=[...])``; and it imports the
operation classes (:mod:`tests.acceptance.pipeline_operations`) so a worker can resolve them
by name.

Environment:

- ``BBO_APP_DSN`` (required): the test's database; it holds the bbo tables and the broker's
  ``dramatiq.queue`` (so hand-offs go through the transactional outbox).
- ``BBO_APP_CELL_B_DSN``: when set, a second database, configured as ``cell_b`` (the broker's
  queue stays in the first: ``cell_b``'s hand-offs go through the broker after commit).
- ``BBO_APP_LEASE_SECONDS``, ``BBO_APP_MAX_RUNNING_JOBS``, ``BBO_APP_MIN_JOB_BUDGET_SECONDS``,
  ``BBO_APP_SCHEDULER_PASS_SECONDS``, ``BBO_APP_SUB_BATCH_IDLE_TIMEOUT_SECONDS``,
  ``BBO_APP_MAX_INTERRUPTIONS``: setting overrides, when set.
- ``BBO_APP_RECORD_HOOKS``: when set, the default middleware plus
  :class:`~tests.acceptance.hook_recorder.HookRecorder`, which records each hook call.
- ``BBO_APP_PROMETHEUS``: when set, the broker has dramatiq's ``Prometheus`` middleware too
  (the test gives its exposition a port and directory of its own: ``dramatiq_prom_*``).
- ``BBO_APP_STOP_INDICATOR``: when set, a health indicator of that name that always says
  stop, with :data:`~tests.acceptance.pipeline_operations.STOP_REASON`.

The ``dramatiq`` CLI imports this module in each worker process after the fork (never in the
parent), so nothing here is inherited across a fork: the bbo pools (per pid anyway) and the
broker's psycopg2 pool are created in the process that uses them.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq_pg import PostgresBroker

import dramatiq_bbo as bbo
from dramatiq_bbo import health
from dramatiq_bbo.pipeline.broker import default_middleware
from tests.acceptance import pipeline_operations  # noqa: F401  (registers the operation classes)
from tests.acceptance.hook_recorder import HookRecorder
from tests.acceptance.pipeline_operations import STOP_REASON

DSN = os.environ["BBO_APP_DSN"]

_SETTINGS_FROM_ENV = {
    "BBO_APP_LEASE_SECONDS": ("lease_seconds", float),
    "BBO_APP_MAX_RUNNING_JOBS": ("max_running_jobs", int),
    "BBO_APP_MIN_JOB_BUDGET_SECONDS": ("min_job_budget_seconds", float),
    "BBO_APP_SCHEDULER_PASS_SECONDS": ("scheduler_pass_seconds", float),
    "BBO_APP_SUB_BATCH_IDLE_TIMEOUT_SECONDS": ("sub_batch_idle_timeout_seconds", float),
    "BBO_APP_MAX_INTERRUPTIONS": ("max_interruptions", int),
}


def settings_from_env() -> dict[str, object]:
    overrides: dict[str, object] = {}
    for variable, (name, kind) in _SETTINGS_FROM_ENV.items():
        value = os.environ.get(variable)
        if value:
            overrides[name] = kind(value)
    return overrides


CELL_B_DSN = os.environ.get("BBO_APP_CELL_B_DSN")
bbo.configure(
    dsn=DSN, databases={"cell_b": CELL_B_DSN} if CELL_B_DSN else None, **settings_from_env()
)

if os.environ.get("BBO_APP_STOP_INDICATOR"):
    health.register(
        lambda context: (health.Signal.STOP, STOP_REASON),
        name=os.environ["BBO_APP_STOP_INDICATOR"],
    )

# dramatiq's default middleware minus Prometheus: in a ``dramatiq`` worker process Prometheus
# forks an HTTP exposition server bound to port 9191 and writes its multiprocess files under
# /tmp/dramatiq-prometheus. Two test runs at once (both servers, or another engineer's) would
# race for that port and share those files, so the broker is built with the rest of the
# defaults, explicitly — unless a test asks for it (and gives it a port and files of its own).
broker = PostgresBroker(
    url=DSN,
    results=False,
    middleware=default_middleware(prometheus=bool(os.environ.get("BBO_APP_PROMETHEUS"))),
)
dramatiq.set_broker(broker)
middleware = bbo.default_middleware()
if os.environ.get("BBO_APP_RECORD_HOOKS"):
    middleware.append(HookRecorder())
actors = bbo.setup(broker, middleware=middleware)

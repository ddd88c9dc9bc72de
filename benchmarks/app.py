"""The application benchmark worker processes run::

    BBO_BENCH_DSN=... python -m dramatiq benchmarks.app --queues background_operations

Like any application: ``configure``, a dramatiq-pg broker on the same database (hand-offs go
through the transactional outbox), ``setup(broker)``, and the operation classes imported.
dramatiq's Prometheus middleware is left out: its exposition server would bind port 9191,
which a concurrent test run may hold.
"""

from __future__ import annotations

import os

import dramatiq

import dramatiq_bbo as bbo
from benchmarks import operations  # noqa: F401  (registers the operation classes)
from benchmarks.common import make_broker

DSN = os.environ["BBO_BENCH_DSN"]

# The benchmarks delete from freshly filled tables, which wakes autovacuum on them; the
# autovacuum indicator would then hold the operation (as it should in production) and the
# figure would measure the hold, not the pipeline. The other indicators stay on.
bbo.configure(dsn=DSN, health={"disabled_indicators": ["autovacuum"]})
broker = make_broker(DSN)
dramatiq.set_broker(broker)
actors = bbo.setup(broker)

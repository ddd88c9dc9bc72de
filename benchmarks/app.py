"""The application benchmark worker processes run::

    BBO_BENCH_DSN=... python -m dramatiq benchmarks.app --queues background_operations

Like any application: ``configure``, a dramatiq-pg broker on the same database (hand-offs go
through the transactional outbox), ``setup(broker)``, and the operation classes imported; plus
the ``bench_hop`` actor (:mod:`benchmarks.hop`). dramatiq's Prometheus middleware is left out:
its exposition server would bind port 9191, which a concurrent test run may hold.
"""

from __future__ import annotations

import os

import dramatiq

import dramatiq_bbo as bbo
from benchmarks import hop, operations  # noqa: F401  (registers the operation classes)
from benchmarks.common import DISABLED_INDICATORS, make_broker

DSN = os.environ["BBO_BENCH_DSN"]

# The benchmarks fill and empty tables at full speed: autovacuum wakes on them and the WAL
# rate soars, so those two indicators would hold the operation (as they should in production)
# and the figure would measure the hold, not the pipeline. The sections that do not measure
# health switch them off (the results table says so); the other indicators stay on.
disabled = os.environ.get("BBO_BENCH_DISABLED_INDICATORS", ",".join(DISABLED_INDICATORS))
bbo.configure(dsn=DSN, health={"disabled_indicators": [n for n in disabled.split(",") if n]})
broker = make_broker(DSN)
dramatiq.set_broker(broker)
actors = bbo.setup(broker)
bench_hop = hop.declare(broker, DSN)

"""The worker application of the fault tests, run by real ``dramatiq`` processes:

    BBO_APP_DSN=... python -m dramatiq tests.faults.fault_app -Q background_operations

Like :mod:`tests.acceptance.pipeline_app` (configure, a dramatiq-pg broker, ``setup``), with
two knobs a fault test needs:

- ``BBO_FAULT_SETTINGS``: a JSON object of setting overrides (any setting), so a test runs
  its workers with exactly the settings it configures in its own process;
- ``BBO_FAULT_OPERATIONS``: comma-separated modules holding operation classes to import
  (default: the acceptance classes); a worker that leaves one out cannot import its classes.
"""

from __future__ import annotations

import importlib
import json
import os

import dramatiq
from dramatiq_pg import PostgresBroker

import dramatiq_bbo as bbo
from dramatiq_bbo.pipeline.broker import default_middleware

DSN = os.environ["BBO_APP_DSN"]
OPERATIONS = os.environ.get("BBO_FAULT_OPERATIONS", "tests.acceptance.pipeline_operations")

bbo.configure(dsn=DSN, **json.loads(os.environ.get("BBO_FAULT_SETTINGS") or "{}"))
for module in filter(None, OPERATIONS.split(",")):
    importlib.import_module(module)

broker = PostgresBroker(url=DSN, results=False, middleware=default_middleware())
dramatiq.set_broker(broker)
actors = bbo.setup(broker)

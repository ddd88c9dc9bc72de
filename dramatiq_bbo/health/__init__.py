"""Database health: indicators that tell whether background work may go on right now.

``from dramatiq_bbo import health``. Each indicator answers a :class:`Signal` (``NORMAL``,
``STOP``, ``UNKNOWN``, ``NOT_AVAILABLE``) with a reason; only ``STOP`` halts work. They are
asked before each job and between sub-batches (:class:`HealthMiddleware`, which ``bbo.setup``
installs unless its ``middleware=`` list leaves it out); a stop holds the operation for
``health_hold_seconds`` (visible in ``bbo.get_operation`` as ``on_hold_until`` and
``hold_reason``) and it resumes by itself afterwards.

- Built-in indicators (one module each): ``long_transaction``, ``saturation``,
  ``autovacuum``, ``wal_archive``, ``wal_rate``, ``replication_lag``, and ``prometheus``
  (off unless ``prometheus_url`` is set). See :data:`BUILTIN_INDICATORS`.
- Thresholds: ``bbo.configure(health={...})``, names and defaults in
  :class:`HealthSettings` (:data:`DEFAULTS`).
- Application indicators: :func:`register` any ``fn(context) -> Signal | (Signal, reason)``.
"""

from __future__ import annotations

from .base import Context, Indicator, Result, Signal
from .evaluator import Evaluation, clear_cache, evaluate
from .hold import hold, release
from .indicators import BUILTIN_INDICATORS, configured, register, registered, unregister
from .middleware import HEALTH_STOP, HealthMiddleware
from .settings import DEFAULTS, HealthSettings

__all__ = [
    "BUILTIN_INDICATORS",
    "DEFAULTS",
    "HEALTH_STOP",
    "HealthSettings",
    "Context",
    "Evaluation",
    "HealthMiddleware",
    "Indicator",
    "Result",
    "Signal",
    "clear_cache",
    "configured",
    "evaluate",
    "hold",
    "register",
    "registered",
    "release",
    "unregister",
]

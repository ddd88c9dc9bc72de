"""The health thresholds: their names, their documented defaults, and the ones in force.

The thresholds are :class:`~dramatiq_bbo.health_thresholds.HealthSettings`, a typed and
frozen part of :class:`~dramatiq_bbo.settings.Settings` (``REGISTRY.settings.health``), set
with ``bbo.configure(health={...})``; this module names them for ``dramatiq_bbo.health``.
"""

from __future__ import annotations

from ..db import REGISTRY
from ..health_thresholds import DEFAULTS, HealthSettings, validate

__all__ = ["DEFAULTS", "HealthSettings", "current", "validate"]


def current() -> HealthSettings:
    """The thresholds in force: the defaults with ``configure(health={...})`` applied."""
    return REGISTRY.settings.health

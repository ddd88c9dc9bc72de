"""Operator-tunable settings with their documented defaults.

Every number an operator may want to change lives here, not as a constant in the code that
uses it. ``bbo.configure(**overrides)`` replaces fields by name; an unknown name is refused
with :class:`~dramatiq_bbo.errors.ConfigurationError` so a typo never silently falls back to
the default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError


@dataclass
class Settings:
    """Library-wide settings. Per-class attributes and per-enqueue arguments override the
    operation defaults (``batch_size`` ... ``interval_seconds``)."""

    # -- operation defaults --------------------------------------------------------------
    #: rows per job (one keyset batch)
    batch_size: int = 1_000
    #: rows per sub-batch (one short transaction with its checkpoint)
    sub_batch_size: int = 100
    #: sleep between two sub-batches, in milliseconds
    pause_ms: int = 100
    #: delay between two jobs of one operation, in seconds
    interval_seconds: float = 120.0
    #: bounds for the batch optimizer
    min_batch_size: int = 1_000
    max_batch_size: int = 2_000_000

    # -- guards on every sub-batch transaction ------------------------------------------------
    #: SET LOCAL statement_timeout for each sub-batch, in milliseconds
    statement_timeout_ms: int = 30_000
    #: SET LOCAL lock_timeout for each sub-batch, in milliseconds
    lock_timeout_ms: int = 5_000

    # -- enqueue limits -------------------------------------------------------------------
    #: largest accepted job_arguments, serialised, in bytes
    max_arguments_bytes: int = 64 * 1024

    # -- pipeline -----------------------------------------------------------------------------
    #: dramatiq queue the actors live on
    queue_name: str = "background_operations"
    #: jobs running at once per database
    max_running_jobs: int = 10
    #: attempts per job before it counts as failed for good
    max_attempts: int = 3
    #: a job's time budget as a fraction of the operation interval. Above the optimizer's
    #: target (0.95): the budget is a guard against a job gone slow, not the sizing target.
    job_budget_fraction: float = 1.5
    #: a job's time budget when the interval is 0 (seconds)
    min_job_budget_seconds: float = 30.0
    #: how long a health stop holds an operation, in seconds
    health_hold_seconds: float = 600.0
    #: lease on a running job / claimed operation before the scheduler may recover it
    lease_seconds: float = 300.0

    # -- connections ----------------------------------------------------------------------
    #: how long a connect or a pool checkout may take before ConnectionFailed (with the cause)
    connect_timeout_seconds: float = 5.0
    #: pooled connections per process and database, for our own bookkeeping statements
    pool_max_size: int = 8
    #: how long a step that lost its connection keeps retrying before it gives up (seconds)
    reconnect_seconds: float = 60.0
    #: first delay between two retries after a lost connection; it doubles each time...
    reconnect_backoff_seconds: float = 0.1
    #: ...up to this many seconds
    reconnect_backoff_max_seconds: float = 5.0

    # -- health thresholds (see dramatiq_bbo.health) ---------------------------------------------
    health: dict[str, Any] = field(default_factory=dict)

    def replace(self, **overrides: Any) -> Settings:
        """A copy with ``overrides`` applied; refuses unknown names and wrong kinds."""
        known = {f.name: f for f in dataclasses.fields(self)}
        for name, value in overrides.items():
            if name not in known:
                raise ConfigurationError(
                    f"unknown setting {name!r}; known settings: {', '.join(sorted(known))}"
                )
            default = getattr(self, name)
            if isinstance(default, bool) or not isinstance(default, int | float | str | dict):
                continue
            if isinstance(default, int | float) and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ConfigurationError(f"setting {name!r} must be a number, got {value!r}")
            if isinstance(default, str) and not isinstance(value, str):
                raise ConfigurationError(f"setting {name!r} must be a string, got {value!r}")
            if isinstance(default, dict) and not isinstance(value, dict):
                raise ConfigurationError(f"setting {name!r} must be a mapping, got {value!r}")
        if "health" in overrides:  # threshold names are checked too (dramatiq_bbo.health)
            from .health.settings import validate

            overrides = {**overrides, "health": validate(overrides["health"])}
        return dataclasses.replace(self, **overrides)

"""The health thresholds: their names, their documented defaults, and the ones in force.

Thresholds are settings, not constants: ``bbo.configure(health={"name": value, ...})``
overrides them by name. An unknown name or a value of the wrong kind is refused with
:class:`~dramatiq_bbo.errors.ConfigurationError` (listing the known names) when
``configure`` is called, so a typo never silently leaves the default in force.

How long a hold lasts is the library-wide ``health_hold_seconds`` setting (default 600 s),
not one of these: it is about the operation, not about an indicator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError

DEFAULTS: dict[str, Any] = {
    # -- evaluation -------------------------------------------------------------------------
    #: an indicator that has not answered after this many seconds is UNKNOWN (its query is
    #: also bounded by this statement_timeout); an indicator's own ``timeout_seconds`` wins
    "indicator_timeout_seconds": 2.0,
    #: per-indicator cache periods overriding the indicator's own ``cache_seconds``,
    #: e.g. ``{"long_transaction": 5}``; 0 asks every time
    "cache_seconds": {},
    #: indicators (built-in or registered) not to run, by name
    "disabled_indicators": [],
    # -- long_transaction: the oldest open transaction / xmin horizon of the database -------
    #: stop when a transaction (or snapshot, or prepared transaction) of the operation's
    #: database has been open longer than this
    "max_transaction_age_seconds": 600.0,
    #: stop when a backend, prepared transaction or replication slot holds the xmin horizon
    #: this many transaction ids back
    "max_xmin_age_xids": 10_000_000,
    # -- saturation: client backends ÷ max_connections ---------------------------------------
    #: stop above this ratio of the server's max_connections in use
    "max_connection_ratio": 0.9,
    # -- autovacuum: a worker on the operation's table (see health/autovacuum.py) ------------
    #: stop while any autovacuum worker processes the table (False: only anti-wraparound)
    "autovacuum_stop_on_any": True,
    # -- wal_archive: segments waiting for archival (see health/archive.py) ------------------
    #: stop above this many WAL segments not yet archived
    "max_archive_backlog_segments": 42,
    # -- wal_rate: WAL generated per second (see health/wal_rate.py) -------------------------
    #: stop above this rate of WAL generation, in bytes per second
    "max_wal_bytes_per_second": 64 * 1024 * 1024,
    #: a check sooner than this after the previous WAL sample repeats the previous answer
    "min_wal_rate_interval_seconds": 1.0,
    # -- replication_lag: standbys of the primary (see health/replication.py) ---------------
    #: stop when any standby's replay lag exceeds this many seconds
    "max_replication_lag_seconds": 60.0,
    #: stop when any standby has this many bytes of WAL not yet replayed
    "max_replication_lag_bytes": 1024 * 1024 * 1024,
    # -- prometheus: an SLI compared with its SLO (off unless prometheus_url is set) ---------
    #: base URL of the Prometheus server, e.g. "http://prometheus:9090"; None: indicator off
    "prometheus_url": None,
    #: the PromQL query giving the SLI (an instant vector or a scalar)
    "prometheus_query": None,
    #: the SLO the SLI is compared with
    "prometheus_slo": None,
    #: "above": stop when the SLI exceeds the SLO (latency, error rate);
    #: "below": stop when it falls under it (apdex, availability)
    "prometheus_stop_when": "above",
}

_CHOICES = {"prometheus_stop_when": ("above", "below")}
_OPTIONAL_TEXT = {"prometheus_url", "prometheus_query"}
_OPTIONAL_NUMBER = {"prometheus_slo"}


def validate(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` checked against the known names and kinds; returns a plain copy."""
    if not isinstance(overrides, Mapping):
        raise ConfigurationError(f"health= must be a mapping of threshold names, got {overrides!r}")
    for name, value in overrides.items():
        if name not in DEFAULTS:
            raise ConfigurationError(
                f"unknown health setting {name!r}; known health settings: "
                f"{', '.join(sorted(DEFAULTS))}"
            )
        _check_kind(name, value)
    merged = {**DEFAULTS, **overrides}
    if merged["prometheus_url"] and (
        not merged["prometheus_query"] or merged["prometheus_slo"] is None
    ):
        raise ConfigurationError(
            "health setting 'prometheus_url' needs 'prometheus_query' and 'prometheus_slo' "
            f"as well (got query={merged['prometheus_query']!r}, slo={merged['prometheus_slo']!r})"
        )
    return dict(overrides)


def _check_kind(name: str, value: Any) -> None:
    default = DEFAULTS[name]
    if name in _CHOICES:
        if value not in _CHOICES[name]:
            raise ConfigurationError(
                f"health setting {name!r} must be one of {', '.join(_CHOICES[name])}, got {value!r}"
            )
    elif name in _OPTIONAL_TEXT:
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"health setting {name!r} must be a string, got {value!r}")
    elif name in _OPTIONAL_NUMBER or (
        isinstance(default, int | float) and not isinstance(default, bool)
    ):
        if value is None and name in _OPTIONAL_NUMBER:
            return
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigurationError(
                f"health setting {name!r} must be a non-negative number, got {value!r}"
            )
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigurationError(
                f"health setting {name!r} must be True or False, got {value!r}"
            )
    elif isinstance(default, dict):
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in value.items()
        ):
            raise ConfigurationError(
                f"health setting {name!r} must map indicator names to seconds, got {value!r}"
            )
    elif isinstance(default, list):
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise ConfigurationError(
                f"health setting {name!r} must be a list of indicator names, got {value!r}"
            )


def current() -> dict[str, Any]:
    """The thresholds in force: the defaults merged with ``configure(health={...})``."""
    from ..db import REGISTRY

    return {**DEFAULTS, **REGISTRY.settings.health}

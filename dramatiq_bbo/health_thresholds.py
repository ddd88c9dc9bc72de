"""The health thresholds: a typed, frozen part of the library's settings.

They live beside :mod:`dramatiq_bbo.settings`, not inside ``dramatiq_bbo.health``, because
``Settings`` holds them and must be importable before any health indicator is.

Thresholds are settings, not constants: ``bbo.configure(health={"name": value, ...})``
overrides them by name (or ``configure(health=HealthSettings(...))`` sets them all). An
unknown name or a value of the wrong kind or out of its bounds is refused with
:class:`~dramatiq_bbo.errors.ConfigurationError` (listing the known names) when ``configure``
is called, so a typo never silently leaves the default in force.

A :class:`HealthSettings` also reads as a mapping (``settings["max_connection_ratio"]``),
which is how indicators read their thresholds: an indicator checked by hand may be given a
plain dict of the thresholds it needs.

How long a hold lasts is the library-wide ``health_hold_seconds`` setting (default 600 s),
not one of these: it is about the operation, not about an indicator.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError

_DAY_S = 86_400.0
_BIG = float(2**62)


def _threshold(default: Any, *, high: float | None = None, kind: str = "number") -> Any:
    """A threshold field: its default, and what it accepts (``kind``; numbers in
    ``0..high``, whole ones for a ``count``: xids, segments, bytes)."""
    return field(default=default, metadata={"kind": kind, "high": high})


@dataclass(frozen=True)
class HealthSettings(Mapping[str, Any]):
    """The health thresholds in force; ``bbo.configure(health={...})`` replaces them by name."""

    # -- evaluation -------------------------------------------------------------------------
    #: an indicator that has not answered after this many seconds is UNKNOWN (its query is
    #: also bounded by this statement_timeout); an indicator's own ``timeout_seconds`` wins
    indicator_timeout_seconds: float = _threshold(2.0, high=_DAY_S)
    #: per-indicator cache periods overriding the indicator's own ``cache_seconds``,
    #: e.g. ``{"long_transaction": 5}``; 0 asks every time
    cache_seconds: Mapping[str, float] = field(
        default_factory=lambda: types.MappingProxyType({}), metadata={"kind": "cache", "high": None}
    )
    #: indicators (built-in or registered) not to run, by name
    disabled_indicators: tuple[str, ...] = _threshold((), kind="names")
    # -- long_transaction: the oldest open transaction / xmin horizon of the database -------
    #: stop when a transaction (or snapshot, or prepared transaction) of the operation's
    #: database has been open longer than this
    max_transaction_age_seconds: float = _threshold(600.0, high=30 * _DAY_S)
    #: stop when a backend, prepared transaction or replication slot holds the xmin horizon
    #: this many transaction ids back
    max_xmin_age_xids: int = _threshold(10_000_000, high=2**32, kind="count")
    # -- saturation: client backends ÷ max_connections ---------------------------------------
    #: stop above this ratio of the server's max_connections in use (1: never before full)
    max_connection_ratio: float = _threshold(0.9, high=1.0)
    # -- autovacuum: a worker on the operation's table (dramatiq_bbo.health.autovacuum)
    #: stop while any autovacuum worker processes the table (False: only anti-wraparound)
    autovacuum_stop_on_any: bool = _threshold(True, kind="bool")
    # -- wal_archive: segments waiting for archival (dramatiq_bbo.health.archive)
    #: stop above this many WAL segments not yet archived
    max_archive_backlog_segments: int = _threshold(42, high=_BIG, kind="count")
    # -- wal_rate: WAL generated per second (dramatiq_bbo.health.wal_rate)
    #: stop above this rate of WAL generation, in bytes per second
    max_wal_bytes_per_second: int = _threshold(64 * 1024 * 1024, high=_BIG, kind="count")
    #: a check sooner than this after the previous WAL sample repeats the previous answer
    min_wal_rate_interval_seconds: float = _threshold(1.0, high=_DAY_S)
    # -- replication_lag: standbys of the primary (dramatiq_bbo.health.replication)
    #: stop when any standby's replay lag exceeds this many seconds
    max_replication_lag_seconds: float = _threshold(60.0, high=30 * _DAY_S)
    #: stop when any standby has this many bytes of WAL not yet replayed
    max_replication_lag_bytes: int = _threshold(1024 * 1024 * 1024, high=_BIG, kind="count")
    # -- prometheus: an SLI compared with its SLO (off unless prometheus_url is set) ---------
    #: base URL of the Prometheus server, e.g. "http://prometheus:9090"; None: indicator off
    prometheus_url: str | None = _threshold(None, kind="text")
    #: the PromQL query giving the SLI (an instant vector or a scalar)
    prometheus_query: str | None = _threshold(None, kind="text")
    #: the SLO the SLI is compared with
    prometheus_slo: float | None = _threshold(None, high=_BIG, kind="optional number")
    #: "above": stop when the SLI exceeds the SLO (latency, error rate);
    #: "below": stop when it falls under it (apdex, availability)
    prometheus_stop_when: str = _threshold("above", kind="choice")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _checked(f, getattr(self, f.name)))
        if self.prometheus_url and (not self.prometheus_query or self.prometheus_slo is None):
            raise ConfigurationError(
                "health setting 'prometheus_url' needs 'prometheus_query' and 'prometheus_slo' "
                f"as well (got query={self.prometheus_query!r}, slo={self.prometheus_slo!r})"
            )

    @classmethod
    def of(cls, value: HealthSettings | Mapping[str, Any]) -> HealthSettings:
        """``value`` itself, or the defaults with the mapping's thresholds (checked)."""
        if isinstance(value, HealthSettings):
            return value
        return cls().replace(**_known(value))

    def replace(self, **overrides: Any) -> HealthSettings:
        """A copy with ``overrides`` (known names, checked); this one is left unchanged."""
        return dataclasses.replace(self, **_known(overrides))

    # -- read as a mapping: indicators read ``settings[name]`` -----------------------------
    def __getitem__(self, name: str) -> Any:
        if name not in _NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(_NAMES)

    def __len__(self) -> int:
        return len(_NAMES)


_NAMES = tuple(f.name for f in dataclasses.fields(HealthSettings))
_CHOICES = ("above", "below")


def _known(overrides: Any) -> dict[str, Any]:
    if not isinstance(overrides, Mapping):
        raise ConfigurationError(f"health= must be a mapping of threshold names, got {overrides!r}")
    for name in overrides:
        if name not in _NAMES:
            raise ConfigurationError(
                f"unknown health setting {name!r}; known health settings: "
                f"{', '.join(sorted(_NAMES))}"
            )
    return dict(overrides)


def _checked(f: dataclasses.Field[Any], value: Any) -> Any:
    """``value`` for threshold ``f`` in its stored form, or ConfigurationError."""
    name, kind, high = f.name, f.metadata["kind"], f.metadata["high"]
    if kind == "choice":
        if value not in _CHOICES:
            raise ConfigurationError(
                f"health setting {name!r} must be one of {', '.join(_CHOICES)}, got {value!r}"
            )
    elif kind == "text":
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"health setting {name!r} must be a string, got {value!r}")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ConfigurationError(
                f"health setting {name!r} must be True or False, got {value!r}"
            )
    elif kind == "cache":
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and _number(v) and v >= 0 for k, v in value.items()
        ):
            raise ConfigurationError(
                f"health setting {name!r} must map indicator names to seconds, got {value!r}"
            )
        return types.MappingProxyType(dict(value))
    elif kind == "names":
        if isinstance(value, str | bytes) or not all(isinstance(v, str) for v in value):
            raise ConfigurationError(
                f"health setting {name!r} must be a list of indicator names, got {value!r}"
            )
        return tuple(value)
    elif kind == "count":
        if not _number(value) or not float(value).is_integer() or not 0 <= value <= high:
            raise ConfigurationError(
                f"health setting {name!r} must be a whole number, got {value!r}; "
                f"accepted: 0..{high:g}"
            )
        return int(value)
    elif not (value is None and kind == "optional number"):
        if not _number(value) or not 0 <= value <= high:
            raise ConfigurationError(
                f"health setting {name!r} must be a non-negative number, got {value!r}; "
                f"accepted: 0..{high:g}"
            )
    return value


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


#: the documented defaults, by name (a plain copy: changing it changes nothing)
DEFAULTS: dict[str, Any] = dict(HealthSettings())


def validate(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` checked against the known names, kinds and bounds; returns a plain copy."""
    HealthSettings.of(overrides)
    return dict(overrides)

"""The health thresholds are a typed, frozen part of Settings, set by name or whole."""

from __future__ import annotations

import dataclasses

import pytest

from dramatiq_bbo import health
from dramatiq_bbo.errors import ConfigurationError
from dramatiq_bbo.health.settings import DEFAULTS, HealthSettings, validate
from dramatiq_bbo.settings import Settings


def test_a_mapping_of_thresholds_becomes_health_settings_over_the_defaults() -> None:
    settings = Settings().replace(
        health={"max_connection_ratio": 0.5, "disabled_indicators": ["wal_rate"]}
    )
    assert isinstance(settings.health, HealthSettings)
    assert settings.health.max_connection_ratio == 0.5
    assert settings.health.disabled_indicators == ("wal_rate",)
    assert settings.health.max_transaction_age_seconds == DEFAULTS["max_transaction_age_seconds"]


def test_health_settings_given_whole_are_kept_as_they_are() -> None:
    thresholds = HealthSettings(max_replication_lag_seconds=30.0)
    assert Settings().replace(health=thresholds).health is thresholds


def test_health_settings_are_frozen_and_read_as_a_mapping_by_indicators() -> None:
    thresholds = HealthSettings(cache_seconds={"long_transaction": 5})
    with pytest.raises(dataclasses.FrozenInstanceError):
        thresholds.max_connection_ratio = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        thresholds.cache_seconds["saturation"] = 1  # type: ignore[index]
    assert thresholds["cache_seconds"]["long_transaction"] == 5
    assert thresholds.get("max_xmin_age_xids") == 10_000_000
    assert dict(thresholds) == {**DEFAULTS, "cache_seconds": {"long_transaction": 5}}
    assert [i.name for i in health.configured(thresholds)] == [
        i.name for i in health.configured(dict(thresholds))
    ]


def test_an_unknown_threshold_name_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="unknown health setting 'max_conection_ratio'"):
        Settings().replace(health={"max_conection_ratio": 0.5})
    with pytest.raises(ConfigurationError, match="max_connection_ratio"):
        validate({"max_conection_ratio": 0.5})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_connection_ratio", 1.5),
        ("max_connection_ratio", -0.1),
        ("indicator_timeout_seconds", float("inf")),
        ("max_xmin_age_xids", "many"),
        ("max_xmin_age_xids", 1.5),
        ("max_wal_bytes_per_second", 1024.25),
        ("autovacuum_stop_on_any", 1),
        ("disabled_indicators", "wal_rate"),
        ("cache_seconds", {"long_transaction": -1}),
        ("prometheus_stop_when", "sideways"),
    ],
)
def test_a_threshold_of_the_wrong_kind_or_out_of_bounds_is_refused_by_name(
    name: str, value: object
) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings().replace(health={name: value})
    with pytest.raises(ConfigurationError, match=name):
        HealthSettings(**{name: value})  # type: ignore[arg-type]


def test_a_whole_number_given_as_a_float_is_kept_as_an_int() -> None:
    assert HealthSettings(max_replication_lag_bytes=1e9).max_replication_lag_bytes == 10**9  # type: ignore[arg-type]
    assert isinstance(HealthSettings(max_xmin_age_xids=2e6).max_xmin_age_xids, int)  # type: ignore[arg-type]


def test_a_prometheus_url_without_its_query_and_slo_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="prometheus_query"):
        HealthSettings(prometheus_url="http://prometheus:9090")

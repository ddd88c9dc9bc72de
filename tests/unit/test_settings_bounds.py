"""Every setting's bounds live next to its default; the defaults respect them, and a value
out of bounds is refused by ``Settings.replace`` with the setting and the value named."""

from __future__ import annotations

import dataclasses
import math

import pytest

from dramatiq_bbo.errors import ConfigurationError, InvalidBatchSizes
from dramatiq_bbo.settings import Settings, bounds_of, check_value


def test_every_default_is_within_the_bounds_its_field_declares() -> None:
    settings = Settings()
    for field in dataclasses.fields(Settings):
        if bounds_of(field.name) is not None:
            assert check_value(field.name, getattr(settings, field.name)) == getattr(
                settings, field.name
            )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("lease_seconds", math.nan),
        ("lease_seconds", -10),
        ("max_attempts", 0),
        ("statement_timeout_ms", -1),
        ("max_running_jobs", -1),
        ("queue_name", ""),
    ],
)
def test_replace_refuses_a_value_out_of_bounds_naming_it(name: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=name) as caught:
        Settings().replace(**{name: value})
    assert repr(value) in str(caught.value)


def test_an_int_setting_takes_no_float_and_a_float_setting_takes_an_int() -> None:
    with pytest.raises(ConfigurationError):
        Settings().replace(batch_size=100.0)
    assert Settings().replace(lease_seconds=30).lease_seconds == 30.0


def test_enqueue_sizes_use_the_same_bounds_with_their_own_error_and_origin() -> None:
    with pytest.raises(InvalidBatchSizes, match=r"pause_ms .* \(Purge.pause_ms\)"):
        check_value("pause_ms", 3_600_001, origin="Purge.pause_ms", error=InvalidBatchSizes)

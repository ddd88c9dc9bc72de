"""Cron normalisation for periodiq: Sundays fire, schedules are exact, bad input is refused.

Every expectation is computed by brute force, minute by minute, over two weeks that start on
a Saturday, with plain Python predicates that know nothing of cron or periodiq. The
normalised spec is checked through periodiq's own machinery, the two calls its Scheduler
makes: ``validate(now)`` (send or not) and ``next_valid_date(now)`` (how long to sleep).
The raw specs are checked too, so these tests fail the day periodiq fixes its Sunday bug
and the rewrite can go.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import pendulum
import pytest
from periodiq import cron

from dramatiq_bbo.errors import InvalidCronExpression, ValidationError
from dramatiq_bbo.pipeline.cron import cron_spec, normalize_cron

START = pendulum.datetime(2024, 1, 6, tz="UTC")  # a Saturday
assert START.day_of_week == pendulum.SATURDAY
WINDOW = [START + datetime.timedelta(minutes=i) for i in range(14 * 24 * 60)]
SUNDAYS = {pendulum.datetime(2024, 1, 7, tz="UTC"), pendulum.datetime(2024, 1, 14, tz="UTC")}


def midnight_on(*weekdays: int) -> Callable[[datetime.datetime], bool]:
    """Midnight on the given Python weekdays (Monday=0 .. Sunday=6)."""
    return lambda d: d.hour == 0 and d.minute == 0 and d.weekday() in weekdays


MON, TUE, WED, SUN = 0, 1, 2, 6

CASES: dict[str, Callable[[datetime.datetime], bool]] = {
    "0 0 * * 0": midnight_on(SUN),
    "0 0 * * sun": midnight_on(SUN),
    "@weekly": midnight_on(SUN),
    "0 0 * * 0-2": midnight_on(SUN, MON, TUE),
    "0 0 * * 0,3": midnight_on(SUN, WED),
    "0 0 * * 7": midnight_on(SUN),
    "*/5 * * * *": lambda d: d.minute % 5 == 0,
    "@hourly": lambda d: d.minute == 0,
}
SUNDAY_AS_ZERO = ["0 0 * * 0", "0 0 * * sun", "@weekly", "0 0 * * 0-2", "0 0 * * 0,3"]


def expected_runs(expression: str) -> list[pendulum.DateTime]:
    return [d for d in WINDOW if CASES[expression](d)]


def simulate_scheduler(spec) -> list[pendulum.DateTime]:
    """periodiq's Scheduler loop for one actor: send if ``validate``, sleep to the next date."""
    fired, now = [], WINDOW[0]
    while now <= WINDOW[-1]:
        if spec.validate(now):
            fired.append(now)
        now = spec.next_valid_date(now)
    return fired


@pytest.mark.parametrize("expression", list(CASES))
def test_normalized_spec_validates_exactly_the_expected_minutes(expression):
    spec = cron_spec(expression)
    assert [d for d in WINDOW if spec.validate(d)] == expected_runs(expression)


@pytest.mark.parametrize("expression", list(CASES))
def test_periodiq_scheduler_loop_on_normalized_spec_fires_every_expected_run(expression):
    assert simulate_scheduler(cron_spec(expression)) == expected_runs(expression)


@pytest.mark.parametrize("expression", list(CASES))
def test_normalized_next_date_is_the_next_expected_run_from_any_minute(expression):
    """The sleep never overshoots a run, whatever woke the scheduler (every 37th minute)."""
    spec = cron_spec(expression)
    runs = expected_runs(expression)
    for now in WINDOW[::37]:
        following = next((r for r in runs if r > now), None)
        if following is None:
            break
        assert spec.next_valid_date(now) == following, now


@pytest.mark.parametrize("expression", SUNDAY_AS_ZERO)
def test_raw_periodiq_never_fires_sunday_written_as_zero(expression):
    """The bug itself: ``isoweekday()`` is 7 on Sunday, periodiq stores Sunday as 0."""
    raw = cron(expression)
    expected_without_sundays = [d for d in expected_runs(expression) if d not in SUNDAYS]
    assert [d for d in WINDOW if raw.validate(d)] == expected_without_sundays
    assert simulate_scheduler(raw) == expected_without_sundays
    assert all(cron_spec(expression).validate(sunday) for sunday in SUNDAYS)


def test_raw_periodiq_with_sunday_as_seven_sleeps_past_sunday_from_a_saturday():
    """Writing 7 alone fixes ``validate`` but not ``next_valid_date`` (isoweekday() % 7)."""
    raw = cron("0 0 * * 7")
    saturday_noon = pendulum.datetime(2024, 1, 6, 12, tz="UTC")
    assert all(raw.validate(sunday) for sunday in SUNDAYS)
    assert raw.next_valid_date(saturday_noon) == pendulum.datetime(2024, 1, 14, tz="UTC")
    assert cron_spec("0 0 * * 7").next_valid_date(saturday_noon) == pendulum.datetime(
        2024, 1, 7, tz="UTC"
    )


@pytest.mark.parametrize(
    ("expression", "normalized"),
    [
        ("0 0 * * 0", "0 0 * * 0,7"),
        ("0 0 * * sun", "0 0 * * 0,7"),
        ("@weekly", "0 0 * * 0,7"),
        ("0 0 * * 0-2", "0 0 * * 0-2,7"),
        ("0 0 * * 0,3", "0 0 * * 0,3,7"),
        ("0 0 * * 7", "0 0 * * 0,7"),
        ("0 0 * * 0-6", "0 0 * * *"),
        ("0 0 * * */2", "0 0 * * 0,2,4,6-7"),
        ("*/5 * * * *", "*/5 * * * *"),
        ("@hourly", "0 * * * *"),
        ("  30 2 1-15/2 JAN-mar Mon-Fri ", "30 2 1-15/2 1-3 1-5"),
    ],
)
def test_normalize_cron_rewrites_into_numeric_periodiq_safe_form(expression, normalized):
    assert normalize_cron(expression) == normalized


def test_sunday_plus_five_weekdays_still_fires_on_the_right_days():
    """Doubling Sunday makes 7 values, which periodiq reads as 'every day': still exact."""
    spec = cron_spec("0 0 * * sun-fri")
    assert [d for d in WINDOW if spec.validate(d)] == [
        d for d in WINDOW if midnight_on(SUN, MON, TUE, WED, 3, 4)(d)
    ]


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "* * * *",
        "* * * * * *",
        "61 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "* * * * 8",
        "5-1 * * * *",
        "*/0 * * * *",
        "5/15 * * * *",
        "-1 * * * *",
        "* * * foo *",
        "* * * * sunday",
        "* * * jan-sun *",
        "@reboot",
        "0 0 13 * 0-5",
        None,
    ],
)
def test_normalize_cron_refuses_bad_expressions_with_a_typed_error(expression):
    with pytest.raises(InvalidCronExpression) as caught:
        normalize_cron(expression)
    assert isinstance(caught.value, ValidationError)
    assert repr(expression) in str(caught.value)

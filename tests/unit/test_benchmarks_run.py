"""The arithmetic and the command line of ``python -m benchmarks.run`` (no database: the
figures themselves are measured by running it, never in timed tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from benchmarks import fairness, run
from benchmarks.common import Row, growth_exponent, jain_index, percentile

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_jain_index_is_one_when_equal_and_one_over_n_when_one_takes_all() -> None:
    assert jain_index([3, 3, 3, 3]) == pytest.approx(1.0)
    assert jain_index([8, 0, 0, 0]) == pytest.approx(0.25)


def test_growth_exponent_is_the_slope_in_log_log() -> None:
    assert growth_exponent([1e3, 1e4, 1e5], [1.0, 1.0, 1.0]) == pytest.approx(0.0)
    assert growth_exponent([1e3, 1e4, 1e5], [1.0, 10.0, 100.0]) == pytest.approx(1.0)
    assert growth_exponent([1e3, 1e4, 1e5], [1.0, 2.0, 4.0]) == pytest.approx(0.301, abs=1e-3)


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 51))
    assert percentile(values, 0.5) == 25
    assert percentile(values, 0.99) == 50


def test_fairness_round_robin_scores_one_and_serial_scores_low() -> None:
    operations = {str(i): (at(0), None, 1) for i in range(4)}
    round_robin = [(str(i), at(i), at(i + 1)) for i in range(4)]
    serial = [("0", at(i), at(i + 1)) for i in range(4)]
    assert fairness.fairness(operations, round_robin, first=4) == pytest.approx(1.0)
    assert fairness.fairness(operations, serial, first=4) == pytest.approx(0.25)


def test_longest_wait_counts_gaps_and_an_operation_still_waiting_at_the_end() -> None:
    operations = {"a": (at(0), at(10), 3), "b": (at(0), None, 1)}
    jobs = [("a", at(2), at(3)), ("a", at(8), at(10)), ("b", at(1), at(2))]
    assert fairness.longest_wait(operations, jobs, now=at(30)) == pytest.approx(28.0)
    assert fairness.longest_wait({"a": operations["a"]}, jobs[:2], now=at(30)) == 5.0


@pytest.mark.parametrize("argv", [["--only", "nope"], ["--repeat", "2"]])
def test_bad_arguments_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run.parse(argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_sections_are_picked_in_the_order_given_and_default_to_all() -> None:
    assert run.parse([]).names == list(run.SECTIONS)
    assert run.parse(["--only", "memory, throughput"]).names == ["memory", "throughput"]


def test_markdown_has_one_row_per_figure_the_notes_and_the_machine() -> None:
    rows = [
        Row("throughput", "a | b", 1234.5, "rows/s", 2000, "hand loop", 0.61725, "≥ 0.90"),
        Row("memory", "peak", 51.0, "MiB"),
    ]
    text = run.markdown(rows, {"Postgres": "18.6"}, "# figures")
    assert "| throughput | a \\| b | 1,234 | rows/s | 2,000 | hand loop | 0.617 | ≥ 0.90 |" in text
    assert "| memory | peak | 51.000 | MiB |  |  |  |  |" in text
    assert "| Postgres | 18.6 |" in text
    assert all(f"- {note}" in text for note in run.NOTES)

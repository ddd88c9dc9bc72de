"""The default check's table, bbo.read_only_organizations: flagged and lifted from Python and
from ``dramatiq-bbo read-only``, bad input refused with nothing written."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from dramatiq_bbo import errors
from dramatiq_bbo.cli.main import main
from dramatiq_bbo.read_only import clear_read_only, mark_read_only, read_only_organizations

pytestmark = pytest.mark.usefixtures("configured")


def stored(conn: psycopg.Connection[Any]) -> list[tuple[int, str | None]]:
    table = "bbo.read_only_organizations"
    return conn.execute(f"SELECT organization_id, reason FROM {table} ORDER BY 1").fetchall()


def test_a_flag_is_set_changed_listed_and_lifted(conn: psycopg.Connection[Any]) -> None:
    first = mark_read_only(7, reason="moving")
    changed = mark_read_only(7, reason="moving to cell B")
    mark_read_only(8)
    assert (changed.reason, changed.since) == ("moving to cell B", first.since)  # since stays
    assert [(f.organization_id, f.reason) for f in read_only_organizations()] == [
        (7, "moving to cell B"),
        (8, None),
    ]
    lifted = clear_read_only(7)
    assert lifted is not None and lifted.organization_id == 7
    assert clear_read_only(7) is None  # nothing left to lift
    assert stored(conn) == [(8, None)]


@pytest.mark.parametrize(
    ("organization_id", "reason"),
    [("7", None), (True, None), (2**63, None), (7, 12), (7, "x\x00y"), (7, "x" * 901)],
)
def test_bad_input_is_refused_and_nothing_written(
    conn: psycopg.Connection[Any], organization_id: Any, reason: Any
) -> None:
    with pytest.raises(errors.InvalidArgument):
        mark_read_only(organization_id, reason=reason)
    assert stored(conn) == []


def test_the_command_line_adds_lists_and_removes_flags(
    configured: str, conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = ["--dsn", configured]
    assert main(["read-only", "add", "--organization", "7", "--reason", "audit", *dsn]) == 0
    assert stored(conn) == [(7, "audit")]
    assert main(["read-only", "list", *dsn]) == 0
    assert main(["read-only", "remove", "--organization", "7", *dsn]) == 0
    assert main(["read-only", "remove", "--organization", "7", *dsn]) == 0
    assert main(["read-only", "list", *dsn]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "organization 7 is read-only"
    assert out[1].startswith("7\t") and out[1].endswith("\taudit")
    assert out[2:] == [
        "organization 7 is no longer read-only",
        "organization 7 was not read-only",
        "no organization is read-only",
    ]
    assert main(["read-only", "add", "--organization", "seven", *dsn]) == 2  # usage error
    assert stored(conn) == []

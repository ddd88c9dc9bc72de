"""``dramatiq_bbo.chatops.handle(text, user)`` on a real Postgres: reading is open, a change
needs ``chatops_authorize`` and nothing changes when it is refused, and no line a user can type
gets a traceback back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import chatops
from dramatiq_bbo.logs import CHATOPS_COMMAND_FAILED
from tests.integration.steering_support import Visit, events, make_counters, named, state

__all__ = ["events"]  # the fixture, re-exported for pytest


@pytest.fixture
def operation(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A queued operation over 300 counters; the library configured without authorisation."""
    make_counters(conn, 300)
    bbo.configure(dsn=dsn)
    try:
        yield str(bbo.enqueue(Visit, "counters", "id", batch_size=100).operation.id)
    finally:
        bbo.reset()


def status_of(conn: psycopg.Connection[Any], operation_id: str) -> str:
    row = conn.execute("SELECT status FROM bbo.operations WHERE id = %s", [operation_id])
    found = row.fetchone()
    assert found is not None
    return str(found[0])


def test_pause_is_refused_without_authorisation_and_pauses_with_it(
    dsn: str, conn: psycopg.Connection[Any], operation: str
) -> None:
    before = state(conn)
    reply = chatops.handle(f"pause {operation}", "eve")
    assert reply.startswith("**refused:**") and "chatops_authorize" in reply
    assert state(conn) == before

    asked: list[tuple[str, str, str | None]] = []

    def authorize(user: str, command: str, operation_id: str | None) -> bool:
        asked.append((user, command, operation_id))
        return user == "eve"

    bbo.configure(dsn=dsn, chatops_authorize=authorize)
    assert chatops.handle(f"pause {operation}", "mallory").startswith("**refused:**")
    assert state(conn) == before

    reply = chatops.handle(f"pause {operation}", "eve")
    assert reply.startswith(f"operation {operation} paused"), reply
    assert status_of(conn, operation) == "paused"
    assert asked == [("mallory", "pause", operation), ("eve", "pause", operation)]


def test_an_authorisation_hook_that_fails_refuses_and_logs_why(
    dsn: str, conn: psycopg.Connection[Any], operation: str, events: list[dict[str, Any]]
) -> None:
    def broken(user: str, command: str, operation_id: str | None) -> bool:
        raise RuntimeError("the directory is down")

    bbo.configure(dsn=dsn, chatops_authorize=broken)
    before = state(conn)
    assert chatops.handle("disable steering.visit", "eve").startswith("**refused:**")
    assert chatops.handle(f"cancel {operation}", "eve").startswith("**refused:**")
    assert state(conn) == before
    logged = named(events, CHATOPS_COMMAND_FAILED)
    assert [(e["command"], e["target"]) for e in logged] == [
        ("disable", "steering.visit"),
        ("cancel", operation),
    ]
    assert all("the directory is down" in e["error"] and e["traceback"] for e in logged)


def test_reading_needs_no_authorisation_and_replies_in_markdown(operation: str) -> None:
    listing = chatops.handle("list --status queued", "eve")
    header, rule, row = listing.splitlines()
    assert header.startswith("| ID | CLASS | TABLE | STATUS |") and rule.startswith("|---|")
    assert row.startswith(f"| {operation} | {Visit.name} | counters.id | queued |")

    shown = chatops.handle(f"bbo show {operation}", "eve")
    assert shown.startswith(f"**operation {operation}**") and "- status: `queued`" in shown
    assert "_no jobs yet_" in shown
    assert chatops.handle("failures --since 1h", "eve") == "_no failed jobs_"
    assert chatops.handle("disabled", "eve") == "_no disabled classes_"


@pytest.mark.parametrize(
    ("line", "starts"),
    [
        ("", "**dramatiq-bbo commands**"),
        ("help", "**dramatiq-bbo commands**"),
        ("frobnicate 42", "**error:** unknown command 'frobnicate'"),
        ("pause", "**error:** pause: ID is missing"),
        ("show abc", "**error:** ID: 'abc' is not an operation id"),
        ("list --status running", "**error:** --status: unknown status 'running'"),
        ("list --limit", "**error:** list: --limit needs a value"),
        ('disable "unclosed', "**error:** cannot read the line"),
        ("set 1 --batch-size -5", "**error:** batch_size must be an int > 0"),
        ("show 999", "**error:** no operation '999'"),
        ("list --limit 51", "**error:** at most 50 rows in a chat, got 51"),
        ("finalize 1", "**not in chat:**"),
        ("list\x00", "**error:**"),
        ("x" * 3_000, "**error:** a command is one line"),
    ],
)
def test_a_bad_line_gets_a_usage_or_one_line_never_a_traceback(
    operation: str, line: str, starts: str
) -> None:
    reply = chatops.handle(line, "eve")
    assert reply.startswith(starts), reply
    assert "Traceback" not in reply


def test_an_unreachable_database_is_one_line() -> None:
    bbo.configure("postgresql://nobody@127.0.0.1:1/x", connect_timeout_seconds=1.0)
    try:
        reply = chatops.handle("list", "eve")
    finally:
        bbo.reset()
    assert reply.startswith("**error:**") and "\n" not in reply


def test_a_user_that_is_not_a_name_is_refused(operation: str) -> None:
    assert chatops.handle("list", "").startswith("**error:** the user must be")
    assert chatops.handle("list", None).startswith("**error:**")  # type: ignore[arg-type]

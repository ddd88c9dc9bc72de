"""enqueue() acts for the current organization when the call names no scope; explicit
arguments win, and a half-given pair is refused before anything is written."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import errors
from tests.integration.enqueue_support import define_operation, make_todos, operation_rows

__all__ = ["define_operation"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.usefixtures("configured")


@pytest.fixture
def todos(conn: psycopg.Connection[Any]) -> str:
    make_todos(conn, 20)
    return "todos"


def scope_of(record: bbo.OperationRecord) -> tuple[int | None, int | None]:
    return record.organization_id, record.user_id


def test_an_enqueue_without_a_scope_acts_for_the_current_organization(
    conn: psycopg.Connection[Any], todos: str, define_operation: Any
) -> None:
    op = define_operation()
    with bbo.current_organization(7, 42):
        inside = bbo.enqueue(op, todos, "id").operation
    outside = bbo.enqueue(op, todos, "id").operation
    assert scope_of(inside) == (7, 42) and inside.organization_scoped
    assert scope_of(outside) == (None, None) and not outside.organization_scoped
    stored = conn.execute("SELECT organization_id, user_id FROM bbo.background_operation_workers")
    assert stored.fetchall() == [(7, 42)]


def test_explicit_arguments_win_over_the_current_organization(
    conn: psycopg.Connection[Any], todos: str, define_operation: Any
) -> None:
    op = define_operation()
    with bbo.current_organization(7, 42):
        explicit = bbo.enqueue(op, todos, "id", organization_id=8, user_id=43).operation
        by_user = bbo.enqueue(op, todos, "id", user=SimpleNamespace(id=44, organization_id=9))
        with bbo.current_organization(None, None):  # no organization for this block
            cell_local = bbo.enqueue(op, todos, "id").operation
    assert scope_of(explicit) == (8, 43)
    assert scope_of(by_user.operation) == (9, 44)
    assert scope_of(cell_local) == (None, None)


@pytest.mark.parametrize(
    ("given", "offending"),
    [
        ({"organization_id": 8}, "organization_id=8, user_id=None"),
        ({"user_id": 43}, "organization_id=None, user_id=43"),
    ],
)
def test_a_half_given_pair_is_refused_even_when_the_context_has_the_other_half(
    conn: psycopg.Connection[Any],
    todos: str,
    define_operation: Any,
    given: dict[str, int],
    offending: str,
) -> None:
    with bbo.current_organization(7, 42), pytest.raises(errors.InvalidScope) as caught:
        bbo.enqueue(define_operation(), todos, "id", **given)
    assert offending in str(caught.value)
    assert operation_rows(conn) == 0


def test_a_half_given_current_organization_is_refused_and_enqueues_nothing(
    conn: psycopg.Connection[Any], todos: str, define_operation: Any
) -> None:
    with pytest.raises(errors.InvalidScope, match="both organization_id and user_id"):
        with bbo.current_organization(7, None):
            bbo.enqueue(define_operation(), todos, "id")
    assert operation_rows(conn) == 0


def test_each_thread_enqueues_for_its_own_organization(
    conn: psycopg.Connection[Any], todos: str, define_operation: Any
) -> None:
    op = define_operation()
    results: dict[int, Any] = {}

    def request(organization_id: int) -> None:
        with bbo.current_organization(organization_id, organization_id * 10):
            ready.wait(5)  # both requests inside their blocks at once
            results[organization_id] = bbo.enqueue(op, todos, "id").operation

    ready = threading.Barrier(2)
    threads = [threading.Thread(target=request, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert {n: scope_of(record) for n, record in results.items()} == {1: (1, 10), 2: (2, 20)}

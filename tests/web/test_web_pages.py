"""The web page through Starlette's TestClient on a real Postgres: pages render, actions are
refused without an authorize hook (and change nothing), allowed ones run through the command
layer with a CSRF token and are logged with who did them, and user text is rendered inert."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

import dramatiq_bbo as bbo
from dramatiq_bbo.jobs.inline import run_to_completion
from dramatiq_bbo.web import create_app
from dramatiq_bbo.web.actions import WEB_ACTION, WEB_ACTION_REFUSED
from tests.helpers import CELL_LOCAL_OPERATIONS
from tests.integration.steering_support import events, make_counters, named, state
from tests.web.web_support import SCRIPT, FailWithScript, Touch, csrf_token, wait_for

__all__ = ["events"]

ACTIONS = ("pause", "resume", "cancel", "retry", "finalize", "set")


@pytest.fixture
def web_db(dsn: str) -> Iterator[str]:
    bbo.configure(dsn=dsn, max_attempts=1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        make_counters(conn, 200)
    try:
        yield dsn
    finally:
        bbo.reset()


def enqueue(cls: type[bbo.BaseOperation] = Touch, **options: Any) -> Any:
    sizes = {"batch_size": 100, "sub_batch_size": 20, **options}
    return bbo.enqueue(cls, "counters", "id", **sizes).operation.id


def test_without_an_authorize_hook_every_action_is_refused_and_nothing_changes(
    web_db: str, events: list[dict[str, Any]]
) -> None:
    operation_id = enqueue()
    client = TestClient(create_app())
    page = client.get(f"/operations/{operation_id}")
    assert page.status_code == 200 and "read-only" in page.text
    assert "<form" not in page.text.split('id="actions"')[1].split("</section>")[0]
    token = client.cookies["bbo_csrf"]  # a valid token: refused all the same
    with psycopg.connect(web_db, autocommit=True) as conn:
        before = state(conn)
        for action in ACTIONS:
            form = {"csrf_token": token, "batch_size": "50"}
            answer = client.post(f"/operations/{operation_id}/{action}", data=form)
            assert answer.status_code == 403, (action, answer.text)
        for action in ("disable", "enable"):
            form = {"csrf_token": token, "class_name": Touch.name}
            assert client.post(f"/classes/{action}", data=form).status_code == 403
        assert client.get(f"/operations/{operation_id}/pause").status_code == 405
        assert state(conn) == before
    assert len(named(events, WEB_ACTION_REFUSED)) == len(ACTIONS) + 2
    assert not named(events, WEB_ACTION)


def test_an_allowed_action_needs_the_csrf_token_and_is_logged_with_who_did_it(
    web_db: str, events: list[dict[str, Any]]
) -> None:
    operation_id = enqueue()
    asked: list[tuple[str, str | None]] = []

    def authorize(request: Any, action: str, target: str | None) -> str:
        asked.append((action, target))
        return "alice"

    client = TestClient(create_app(authorize=authorize))
    token = csrf_token(client.get(f"/operations/{operation_id}").text)
    refused = client.post(f"/operations/{operation_id}/pause", data={"csrf_token": "x.y"})
    assert refused.status_code == 403 and bbo.get_operation(operation_id).status.name == "QUEUED"
    elsewhere = client.post(
        f"/operations/{operation_id}/pause",
        data={"csrf_token": token},
        headers={"origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403 and not asked

    done = client.post(f"/operations/{operation_id}/pause", data={"csrf_token": token})
    assert done.status_code == 200 and "Paused: its running job" in done.text  # followed the 303
    assert bbo.get_operation(operation_id).status.name == "PAUSED"
    assert asked == [("pause", str(operation_id))]
    [logged] = named(events, WEB_ACTION)
    assert logged["by"] == "web:alice" and logged["action"] == "pause"
    assert named(events, "background_operation_paused")[0]["by"] == "web:alice"

    resized = client.post(
        f"/operations/{operation_id}/set", data={"csrf_token": token, "batch_size": "60"}
    )
    assert resized.status_code == 200 and bbo.get_operation(operation_id).batch_size == 60
    wrong = client.post(
        f"/operations/{operation_id}/set", data={"csrf_token": token, "batch_size": "-3"}
    )
    assert wrong.status_code == 400 and bbo.get_operation(operation_id).batch_size == 60
    twice = client.post(f"/operations/{operation_id}/pause", data={"csrf_token": token})
    assert twice.status_code == 409

    off = client.post(
        "/classes/disable",
        data={"csrf_token": token, "class_name": Touch.name, "reason": "bad deploy"},
    )
    assert off.status_code == 200 and Touch.name in off.text
    assert [d.job_class_name for d in bbo.disabled_classes()] == [Touch.name]


def test_a_hook_that_says_no_refuses_with_403(web_db: str) -> None:
    operation_id = enqueue()
    client = TestClient(create_app(authorize=lambda request, action, target: False))
    token = csrf_token(client.get(f"/operations/{operation_id}").text)
    answer = client.post(f"/operations/{operation_id}/cancel", data={"csrf_token": token})
    assert answer.status_code == 403
    assert bbo.get_operation(operation_id).status.name == "QUEUED"


def test_arguments_and_exception_messages_are_rendered_inert(web_db: str) -> None:
    operation_id = enqueue(FailWithScript, arguments={"note": SCRIPT})
    run_to_completion(operation_id)
    assert bbo.get_operation(operation_id).status.name == "FAILED"
    client = TestClient(create_app())
    for path in (f"/operations/{operation_id}", "/failures", "/"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "<script>" not in page.text, path
    detail = client.get(f"/operations/{operation_id}").text
    assert "&lt;script&gt;window.bboOwned" in detail  # in the exception message, escaped
    assert "\\u003cscript\\u003e" in detail  # in the arguments (JSON, escaped)
    assert "&lt;script&gt;" in client.get("/failures").text


def test_pages_filters_pagination_and_errors(web_db: str) -> None:
    ids = [enqueue(batch_size=100 + n) for n in range(1)]
    with psycopg.connect(web_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE other (id bigint PRIMARY KEY)")
        conn.execute("INSERT INTO other SELECT generate_series(1, 10)")
    ids.append(bbo.enqueue(Touch, "other", "id", organization_id=7, user_id=1).operation.id)
    client = TestClient(create_app(page_size=1))
    first = client.get("/")
    assert first.status_code == 200 and "2 operations" in first.text and "page 1 of 2" in first.text
    assert 'http-equiv="refresh"' in first.text  # queued operations move: the list refreshes
    second = client.get("/?page=2")
    assert f"operation-{ids[0]}" in second.text and f"operation-{ids[1]}" not in second.text
    org = client.get("/?organization=7")
    assert "1 operation," in org.text and f"operation-{ids[1]}" in org.text
    assert "0 operations" in client.get("/?status=finished").text
    assert client.get("/?status=nonsense").status_code == 400
    assert client.get("/?page=0").status_code == 400
    assert client.get("/operations/424242").status_code == 404
    assert client.get("/operations/not-an-id").status_code == 400
    assert client.get("/?database=elsewhere").status_code == 404
    for path in ("/failures", "/failures?since=1h", "/disabled", f"/operations/{ids[1]}"):
        assert client.get(path).status_code == 200, path


def test_health_shows_the_hold_an_indicator_left(web_db: str) -> None:
    operation_id = enqueue()
    client = TestClient(create_app())
    assert '<td class="status">stop</td>' not in client.get("/health").text
    with psycopg.connect(web_db, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {CELL_LOCAL_OPERATIONS} SET hold_reason = %s,"
            " on_hold_until = bbo.now() + interval '1 hour' WHERE id = %s",
            ["replication_lag: lag 12s above 10s", operation_id],
        )
    page = client.get("/health").text
    row = page.split("<td>replication_lag</td>")[1].split("</tr>")[0]
    assert "stop" in row and "lag 12s above 10s" in row and f">{operation_id}</a>" in row
    assert "dbname=" not in page and "postgresql://" not in page


def test_no_dsn_or_password_is_ever_shown(dsn: str) -> None:
    secret_dsn = "postgresql://reader:s3cret-pw@127.0.0.1:1/elsewhere?connect_timeout=1"
    bbo.configure(databases={"main": dsn, "other": secret_dsn}, connect_timeout_seconds=1)
    try:
        client = TestClient(create_app())
        page = client.get("/").text
        assert ">other</option>" in page and "s3cret" not in page and "127.0.0.1:1" not in page
        unreachable = client.get("/?database=other")
        assert unreachable.status_code == 503
        assert "s3cret" not in unreachable.text and "reader" not in unreachable.text
    finally:
        bbo.reset()


def test_finalize_runs_the_rest_in_the_web_process_and_cancel_ends_another(web_db: str) -> None:
    with psycopg.connect(web_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE other (id bigint PRIMARY KEY, visits int NOT NULL DEFAULT 0)")
    finished = enqueue()
    cancelled = bbo.enqueue(Touch, "other", "id").operation.id
    client = TestClient(create_app(authorize=lambda request, action, target: True))
    token = csrf_token(client.get(f"/operations/{finished}").text)
    answer = client.post(f"/operations/{finished}/finalize", data={"csrf_token": token})
    assert answer.status_code == 200 and "Finalizing" in answer.text
    wait_for(lambda: bbo.get_operation(finished).status.name == "FINISHED", what="finalize")
    again = client.post(f"/operations/{finished}/finalize", data={"csrf_token": token})
    assert again.status_code == 409 and "finished" in again.text  # refused at once, shown
    assert client.post(f"/operations/{cancelled}/cancel", data={"csrf_token": token}).is_success
    assert bbo.get_operation(cancelled).status.name == "CANCELLED"


def test_the_partitions_page_lists_each_partition_with_its_rows(web_db: str) -> None:
    enqueue()
    client = TestClient(create_app())
    page = client.get("/partitions")
    assert page.status_code == 200
    row = page.text.split('<table id="partitions">')[1].split("<tbody>")[1].split("</tr>")[0]
    cells = [cell.rsplit(">", 1)[1] for cell in row.split("</td>")[:8]]  # the first partition
    assert cells[0] == "1" and cells[1] == "current"
    assert cells[6] == "1" and cells[7] == "1"  # one queued operation, unfinished
    assert 'id="nav-partitions"' in client.get("/").text  # in the navigation bar

"""The tracking store on a real Postgres: counters, failed items, finalisation and cleanup,
expiry, the purge in bounded batches, the per-type flag (API and CLI), and bad input refused
with a typed error and nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import errors, tracking
from dramatiq_bbo.cli.main import main as cli_main
from tests.integration.tracking_support import ITEM, Recorder, expire, rows


@pytest.fixture
def recorder(dsn: str) -> Iterator[Recorder]:
    recorder = Recorder()
    bbo.configure(dsn=dsn, tracking_notifier=recorder)
    yield recorder
    bbo.reset()


def test_counters_failed_items_and_cleanup_after_the_last_outcome(
    recorder: Recorder, conn: psycopg.Connection[Any]
) -> None:
    tracked = tracking.create_operation("attribute_update", 42, 4, {"mode": "ADD"})
    assert tracked is not None
    tracking.increment_successful(tracked)
    tracking.increment_successful(tracked, n=1)
    tracking.add_failed_item(tracked, **ITEM)
    operation = tracking.get_operation(tracked)
    assert (operation.total_items, operation.successful_items, operation.failed_items) == (4, 2, 1)
    assert operation.status == "running" and operation.parameters == {"mode": "ADD"}
    assert operation.user_id == 42 and operation.operation_type == "attribute_update"
    [item] = tracking.get_failed_items(tracked)
    assert (item.entity_id, item.entity_full_path, item.error_code) == (
        "7",
        "acme/web",
        "service_error",
    )
    assert recorder.calls == []

    tracking.add_failed_item(tracked, **{**ITEM, "entity_id": 8, "error_code": "unexpected_error"})

    [(finished, items)] = recorder.calls  # the finaliser ran once, with the final counts
    assert (finished.status, finished.successful_items, finished.failed_items) == ("finished", 2, 2)
    assert [i.entity_id for i in items] == ["7", "8"]
    with pytest.raises(errors.TrackedOperationNotFound):  # cleaned up
        tracking.get_operation(tracked)
    assert rows(conn) == (0, 0, 0)


def test_an_operation_without_failures_is_cleaned_up_without_a_notification(
    recorder: Recorder, conn: psycopg.Connection[Any]
) -> None:
    tracked = tracking.create_operation("attribute_update", 1, 2)
    assert tracked is not None
    tracking.increment_successful(tracked, 2)
    assert recorder.calls == []
    assert rows(conn) == (0, 0, 0)
    empty = tracking.create_operation("attribute_update", 1, 0)  # nothing to do: done at once
    assert empty is not None and rows(conn) == (0, 0, 0)


def test_an_expired_entry_is_invisible_at_once_and_purged_in_bounded_batches(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    bbo.configure(dsn=dsn, tracking_purge_batch_size=10, tracking_purge_max_batches=2)
    try:
        ids = [tracking.create_operation("bulk", 1, 100) for _ in range(25)]
        live = tracking.create_operation("bulk", 1, 100)
        for tracked in ids:
            assert tracked is not None
            tracking.add_failed_item(tracked, **ITEM)
            expire(conn, tracked)
        assert tracked is not None and live is not None
        with pytest.raises(errors.TrackedOperationNotFound):
            tracking.get_operation(tracked)
        with pytest.raises(errors.TrackedOperationNotFound):
            tracking.get_failed_items(tracked)
        with pytest.raises(errors.TrackedOperationNotFound):
            tracking.increment_successful(tracked)
        assert rows(conn)[:2] == (26, 25)

        first = tracking.purge()  # 2 statements of at most 10 rows per table
        assert (first.failed_items, first.operations, first.statements) == (20, 20, 4)
        second = tracking.purge()
        assert (second.failed_items, second.operations) == (5, 5)
        assert rows(conn)[:2] == (1, 0)
        assert tracking.get_operation(live).total_items == 100  # the live one is kept
    finally:
        bbo.reset()


def test_the_flag_turns_tracking_off_and_on_per_operation_type(
    recorder: Recorder,
    dsn: str,
    conn: psycopg.Connection[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert tracking.is_enabled("attribute_update")
    assert cli_main(["tracking", "disable", "attribute_update", "--dsn", dsn]) == 0
    bbo.configure(dsn=dsn, tracking_notifier=recorder)  # the command reset the configuration
    assert not tracking.is_enabled("attribute_update")
    assert tracking.create_operation("attribute_update", 1, 3) is None
    assert tracking.create_operation("other_type", 1, 3) is not None  # per type
    assert rows(conn)[0] == 1
    assert cli_main(["tracking", "enable", "attribute_update", "--dsn", dsn]) == 0
    bbo.configure(dsn=dsn, tracking_notifier=recorder)
    assert tracking.create_operation("attribute_update", 1, 3) is not None
    tracking.disable("x", by="test")
    assert [(f.operation_type, f.enabled) for f in tracking.list_flags()] == [
        ("attribute_update", True),
        ("x", False),
    ]
    capsys.readouterr()
    assert cli_main(["tracking", "status", "--dsn", dsn]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [["attribute_update", "on"], ["x", "off"]]
    assert lines[1].endswith("\ttest") and "\tcli:" in lines[0]
    assert cli_main(["tracking", "disable", "", "--dsn", dsn]) == 1  # a typed error, one line
    assert "operation_type must be a non-empty string" in capsys.readouterr().err


BAD_CREATES: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("", 1, 3), {}),
    (("t" * 101, 1, 3), {}),
    (("bulk\x00", 1, 3), {}),
    ((None, 1, 3), {}),
    (("bulk", "1", 3), {}),
    (("bulk", True, 3), {}),
    (("bulk", 1, -1), {}),
    (("bulk", 1, 2.5), {}),
    (("bulk", 1, 2**63), {}),
    (("bulk", 1, 3, [1, 2]), {}),
    (("bulk", 1, 3, {"x": float("nan")}), {}),
    (("bulk", 1, 3, {"x": object()}), {}),
    (("bulk", 1, 3, {"x": "\x00"}), {}),
    (("bulk", 1, 3, {"x": "y" * 70_000}), {}),
]


def test_a_bad_creation_raises_a_typed_error_and_writes_nothing(
    recorder: Recorder, conn: psycopg.Connection[Any]
) -> None:
    for args, kwargs in BAD_CREATES:
        with pytest.raises(errors.InvalidTrackingInput):
            tracking.create_operation(*args, **kwargs)
        assert rows(conn) == (0, 0, 0), args


BAD_ITEMS: list[dict[str, Any]] = [
    {"entity_id": None},
    {"entity_id": ""},
    {"entity_type": ""},
    {"entity_name": "   "},
    {"entity_full_path": None},
    {"error_message": ""},
    {"error_message": "x" * 4001},
    {"entity_name": "n" * 1001},
    {"error_code": "Not A Code"},
    {"error_code": ""},
    {"error_message": "nul\x00"},
]


def test_a_bad_failed_item_raises_a_typed_error_and_writes_nothing(
    recorder: Recorder, conn: psycopg.Connection[Any]
) -> None:
    tracked = tracking.create_operation("bulk", 1, 3)
    assert tracked is not None
    for change in BAD_ITEMS:
        with pytest.raises(errors.InvalidTrackingInput):
            tracking.add_failed_item(tracked, **{**ITEM, **change})
        assert rows(conn) == (1, 0, 0), change
    tracking.add_failed_item(tracked, **ITEM)  # the same item, well-formed, is taken
    assert rows(conn) == (1, 1, 1)


def test_missing_entity_fields_unknown_ids_and_counts_past_the_total_are_refused(
    recorder: Recorder, conn: psycopg.Connection[Any]
) -> None:
    tracked = tracking.create_operation("bulk", 1, 3)
    assert tracked is not None
    tracking.increment_successful(tracked, 2)
    before = rows(conn)
    with pytest.raises(TypeError):  # a keyword missing: Python refuses the call itself
        tracking.add_failed_item(tracked, entity_id=1)  # type: ignore[call-arg]
    for bad_n in (-1, 0.5, True, None):
        with pytest.raises(errors.InvalidTrackingInput):
            tracking.increment_successful(tracked, bad_n)  # type: ignore[arg-type]
    for bad_id in (0, -3, "1", None, 1.0):
        with pytest.raises(errors.InvalidTrackingInput):
            tracking.increment_successful(bad_id)  # type: ignore[arg-type]
    with pytest.raises(errors.TrackedOperationNotFound):
        tracking.increment_successful(tracked + 1000)
    with pytest.raises(errors.TrackedOperationNotFound):
        tracking.add_failed_item(tracked + 1000, **ITEM)
    with pytest.raises(errors.TrackedOperationNotFound):
        tracking.delete_operation(tracked + 1000)
    with pytest.raises(errors.TrackedCountExceeded):  # 2 + 2 > 3
        tracking.increment_successful(tracked, 2)
    with pytest.raises(errors.TrackedCountExceeded):  # a total below the 2 counted items
        tracking.set_total_items(tracked, 1)
    assert rows(conn) == before == (1, 0, 2)
    assert tracking.get_operation(tracked).total_items == 3
    tracking.set_total_items(tracked, 5)
    assert tracking.get_operation(tracked).total_items == 5
    tracking.delete_operation(tracked)
    assert rows(conn) == (0, 0, 0)


def test_settings_are_checked_by_configure(dsn: str) -> None:
    try:
        for bad in (
            {"tracking_ttl_hours": 0},
            {"tracking_ttl_hours": -1},
            {"smtp_port": 0},
            {"smtp_starttls": "yes"},
            {"tracking_recipient": "alice@example.com"},
            {"tracking_recipient": lambda: "x"},
            {"tracking_notifier": object()},
            {"tracking_notifier": lambda operation: None},
        ):
            with pytest.raises(errors.ConfigurationError):
                bbo.configure(dsn=dsn, **bad)
        settings = bbo.configure(dsn=dsn, smtp_password="hunter2", tracking_ttl_hours=1)
        assert "hunter2" not in repr(settings)
        assert bbo.configure(dsn=dsn).tracking_ttl_hours == 72
    finally:
        bbo.reset()


def test_setup_declares_the_periodic_purge_which_also_renotifies_a_dead_finaliser(
    recorder: Recorder, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    from dramatiq_pg import PostgresBroker

    broker = PostgresBroker(url=dsn, results=False)
    try:
        actors = bbo.setup(broker)
        purge = actors["bbo_tracking_purge"]
        assert purge.options["periodic"] is not None
        expired = tracking.create_operation("bulk", 1, 5)
        orphan = tracking.create_operation("bulk", 1, 2)
        assert expired is not None and orphan is not None
        expire(conn, expired)
        tracking.add_failed_item(orphan, **ITEM)
        # its finaliser committed, then died before notifying (claimed an hour ago)
        conn.execute(
            "UPDATE bbo.tracked_operations SET successful_items = 1, status = 'finished',"
            " finished_at = now(), notification_claimed_at = now() - interval '1 hour'"
            " WHERE id = %s",
            [orphan],
        )
        purge.fn()  # what periodiq runs
        [(operation, items)] = recorder.calls
        assert operation.id == orphan and len(items) == 1
        assert rows(conn) == (0, 0, 0)
    finally:
        broker.close()

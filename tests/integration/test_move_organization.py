"""Moving an organization between two databases standing for two cells, in process and with
``dramatiq-bbo move-organization``: the operations leave the source, arrive at the target
as they were (cursor, counters, status, hold, job history), and finish there, every row of
the organization visited exactly once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import errors
from dramatiq_bbo.cells.record import Step
from dramatiq_bbo.cli import main as cli
from dramatiq_bbo.state.records import OperationStatus
from tests.conftest import _create_database, _drop_database
from tests.faults.move_support import (
    ROWS_PER_ORGANIZATION,
    copies,
    copy_rows,
    enqueue_half_done,
    make_items,
    visits,
)

ORGANIZATION = 7  # moved by the command
OTHER = 8  # never moved
PAUSED_BY_HAND = 9
HELD_UP = 10
RESUMED_ONCE = 11
RESUMED_EVERY_TIME = 12
WITHOUT_TABLE = 13  # its operation walks a table the target lacks
STEERED = 14
ORGANIZATIONS = [
    ORGANIZATION, OTHER, PAUSED_BY_HAND, HELD_UP, RESUMED_ONCE, RESUMED_EVERY_TIME, STEERED
]  # fmt: skip


@pytest.fixture(scope="module")
def databases(admin_dsn: str, template_database: str) -> Iterator[tuple[str, str]]:
    """Two migrated databases for the module (each test moves organizations of its own)."""
    names = [f"bbo_test_moves_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    main, cell_b = (_create_database(admin_dsn, name, template_database) for name in names)
    with psycopg.connect(main, autocommit=True) as conn:
        make_items(conn, ORGANIZATIONS)
        make_items(conn, [WITHOUT_TABLE], table="source_only_items")
    try:
        yield main, cell_b
    finally:
        for name in names:
            _drop_database(admin_dsn, name)


@pytest.fixture
def cells(databases: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """The two databases configured as ``main`` and ``cell_b``."""
    main, cell_b = databases
    bbo.configure(dsn=main, databases={"cell_b": cell_b})
    try:
        yield main, cell_b
    finally:
        bbo.reset()


def test_a_half_done_operation_moved_by_the_command_finishes_at_the_target(
    cells: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    main, cell_b = cells
    operation_id = enqueue_half_done(ORGANIZATION)
    other_id = enqueue_half_done(OTHER)
    before = bbo.get_operation(operation_id)
    assert before.status == OperationStatus.ACTIVE and 0 < before.processed_tuple_count
    jobs_before = copies(main, operation_id)[1]
    copy_rows(main, cell_b, ORGANIZATION)

    argv = ["move-organization", str(ORGANIZATION), "--target", "cell_b"]
    code = cli.main([*argv, "--dsn", main, "--database", f"cell_b={cell_b}"])

    assert code == 0
    printed = capsys.readouterr().out
    assert [line.split()[0] for line in printed.splitlines()[:6]] == [s.value for s in Step]
    assert "1 operation(s) moved from 'main' to 'cell_b'" in printed
    bbo.configure(dsn=main, databases={"cell_b": cell_b})  # the command reset it
    with pytest.raises(errors.OperationNotFound):
        bbo.get_operation(operation_id, database="main")
    arrived = bbo.get_operation(operation_id, database="cell_b")
    assert arrived.status == OperationStatus.ACTIVE
    assert arrived.database_name == "cell_b" and arrived.on_hold_until is None
    same = ("next_cursor", "processed_tuple_count", "batch_size", "sub_batch_size", "min_cursor")
    assert {k: getattr(arrived, k) for k in same} == {k: getattr(before, k) for k in same}
    assert copies(cell_b, operation_id) == (1, jobs_before)
    assert bbo.get_operation(other_id).status == OperationStatus.ACTIVE  # not moved

    finished = bbo.run_to_completion(operation_id, database="cell_b")
    assert finished.status == OperationStatus.FINISHED
    assert visits(cell_b, ORGANIZATION) == {1: ROWS_PER_ORGANIZATION}


def test_a_paused_operation_arrives_paused_and_a_second_run_changes_nothing(
    cells: tuple[str, str],
) -> None:
    main, cell_b = cells
    operation_id = enqueue_half_done(PAUSED_BY_HAND)
    bbo.pause(operation_id, by="test")
    copy_rows(main, cell_b, PAUSED_BY_HAND)

    heard: list[Step] = []
    first = bbo.move_organization(
        PAUSED_BY_HAND, source="main", target="cell_b", on_step=lambda step, _: heard.append(step)
    )
    again = bbo.move_organization(PAUSED_BY_HAND, source="main", target="cell_b")

    assert heard == list(Step)
    assert first.moved == [operation_id] and first.left_behind == []
    assert again.moved == []
    assert bbo.get_operation(operation_id, database="cell_b").status == OperationStatus.PAUSED
    assert copies(main, operation_id) == (0, 0)


def test_bad_input_and_a_missing_table_write_nothing(cells: tuple[str, str]) -> None:
    main, cell_b = cells
    operation_id = enqueue_half_done(WITHOUT_TABLE, table="source_only_items")
    with pytest.raises(errors.InvalidArgument):
        bbo.move_organization("13", source="main", target="cell_b")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument):
        bbo.move_organization(WITHOUT_TABLE, source="main", target="main")
    with pytest.raises(errors.UnknownDatabase):
        bbo.move_organization(WITHOUT_TABLE, source="main", target="nowhere")
    with psycopg.connect(main, autocommit=True) as mover:  # another process moving it
        mover.execute(
            "SELECT pg_advisory_lock(hashtextextended('bbo.organization_move:' || %s, 0))",
            [str(WITHOUT_TABLE)],
        )
        with pytest.raises(errors.MoveConflict, match="another process"):
            bbo.move_organization(WITHOUT_TABLE, source="main", target="cell_b")
    with pytest.raises(errors.MoveTargetNotReady, match="source_only_items"):
        bbo.move_organization(WITHOUT_TABLE, source="main", target="cell_b")
    assert copies(main, operation_id)[0] == 1
    assert bbo.get_operation(operation_id).status == OperationStatus.ACTIVE  # not even paused
    with psycopg.connect(main) as conn:
        recorded = conn.execute(
            "SELECT count(*) FROM bbo.organization_moves WHERE organization_id = %s",
            [WITHOUT_TABLE],
        ).fetchone()
    assert recorded == (0,)
    assert copies(cell_b, operation_id) == (0, 0)


def test_the_command_refuses_a_malformed_database_before_connecting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BBO_DSN", raising=False)
    argv = ["move-organization", "7", "--target", "cell_b", "--dsn", "dbname=x"]
    assert cli.main([*argv, "--database", "cell_b"]) == cli.EXIT_USAGE
    assert "expected NAME=DSN" in capsys.readouterr().err
    assert cli.main([*argv[:-2], "--database", "cell_b=dbname=y"]) == cli.EXIT_USAGE  # no main


def test_a_job_running_past_the_wait_stops_the_move_and_a_rerun_finishes_it(
    cells: tuple[str, str],
) -> None:
    main, cell_b = cells
    operation_id = enqueue_half_done(HELD_UP)
    copy_rows(main, cell_b, HELD_UP)
    with psycopg.connect(main, autocommit=True) as conn:  # a worker holding its job's lease
        conn.execute(
            "UPDATE bbo.background_operation_jobs SET status = 1,"
            " lease_expires_at = now() + interval '1 hour' WHERE worker_id = %s",
            [operation_id],
        )
        with pytest.raises(errors.MoveTimeout, match="still running"):
            bbo.move_organization(HELD_UP, source="main", target="cell_b", wait_seconds=0.2)
        assert bbo.get_operation(operation_id).status == OperationStatus.PAUSED
        assert copies(cell_b, operation_id) == (0, 0)
        conn.execute(  # the worker died: its lease ran out
            "UPDATE bbo.background_operation_jobs SET lease_expires_at = now()"
            " WHERE worker_id = %s",
            [operation_id],
        )

    bbo.move_organization(HELD_UP, source="main", target="cell_b", wait_seconds=0.2)

    assert bbo.get_operation(operation_id, database="cell_b").status == OperationStatus.ACTIVE
    bbo.run_to_completion(operation_id, database="cell_b")
    assert visits(cell_b, HELD_UP) == {1: ROWS_PER_ORGANIZATION}


def test_resume_and_cancel_of_the_inert_copy_are_refused_while_the_move_is_under_way(
    cells: tuple[str, str],
) -> None:
    main, cell_b = cells
    operation_id = enqueue_half_done(STEERED)
    copy_rows(main, cell_b, STEERED)
    refused: list[str] = []

    def operator_steers(step: Step, _: object) -> None:
        if step != Step.COPIED:
            return
        for action in (bbo.resume, bbo.cancel):
            with pytest.raises(errors.InvalidTransition, match="inert copy") as caught:
                action(operation_id, by="test", database="cell_b")
            refused.append(str(caught.value))

    bbo.move_organization(STEERED, source="main", target="cell_b", on_step=operator_steers)

    assert len(refused) == 2
    moved = bbo.get_operation(operation_id, database="cell_b")
    assert moved.status == OperationStatus.ACTIVE  # as before the move: nothing was undone
    assert bbo.pause(operation_id, by="test", database="cell_b").status == OperationStatus.PAUSED
    assert bbo.resume(operation_id, by="test", database="cell_b").status == OperationStatus.ACTIVE


def test_an_operation_resumed_at_the_source_during_the_copy_is_copied_again(
    cells: tuple[str, str],
) -> None:
    main, cell_b = cells
    operation_id = enqueue_half_done(RESUMED_ONCE)
    copy_rows(main, cell_b, RESUMED_ONCE)
    heard: list[Step] = []

    def operator_resumes_once(step: Step, _: object) -> None:
        heard.append(step)
        if step == Step.COPIED and heard.count(Step.COPIED) == 1:
            bbo.resume(operation_id, by="test")

    bbo.move_organization(
        RESUMED_ONCE, source="main", target="cell_b", on_step=operator_resumes_once
    )

    # the stale copy was discarded, the operation paused and copied again
    assert heard == [Step.PAUSED, Step.DRAINED, Step.COPIED, *Step]
    assert copies(main, operation_id) == (0, 0)
    assert copies(cell_b, operation_id)[0] == 1
    assert bbo.get_operation(operation_id, database="cell_b").status == OperationStatus.ACTIVE


def test_a_copy_made_stale_at_every_try_is_refused(cells: tuple[str, str]) -> None:
    main, cell_b = cells
    operation_id = enqueue_half_done(RESUMED_EVERY_TIME)
    copy_rows(main, cell_b, RESUMED_EVERY_TIME)

    def operator_resumes(step: Step, _: object) -> None:
        if step == Step.COPIED:
            bbo.resume(operation_id, by="test")

    with pytest.raises(errors.MoveConflict, match="changed in database 'main'"):
        bbo.move_organization(
            RESUMED_EVERY_TIME, source="main", target="cell_b", on_step=operator_resumes
        )
    assert copies(cell_b, operation_id) == (0, 0)  # each stale copy was discarded
    assert bbo.get_operation(operation_id).status == OperationStatus.ACTIVE

    bbo.move_organization(RESUMED_EVERY_TIME, source="main", target="cell_b")

    assert copies(main, operation_id) == (0, 0)
    assert bbo.get_operation(operation_id, database="cell_b").status == OperationStatus.ACTIVE

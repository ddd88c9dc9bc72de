"""A move killed (kill -9) right after each of its steps, then run again: it completes, the
operation is live in one database only at every point, and finishes there with every row of
its organization visited exactly once.

One organization per step, all in one pair of databases; the killed moves run at once (each
its own process), which also checks that moves of different organizations do not disturb
each other.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.cells.record import Step
from dramatiq_bbo.state.records import OperationStatus
from tests.faults.move_support import (
    ROWS_PER_ORGANIZATION,
    copies,
    copy_rows,
    enqueue_half_done,
    live_copies,
    make_items,
    visits,
)

ROOT = Path(__file__).resolve().parents[2]
#: organization per step the move is killed after
ORGANIZATIONS = {step: 100 + number for number, step in enumerate(Step)}


@pytest.fixture
def cells(database_factory: Callable[..., str]) -> Iterator[tuple[str, str]]:
    main, cell_b = database_factory(), database_factory()
    bbo.configure(dsn=main, databases={"cell_b": cell_b})
    with psycopg.connect(main, autocommit=True) as conn:
        make_items(conn, list(ORGANIZATIONS.values()))
    try:
        yield main, cell_b
    finally:
        bbo.reset()


def test_a_move_killed_after_each_step_completes_on_a_second_run(
    cells: tuple[str, str],
) -> None:
    main, cell_b = cells
    operations = {step: enqueue_half_done(org) for step, org in ORGANIZATIONS.items()}
    for organization in ORGANIZATIONS.values():
        copy_rows(main, cell_b, organization)

    killed = {
        step: subprocess.Popen(
            [sys.executable, "-m", "tests.faults.move_killer", main, cell_b, str(org), step.value],
            cwd=ROOT,
        )
        for step, org in ORGANIZATIONS.items()
    }
    for step, process in killed.items():
        assert process.wait(timeout=30) == -signal.SIGKILL, step

    for step, operation_id in operations.items():
        # After the kill: never two live copies, never none at all; the target's copy inert
        # until the source's is gone.
        assert live_copies([main, cell_b], operation_id) <= 1, step
        in_main, in_b = copies(main, operation_id)[0], copies(cell_b, operation_id)[0]
        before_copy = step.order < Step.COPIED.order
        expected = (1, 0) if before_copy else (1, 1) if step == Step.COPIED else (0, 1)
        assert (in_main, in_b) == expected, step
        if in_b and step.order < Step.RESUMED.order:  # arrived, inert, readable
            arriving = bbo.get_operation(operation_id, database="cell_b")
            assert arriving.status == OperationStatus.PAUSED, step
            assert (arriving.hold_reason or "").startswith("arriving from main"), step

        bbo.move_organization(ORGANIZATIONS[step], source="main", target="cell_b")

        assert copies(main, operation_id) == (0, 0), step
        assert copies(cell_b, operation_id)[0] == 1, step
        assert live_copies([main, cell_b], operation_id) == 1, step
        finished = bbo.run_to_completion(operation_id, database="cell_b")
        assert finished.status == OperationStatus.FINISHED, step
        assert visits(cell_b, ORGANIZATIONS[step]) == {1: ROWS_PER_ORGANIZATION}, step

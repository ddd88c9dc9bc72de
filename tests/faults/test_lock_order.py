"""One lock order everywhere — the operation row before the job row — so stages racing on the
same operations never deadlock; and scheduler steps that skip what is locked.

The stress test plays many stages at once in threads of this process, on a few operations, with
a 1 s lease so that leases expire under their feet: orchestrators (re-)dispatching jobs, runners
claiming and running them (sub-batch checkpoints), taking over jobs whose lease expired, and
scheduler passes recovering them. Before the order was fixed, a claim locked the job then the
operation while an orchestrator locked the operation then the job: DeadlockDetected.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.errors import InvalidTransition, LeaseLost
from dramatiq_bbo.jobs.run import run_job
from dramatiq_bbo.pipeline import scheduler
from dramatiq_bbo.pipeline.orchestrator import orchestrate
from tests.acceptance.pipeline_operations import PipelineVisit, make_counter_table
from tests.helpers import CELL_LOCAL_JOBS as JOBS
from tests.helpers import job_rows, operation_row, without_broker

OPERATIONS, TABLE_ROWS, SECONDS = 6, 3_000, 6.0


def deadlocked(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, psycopg.errors.DeadlockDetected):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def play(ids: list[Any], stop: threading.Event, errors: list[BaseException], seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        operation_id = rng.choice(ids)
        try:
            action = rng.random()
            if action < 0.4:
                orchestrate("main", operation_id, bbo.get_operation(operation_id).lease_owner)
            elif action < 0.9:
                claimable = [
                    j["id"] for j in job_rows_main(operation_id) if j["status"] in (0, 1, 2)
                ]
                if claimable:
                    run_job(operation_id, rng.choice(claimable), stop_check=lambda: None)
            else:
                scheduler.tick("main")
        except (InvalidTransition, LeaseLost):
            pass  # the race was lost cleanly: another stage holds it
        except BaseException as exc:
            errors.append(exc)


def job_rows_main(operation_id: Any) -> list[dict[str, Any]]:
    from dramatiq_bbo.db import REGISTRY

    with REGISTRY.connection("main") as conn:
        return job_rows(conn, operation_id)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_claims_orchestrations_and_passes_racing_on_the_same_operations_never_deadlock(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    # an orchestrator holds one pooled connection and reflects the table on another: room
    # for every racing thread, so that only locks are raced for
    with without_broker():  # the threads play the messages themselves
        bbo.configure(dsn=configured, lease_seconds=1, max_running_jobs=100, pool_max_size=40)
        ids = []
        for i in range(OPERATIONS):
            make_counter_table(conn, f"t{i}", TABLE_ROWS)
            # half of them hold each sub-batch open longer than the lease
            arguments = {"sleep_ms": 1_200 if i % 2 else 0}
            ids.append(
                bbo.enqueue(
                    PipelineVisit,
                    f"t{i}",
                    "id",
                    arguments=arguments,
                    batch_size=300,
                    sub_batch_size=50,
                ).operation.id
            )
        stop, errors = threading.Event(), []
        threads = [
            threading.Thread(target=play, args=(ids, stop, errors, seed)) for seed in range(8)
        ]
        for thread in threads:
            thread.start()
        time.sleep(SECONDS)  # the length of the race, not a wait for a result
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    assert not [e for e in errors if deadlocked(e)], errors
    assert not errors, errors
    recorded = conn.execute(
        f"SELECT count(*) FROM {JOBS} WHERE exception_class ILIKE '%%Deadlock%%'"
    ).fetchone()
    assert recorded == (0,)
    # the race did happen: jobs were claimed, run, taken over and checkpointed
    progressed = sum(operation_row(conn, i)["processed_tuple_count"] for i in ids)
    assert progressed > 0
    for i in range(OPERATIONS):  # no row visited twice, whatever raced
        assert conn.execute(f"SELECT max(visits) FROM t{i}").fetchone()[0] <= 1


def test_a_pass_skips_locked_rows_and_still_dispatches_the_rest(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    with without_broker():
        make_counter_table(conn, "stuck", 500)
        make_counter_table(conn, "free", 500)
        stuck = bbo.enqueue(PipelineVisit, "stuck", "id").operation.id
        free = bbo.enqueue(PipelineVisit, "free", "id").operation.id
        # the stuck operation's job: running under an expired lease, its row held by a
        # transaction that does not end (a frozen session)
        conn.execute(
            f"INSERT INTO {JOBS} (worker_id, worker_partition, status, attempts, batch_size,"
            " sub_batch_size, min_cursor, max_cursor, lease_owner, lease_expires_at)"
            " VALUES (%s, 1, 1, 1, 100, 10, '[1]', '[100]', 'frozen', now() - interval '1 min')",
            [stuck],
        )
        with psycopg.connect(configured) as holder:
            holder.execute(f"SELECT 1 FROM {JOBS} WHERE worker_id = %s FOR UPDATE", [stuck])
            started = time.monotonic()
            report = scheduler.tick("main")
            took = time.monotonic() - started
            assert report.recovered == 0  # skipped, not waited for
            assert str(free) in report.dispatched
            assert took < 3.0, f"the pass waited {took:.1f} s"
        report = scheduler.tick("main")  # the lock is gone: recovered now
        assert report.recovered == 1
        (job,) = job_rows(conn, stuck)
        assert (job["status"], job["attempts"], job["interruptions"]) == (0, 0, 1)


def test_past_max_interruptions_an_expired_lease_counts_as_a_failed_attempt(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    bbo.configure(dsn=configured, max_interruptions=2)
    make_counter_table(conn, "items", 100)
    operation_id = bbo.enqueue(PipelineVisit, "items", "id").operation.id
    conn.execute(
        f"INSERT INTO {JOBS} (worker_id, worker_partition, status, attempts, batch_size,"
        " sub_batch_size, min_cursor, max_cursor) VALUES (%s, 1, 0, 0, 100, 10, '[1]', '[100]')",
        [operation_id],
    )
    seen = []
    for _ in range(3):
        conn.execute(
            f"UPDATE {JOBS} SET status = 1, attempts = attempts + 1, lease_owner = 'dead',"
            " lease_expires_at = now() - interval '1 s' WHERE worker_id = %s",
            [operation_id],
        )
        assert scheduler.recover("main") == 1
        (job,) = job_rows(conn, operation_id)
        seen.append((job["status"], job["attempts"], job["interruptions"]))
    # two interruptions for free (attempt refunded), the third one is a failed attempt
    assert seen == [(0, 0, 1), (0, 0, 2), (2, 1, 3)]
    assert job["exception_class"] == "dramatiq_bbo.errors.TooManyInterruptions"
    assert bbo.list_jobs(operation_id)[0].interruptions == 3

"""The operator's views (bbo.operations, bbo.jobs, bbo.failed_jobs) and the reading API over
them: status, paused_by, progress and ETA for operations in every status, in both scopes,
each case built with real jobs run by ``run_to_completion``."""

from __future__ import annotations

import datetime
import json
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.errors import (
    InvalidArgument,
    InvalidOperationId,
    InvalidTransition,
    OperationNotFound,
)
from dramatiq_bbo.operate.summaries import (
    FailedJob,
    JobSummary,
    OperationSummary,
    failed_jobs,
    get_summary,
    recent_jobs,
)
from tests.integration.pipeline_support import drive, no_broker, run_one_job  # noqa: F401

ROWS = 1_000
BATCH = 100


class TouchItems(bbo.BaseOperation):
    """Sets ``touched`` on every row of its range."""

    name = "views.touch_items"
    pause_ms = 0
    interval_seconds = 0

    def process(self, sub_batch: Any) -> None:
        sub_batch.update(touched=True)


class TouchOneOwner(TouchItems):
    """The same, over one owner's rows only: a scoped walk."""

    name = "views.touch_one_owner"

    def scope(self, query: Any) -> Any:
        return query.where(self.table.owner == self.arguments["owner"])


class AlwaysFails(TouchItems):
    """Fails every job, so its operation ends failed."""

    name = "views.always_fails"

    def process(self, sub_batch: Any) -> None:
        raise RuntimeError("the disk is full")


@pytest.fixture
def items(conn: psycopg.Connection[Any]) -> str:
    conn.execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, owner int NOT NULL,"
        " touched boolean NOT NULL DEFAULT false)"
    )
    conn.execute("CREATE INDEX items_owner ON items (owner, id)")
    conn.execute(
        "INSERT INTO items (id, owner) SELECT i, i %% 10 FROM generate_series(1, %s) AS i", [ROWS]
    )
    conn.execute("ANALYZE items")
    return "items"


SCOPES = {
    "cell_local": {},
    "organization": {"organization_id": 7, "user_id": 70},
}


def enqueue(cls: type[bbo.BaseOperation], scope: str, **kwargs: Any) -> Any:
    kwargs.setdefault("sub_batch_size", 50)
    # jobs pinned at BATCH rows (run_to_completion grows them as the optimizer would)
    kwargs.setdefault("min_batch_size", BATCH)
    kwargs.setdefault("max_batch_size", BATCH)
    result = bbo.enqueue(cls, "items", "id", batch_size=BATCH, **SCOPES[scope], **kwargs)
    return result.operation.id


def stop_after(jobs_done: int, operation_id: Any) -> Any:
    """A stop check that stops once ``jobs_done`` jobs of the operation succeeded."""

    def check() -> str | None:
        done = [j for j in bbo.list_jobs(operation_id) if j.status == bbo.JobStatus.SUCCEEDED]
        return "test stop" if len(done) >= jobs_done else None

    return check


def view_row(conn: psycopg.Connection[Any], operation_id: Any) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM bbo.operations WHERE id = %s", [str(operation_id)])
        found = row.fetchone()
    assert found is not None
    return found


@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_a_queued_operation_shows_no_progress_and_no_eta(
    configured: str, items: str, conn: psycopg.Connection[Any], scope: str
) -> None:
    operation_id = enqueue(TouchItems, scope)
    row = view_row(conn, operation_id)
    assert row["status"] == "queued"
    assert row["scope"] == scope
    assert row["total_tuple_count"] == ROWS
    assert row["progress_percent"] == 0
    assert row["eta"] is None and row["paused_by"] is None
    assert (row["jobs_succeeded"], row["jobs_failed"], row["jobs_running"]) == (0, 0, 0)


@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_an_active_operation_shows_its_progress_rate_and_eta(
    configured: str, items: str, conn: psycopg.Connection[Any], scope: str
) -> None:
    operation_id = enqueue(TouchItems, scope)
    stopped = bbo.run_to_completion(operation_id, stop_check=stop_after(3, operation_id))
    assert stopped.status == bbo.OperationStatus.ACTIVE
    row = view_row(conn, operation_id)
    assert row["status"] == "active"
    processed = row["processed_tuple_count"]
    assert 3 * BATCH <= processed < 4 * BATCH  # the fourth job stops at a checkpoint
    assert row["progress_percent"] == round(100 * processed / ROWS, 1)
    assert row["jobs_succeeded"] == 3
    assert row["rows_per_second"] > 0
    left = (ROWS - processed) / row["rows_per_second"]
    assert abs(row["eta"].total_seconds() - left) <= 1
    summary = get_summary(operation_id)
    assert summary.status == "active" and summary.eta == row["eta"]


@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_a_finished_operation_is_complete_with_a_zero_eta(
    configured: str, items: str, conn: psycopg.Connection[Any], scope: str
) -> None:
    operation_id = enqueue(TouchItems, scope)
    bbo.run_to_completion(operation_id)
    row = view_row(conn, operation_id)
    assert row["status"] == "finished"
    assert row["progress_percent"] == 100
    assert row["total_tuple_count"] == row["processed_tuple_count"] == ROWS
    assert row["eta"] == datetime.timedelta(0)
    assert row["jobs_succeeded"] == ROWS // BATCH
    assert row["finished_at"] is not None


def test_list_operations_filters_and_orders_newest_first(
    configured: str, items: str, conn: psycopg.Connection[Any]
) -> None:
    local = enqueue(TouchItems, "cell_local")
    scoped = enqueue(TouchItems, "organization")
    bbo.run_to_completion(local)
    listed = bbo.list_operations()
    assert [s.id for s in listed] == [str(scoped), str(local)]
    assert [s.id for s in bbo.list_operations(status="finished")] == [str(local)]
    assert [s.id for s in bbo.list_operations(organization_id=7)] == [str(scoped)]
    assert [s.id for s in bbo.list_operations(scope="cell_local")] == [str(local)]
    assert bbo.list_operations(class_name="views.nothing") == []
    assert len(bbo.list_operations(limit=1)) == 1
    as_json = json.loads(json.dumps([s.as_dict() for s in listed]))
    assert as_json[0]["id"] == str(scoped) and as_json[0]["status"] == "queued"
    assert set(as_json[0]) == {f for f in OperationSummary.__dataclass_fields__}


@pytest.mark.parametrize(
    "filters",
    [
        {"status": "running"},
        {"scope": "global"},
        {"limit": 0},
        {"limit": "10"},
        {"organization_id": "seven"},
        {"class_name": ""},
    ],
)
def test_list_operations_refuses_a_bad_filter(configured: str, filters: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        bbo.list_operations(**filters)


def test_the_reading_functions_refuse_unknown_or_malformed_ids(configured: str) -> None:
    with pytest.raises(bbo.errors.UnknownDatabase):
        bbo.list_operations(database="nowhere")
    with pytest.raises(OperationNotFound):
        get_summary(424242)
    with pytest.raises(OperationNotFound):
        recent_jobs("00000000-0000-0000-0000-000000000001")
    with pytest.raises(InvalidOperationId):
        get_summary("not-an-id")
    with pytest.raises(OperationNotFound):
        failed_jobs(operation_id=424242)
    with pytest.raises(InvalidArgument):
        failed_jobs(since=datetime.timedelta(hours=-1))
    with pytest.raises(InvalidArgument):
        failed_jobs(since="1h")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        recent_jobs(424242, limit=-1)


def test_view_columns_match_the_snapshots(conn: psycopg.Connection[Any]) -> None:
    for view, cls in (
        ("operations", OperationSummary),
        ("jobs", JobSummary),
        ("failed_jobs", FailedJob),
    ):
        cur = conn.execute(f"SELECT * FROM bbo.{view} LIMIT 0")
        assert [d.name for d in cur.description or []] == list(cls.__dataclass_fields__), view


@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_a_paused_operation_keeps_its_progress_and_says_paused_by_manual(
    configured: str, items: str, conn: psycopg.Connection[Any], scope: str
) -> None:
    operation_id = enqueue(TouchItems, scope)
    bbo.run_to_completion(operation_id, stop_check=stop_after(2, operation_id))
    bbo.pause(operation_id)
    row = view_row(conn, operation_id)
    assert (row["status"], row["paused_by"]) == ("paused", "manual")
    assert row["progress_percent"] == round(100 * row["processed_tuple_count"] / ROWS, 1) > 0
    assert row["eta"] is None
    assert row["rows_per_second"] > 0  # how fast it went, while it ran


@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_a_failed_operation_keeps_its_last_error_and_lists_its_failed_jobs(
    configured: str, items: str, conn: psycopg.Connection[Any], scope: str
) -> None:
    operation_id = enqueue(AlwaysFails, scope)
    ended = bbo.run_to_completion(operation_id)
    assert ended.status == bbo.OperationStatus.FAILED
    row = view_row(conn, operation_id)
    assert row["status"] == "failed"
    assert row["processed_tuple_count"] == 0 and row["progress_percent"] == 0
    assert row["eta"] is None and row["paused_by"] is None
    assert row["jobs_failed"] >= 1 and row["jobs_succeeded"] == 0
    assert row["last_error_class"] == "RuntimeError"
    assert row["last_error_message"] == "the disk is full"
    assert row["last_error_at"] is not None
    failures = failed_jobs(since=datetime.timedelta(hours=1), operation_id=operation_id)
    assert len(failures) == row["jobs_failed"]
    assert {f.exception_class for f in failures} == {"RuntimeError"}
    assert all(f.attempts >= 1 and f.min_cursor and f.max_cursor for f in failures)
    assert failures[0].as_dict()["failed_at"] is not None
    assert failed_jobs(operation_id=enqueue(TouchItems, scope)) == []


@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_a_cancelled_operation_shows_no_eta_and_its_partial_progress(
    configured: str, items: str, conn: psycopg.Connection[Any], scope: str
) -> None:
    operation_id = enqueue(TouchItems, scope)
    bbo.run_to_completion(operation_id, stop_check=stop_after(1, operation_id))
    assert bbo.cancel(operation_id).status == bbo.OperationStatus.CANCELLED
    row = view_row(conn, operation_id)
    assert row["status"] == "cancelled" and row["finished_at"] is not None
    assert 0 < row["progress_percent"] < 100
    assert row["eta"] is None and row["paused_by"] is None


@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_a_health_hold_and_a_disabled_class_say_what_stops_the_operation(
    configured: str, items: str, conn: psycopg.Connection[Any], scope: str
) -> None:
    operation_id = enqueue(TouchItems, scope)
    bbo.run_to_completion(operation_id, stop_check=stop_after(1, operation_id))
    table = "background_operation_workers" + ("" if scope == "organization" else "_cell_local")
    conn.execute(
        f"UPDATE bbo.{table} SET on_hold_until = now() + interval '10 minutes',"
        " hold_reason = 'wal_rate: 80 MB/s over the last minute' WHERE id = %s",
        [operation_id],
    )
    row = view_row(conn, operation_id)
    assert (row["status"], row["paused_by"]) == ("active", "health")
    assert row["hold_reason"].startswith("wal_rate:") and row["on_hold_until"] is not None
    conn.execute("INSERT INTO bbo.disabled_classes (job_class_name) VALUES (%s)", [TouchItems.name])
    assert view_row(conn, operation_id)["paused_by"] == "disabled class"
    conn.execute(f"UPDATE bbo.{table} SET on_hold_until = now() - interval '1 second'")
    conn.execute("DELETE FROM bbo.disabled_classes")
    assert view_row(conn, operation_id)["paused_by"] is None  # an expired hold stops nothing


def _run_all_but_the_end(operation_id: Any) -> Any:
    """Run every job of the operation but leave it active: the last job is interrupted
    after a sub-batch, then run to its end by itself (as a worker would), so the range is
    walked and only the orchestrator's ending is missing. The last job's record."""
    from dramatiq_bbo.jobs.run import run_job

    bbo.run_to_completion(operation_id, stop_check=stop_after(ROWS // BATCH - 1, operation_id))
    last = bbo.list_jobs(operation_id)[-1]
    assert last.status == bbo.JobStatus.PENDING
    return last, run_job


@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_an_operation_cancelled_after_its_last_row_is_reported_finished(
    configured: str, items: str, conn: psycopg.Connection[Any], scope: str
) -> None:
    operation_id = enqueue(TouchItems, scope)
    last, run_job = _run_all_but_the_end(operation_id)
    assert run_job(operation_id, last.id).status == bbo.JobStatus.SUCCEEDED
    assert bbo.get_operation(operation_id).status == bbo.OperationStatus.ACTIVE
    cancelled = bbo.cancel(operation_id)
    assert cancelled.status == bbo.OperationStatus.FINISHED
    row = view_row(conn, operation_id)
    assert (row["status"], row["progress_percent"]) == ("finished", 100)
    assert conn.execute("SELECT count(*) FROM items WHERE NOT touched").fetchone() == (0,)


def test_a_cancel_while_the_last_job_runs_to_its_end_is_reported_finished(
    configured: str, items: str, conn: psycopg.Connection[Any]
) -> None:
    operation_id = enqueue(TouchItems, "cell_local", sub_batch_size=10)
    last, run_job = _run_all_but_the_end(operation_id)
    cancels: list[Any] = []

    def cancel_once() -> None:  # the job keeps going: its runner does not re-read the status
        if not cancels:
            cancels.append(bbo.cancel(operation_id))

    assert run_job(operation_id, last.id, stop_check=cancel_once).status == bbo.JobStatus.SUCCEEDED
    assert cancels[0].status == bbo.OperationStatus.CANCELLED  # a job was still running
    assert view_row(conn, operation_id)["status"] == "finished"
    assert bbo.get_operation(operation_id).status == bbo.OperationStatus.FINISHED


def test_a_cancel_that_leaves_rows_unprocessed_stays_cancelled(
    configured: str, items: str, conn: psycopg.Connection[Any]
) -> None:
    operation_id = enqueue(TouchItems, "cell_local")
    last, _ = _run_all_but_the_end(operation_id)
    assert bbo.cancel(operation_id).status == bbo.OperationStatus.CANCELLED
    assert view_row(conn, operation_id)["status"] == "cancelled"


@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_a_scoped_walk_is_sized_by_the_planner_and_ends_at_100_percent(
    configured: str, items: str, conn: psycopg.Connection[Any], scope: str
) -> None:
    operation_id = enqueue(TouchOneOwner, scope, arguments={"owner": 3})
    queued = view_row(conn, operation_id)
    assert 50 <= queued["total_tuple_count"] <= 200  # 100 rows in scope, not the table's 1000
    bbo.run_to_completion(operation_id, stop_check=stop_after(0, operation_id))
    assert view_row(conn, operation_id)["progress_percent"] < 100
    bbo.run_to_completion(operation_id)
    row = view_row(conn, operation_id)
    assert row["status"] == "finished" and row["progress_percent"] == 100
    assert row["total_tuple_count"] == row["processed_tuple_count"] == ROWS // 10


def test_recent_jobs_are_newest_first_with_duration_and_rate(
    configured: str, items: str, conn: psycopg.Connection[Any]
) -> None:
    operation_id = enqueue(TouchItems, "organization")
    bbo.run_to_completion(operation_id)
    jobs = recent_jobs(operation_id, limit=3)
    assert len(jobs) == 3
    assert [j.created_at for j in jobs] == sorted((j.created_at for j in jobs), reverse=True)
    assert all(j.status == "succeeded" and j.processed_tuple_count == BATCH for j in jobs)
    assert all(j.duration is not None and (j.rows_per_second or 0) > 0 for j in jobs)
    as_json = json.loads(json.dumps(jobs[0].as_dict()))
    assert as_json["operation_id"] == str(operation_id) and as_json["duration"] > 0


def test_every_query_of_the_monitoring_doc_runs_and_sees_the_operations(
    configured: str, items: str, conn: psycopg.Connection[Any]
) -> None:
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "monitoring.md").read_text()
    queries = re.findall(r"```sql\n(.*?)```", doc, flags=re.DOTALL)
    assert len(queries) >= 10
    bbo.run_to_completion(enqueue(AlwaysFails, "organization"))
    running = enqueue(TouchItems, "cell_local")
    bbo.run_to_completion(running, stop_check=stop_after(2, running))
    answered = [conn.execute(text).fetchall() for text in queries]
    assert answered[0][0][0] == str(running)  # what is running now
    assert answered[2] and answered[3]  # what failed today; operations that ended failed
    assert answered[9][0][:2] == (AlwaysFails.name, "RuntimeError")


def _set_estimate(conn: psycopg.Connection[Any], operation_id: Any, total: int) -> None:
    conn.execute(
        "UPDATE bbo.background_operation_workers_cell_local SET total_tuple_count = %s"
        " WHERE id = %s",
        [total, operation_id],
    )


def test_an_estimate_too_low_is_raised_as_jobs_show_rows_remain(
    configured: str, items: str, conn: psycopg.Connection[Any]
) -> None:
    operation_id = enqueue(TouchItems, "cell_local")
    _set_estimate(conn, operation_id, 150)  # statistics that lag far behind the table
    bbo.run_to_completion(operation_id, stop_check=stop_after(3, operation_id))
    row = view_row(conn, operation_id)
    assert row["status"] == "active"
    # the fourth job was a full batch before the range's end: more rows than that remain
    assert row["total_tuple_count"] >= 4 * BATCH + 1
    assert row["progress_percent"] < 100


def test_an_estimate_too_high_is_cut_when_the_last_batch_is_handed_out(
    configured: str, items: str, conn: psycopg.Connection[Any]
) -> None:
    operation_id = enqueue(TouchItems, "cell_local")
    _set_estimate(conn, operation_id, 50 * ROWS)
    _run_all_but_the_end(operation_id)
    row = view_row(conn, operation_id)
    assert row["status"] == "active"
    assert row["total_tuple_count"] == ROWS  # every batch but the last was full
    assert row["progress_percent"] >= 90


def test_a_running_job_is_counted_and_shown_running_with_its_duration_so_far(
    configured: str, items: str, conn: psycopg.Connection[Any]
) -> None:
    operation_id = enqueue(TouchItems, "organization", sub_batch_size=25)
    seen: list[tuple[Any, ...]] = []

    def look() -> str | None:
        row = view_row(conn, operation_id)
        job = recent_jobs(operation_id, limit=1)[0]
        seen.append((row["jobs_running"], job.status, job.duration, row["last_job_at"]))
        return "seen" if len(seen) >= 2 else None

    bbo.run_to_completion(operation_id, stop_check=look)
    running, status, duration, last_job_at = seen[-1]
    assert (running, status) == (1, "running")
    assert duration is not None and duration >= datetime.timedelta(0)
    assert last_job_at is not None
    assert view_row(conn, operation_id)["jobs_running"] == 0  # handed back at its checkpoint


def test_list_operations_takes_a_status_enum_and_an_organization_id_as_text(
    configured: str, items: str
) -> None:
    operation_id = enqueue(TouchItems, "organization")
    assert [s.id for s in bbo.list_operations(status=bbo.OperationStatus.QUEUED)] == [
        str(operation_id)
    ]
    summary = bbo.list_operations(organization_id="7", status=" Queued ")[0]
    assert summary.operation_id == operation_id
    assert summary.as_dict()["organization_id"] == 7


def test_the_first_job_gives_a_rate_and_an_eta_while_it_runs(
    configured: str, items: str, conn: psycopg.Connection[Any]
) -> None:
    operation_id = enqueue(TouchItems, "cell_local", sub_batch_size=10)
    seen: list[dict[str, Any]] = []

    def look() -> str | None:
        seen.append(view_row(conn, operation_id))
        return "seen" if seen[-1]["processed_tuple_count"] >= 30 else None

    bbo.run_to_completion(operation_id, stop_check=look)
    row = seen[-1]
    assert (row["jobs_succeeded"], row["jobs_running"]) == (0, 1)
    assert row["rows_per_second"] > 0 and row["eta"] is not None


def test_a_crawling_rate_gives_an_eta_of_at_most_a_century_rather_than_an_error(
    configured: str, items: str, conn: psycopg.Connection[Any]
) -> None:
    operation_id = enqueue(TouchItems, "cell_local")
    bbo.run_to_completion(operation_id, stop_check=stop_after(1, operation_id))
    _set_estimate(conn, operation_id, 2**62)
    conn.execute(
        "UPDATE bbo.background_operation_jobs_cell_local"
        " SET started_at = finished_at - interval '100 years' WHERE worker_id = %s",
        [operation_id],
    )
    assert view_row(conn, operation_id)["eta"] == datetime.timedelta(seconds=3155760000)


def test_the_identifier_is_the_one_logs_and_metrics_use_whatever_the_table_name(
    configured: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute('CREATE SCHEMA "Sales"')
    conn.execute(
        'CREATE TABLE "Sales"."order" (id bigint PRIMARY KEY, touched boolean DEFAULT false)'
    )
    conn.execute('INSERT INTO "Sales"."order" (id) VALUES (1), (2)')
    record = bbo.enqueue(TouchItems, '"Sales".order', "id").operation
    assert (
        get_summary(record.id).identifier
        == record.identifier
        == ('views.touch_items/"Sales".order.id')
    )


# -- through the pipeline's own stages (orchestrator, then runner; no broker) -----------------


@pytest.mark.usefixtures("no_broker")
@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_the_pipeline_stages_leave_the_same_view_of_a_finished_and_a_failed_operation(
    configured: str, items: str, conn: psycopg.Connection[Any], scope: str
) -> None:
    done = enqueue(TouchItems, scope)
    failing = enqueue(AlwaysFails, scope)
    assert drive(done)[0].status == bbo.OperationStatus.FINISHED
    assert drive(failing)[0].status == bbo.OperationStatus.FAILED
    finished, failed = view_row(conn, done), view_row(conn, failing)
    assert (finished["status"], finished["progress_percent"], finished["eta"]) == (
        "finished",
        100,
        datetime.timedelta(0),
    )
    assert finished["jobs_succeeded"] >= 1 and finished["last_error_class"] is None
    assert finished["total_tuple_count"] == finished["processed_tuple_count"] == ROWS
    assert (failed["status"], failed["last_error_class"]) == ("failed", "RuntimeError")


@pytest.mark.usefixtures("no_broker")
def test_on_the_pipeline_the_last_job_finishes_the_walked_operation_before_any_cancel(
    configured: str, items: str, conn: psycopg.Connection[Any]
) -> None:
    operation_id = enqueue(TouchItems, "organization")
    walked = 0
    while walked < ROWS:  # the optimizer may grow the batches between jobs
        outcome = run_one_job(operation_id)
        assert outcome is not None and outcome.status == bbo.JobStatus.SUCCEEDED
        walked += outcome.rows
    # no window left for a cancel between the last row and the end: the runner ended it
    assert bbo.get_operation(operation_id).status == bbo.OperationStatus.FINISHED
    with pytest.raises(InvalidTransition, match="finished"):
        bbo.cancel(operation_id)
    assert view_row(conn, operation_id)["status"] == "finished"

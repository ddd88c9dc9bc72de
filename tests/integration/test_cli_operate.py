"""The operator commands of ``dramatiq-bbo`` on a real Postgres: each one's happy path, and
bad input refused with one line on stderr, the right exit code, and nothing changed.

Most tests run the command in this process (``main(argv)``: the same code the installed
command runs, without a Python start-up per call), so the operation classes the operations
need are registered; two run the installed command as a subprocess to pin what an operator's
shell sees (``--dsn`` after the command, ``list --json``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import logs
from dramatiq_bbo.cli.main import main
from dramatiq_bbo.state.records import OperationStatus
from tests.helpers import operation_row, wait_until
from tests.integration.steering_support import (
    DisableItself,
    FailWhileBroken,
    Visit,
    events,
    make_counters,
    named,
    state,
)

__all__ = ["events"]  # the fixture, re-exported for pytest


def enqueue(dsn: str, cls: type[bbo.BaseOperation] = Visit, **sizes: Any) -> str:
    """An operation over ``counters``, enqueued with the library configured only meanwhile."""
    bbo.configure(dsn=dsn, max_attempts=1)
    try:
        sizes = {"batch_size": 100, "sub_batch_size": 20, **sizes}
        return str(bbo.enqueue(cls, "counters", "id", **sizes).operation.id)
    finally:
        bbo.reset()


def run_through(dsn: str, operation_id: str) -> OperationStatus:
    bbo.configure(dsn=dsn, max_attempts=1)
    try:
        return bbo.run_to_completion(operation_id).status
    finally:
        bbo.reset()


@pytest.fixture
def counters(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    make_counters(conn, 300)
    return conn


@pytest.fixture
def failed(dsn: str, counters: psycopg.Connection[Any]) -> str:
    """A failed operation: the job holding row 150 failed (once; max_attempts=1)."""
    counters.execute("CREATE TABLE broken (id bigint PRIMARY KEY)")
    counters.execute("INSERT INTO broken VALUES (150)")
    operation_id = enqueue(dsn, FailWhileBroken)
    assert run_through(dsn, operation_id) == OperationStatus.FAILED
    return operation_id


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# -- reading -------------------------------------------------------------------------------------


def test_list_prints_an_aligned_table_newest_first_json_and_markdown(
    dsn: str, counters: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    first = enqueue(dsn, Visit)
    second = enqueue(dsn, FailWhileBroken)

    code, out, _ = cli(capsys, "list", "--dsn", dsn)
    assert code == 0
    header, rule, *rows = out.splitlines()
    assert header.split()[:4] == ["ID", "CLASS", "TABLE", "STATUS"]
    assert set(rule.strip()) == {"-"}
    assert [row.split()[0] for row in rows] == [second, first]
    assert all(row.split()[3] == "queued" for row in rows)

    code, out, _ = cli(capsys, "list", "--json", "--dsn", dsn)
    listed = json.loads(out)
    assert code == 0 and [(o["id"], o["status"]) for o in listed] == [
        (second, "queued"),
        (first, "queued"),
    ]
    assert listed[0]["job_class_name"] == FailWhileBroken.name

    code, out, _ = cli(capsys, "--dsn", dsn, "list", "--markdown", "--class", Visit.name)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("| ID | CLASS |") and len(lines) == 3
    assert f"| {first} | {Visit.name} |" in lines[2]


def test_list_filters_by_status_scope_and_limit(
    dsn: str, counters: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    done = enqueue(dsn)
    assert run_through(dsn, done) == OperationStatus.FINISHED
    waiting = enqueue(dsn, batch_size=50)

    def ids(*filters: str) -> list[str]:
        code, out, _ = cli(capsys, "list", "--json", "--dsn", dsn, *filters)
        assert code == 0
        return [o["id"] for o in json.loads(out)]

    assert ids("--status", "finished") == [done]
    assert ids("--status", "queued") == [waiting]
    assert ids("--scope", "organization") == []
    assert ids("--limit", "1") == [waiting]
    code, out, _ = cli(capsys, "list", "--status", "failed", "--dsn", dsn)
    assert (code, out.strip()) == (0, "no operations")


def test_an_organization_scoped_operation_is_found_by_its_uuid(
    dsn: str, counters: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    enqueue(dsn)  # a cell-local one beside it
    scoped = enqueue(dsn, organization_id=7, user_id=70)
    assert uuid.UUID(scoped)

    code, out, _ = cli(capsys, "list", "--organization", "7", "--json", "--dsn", dsn)
    (listed,) = json.loads(out)
    assert code == 0 and (listed["id"], listed["scope"]) == (scoped, "organization")
    code, out, _ = cli(capsys, "list", "--scope", "organization", "--json", "--dsn", dsn)
    assert [o["id"] for o in json.loads(out)] == [scoped]

    assert cli(capsys, "pause", scoped, "--dsn", dsn)[0] == 0
    code, out, _ = cli(capsys, "show", scoped, "--json", "--dsn", dsn)
    assert code == 0 and json.loads(out)["operation"]["status"] == "paused"
    code, _, err = cli(capsys, "show", str(uuid.uuid4()), "--dsn", dsn)
    assert code == 1 and "no operation" in err


def test_show_prints_the_operation_and_its_last_jobs(
    dsn: str, counters: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    operation_id = enqueue(dsn, min_batch_size=100, max_batch_size=100)  # jobs pinned
    run_through(dsn, operation_id)

    code, out, _ = cli(capsys, "show", operation_id, "--dsn", dsn)
    assert code == 0
    assert "status                 finished" in out
    assert "progress_percent       100.0%" in out
    assert "last jobs" in out and out.count(" succeeded ") == 3  # 300 rows, batches of 100

    code, out, _ = cli(capsys, "show", operation_id, "--json", "--jobs", "2", "--dsn", dsn)
    shown = json.loads(out)
    assert code == 0 and set(shown) == {"operation", "jobs"}
    assert shown["operation"]["id"] == operation_id and len(shown["jobs"]) == 2
    assert {job["status"] for job in shown["jobs"]} == {"succeeded"}


def test_failures_lists_the_failed_jobs_with_their_error(
    dsn: str, failed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "failures", "--since", "1h", "--dsn", dsn)
    assert code == 0
    assert "RuntimeError: a row between" in out and failed in out

    code, out, _ = cli(capsys, "failures", "--json", "--operation", failed, "--dsn", dsn)
    (failure,) = json.loads(out)
    assert code == 0 and failure["operation_id"] == failed
    assert failure["exception_class"] == "RuntimeError" and failure["attempts"] == 1


# -- steering ------------------------------------------------------------------------------------


def test_pause_resume_and_cancel_exit_0_and_log_who_did_it(
    dsn: str,
    counters: psycopg.Connection[Any],
    capsys: pytest.CaptureFixture[str],
    events: list[dict[str, Any]],
) -> None:
    operation_id = enqueue(dsn)

    assert cli(capsys, "pause", operation_id, "--dsn", dsn)[:2] == (
        0,
        f"operation {operation_id} paused: its job stops at the next checkpoint (now paused)\n",
    )
    assert cli(capsys, "--dsn", dsn, "resume", operation_id)[0] == 0
    code, out, _ = cli(capsys, "cancel", operation_id, "--json", "--dsn", dsn)
    assert code == 0 and json.loads(out)["operation"]["status"] == "cancelled"

    for message in (logs.OPERATION_PAUSED, logs.OPERATION_RESUMED, logs.OPERATION_CANCELLED):
        (event,) = named(events, message)
        assert event["by"].startswith("cli:") and event["operation_id"] == operation_id


def test_retry_requeues_the_failed_jobs(
    dsn: str, failed: str, conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "retry", failed, "--dsn", dsn)
    assert code == 0 and "retried" in out and "(now active)" in out
    assert conn.execute(
        "SELECT count(*) FROM bbo.background_operation_jobs_cell_local"
        " WHERE worker_id = %s AND status = 2",
        [int(failed)],
    ).fetchone() == (0,)


def test_set_changes_the_sizes_from_the_next_job(
    dsn: str, counters: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    operation_id = enqueue(dsn)
    code, out, _ = cli(
        capsys, "set", operation_id, "--batch-size", "250", "--pause-ms", "5", "--dsn", dsn
    )
    assert code == 0 and "batch_size=250" in out
    code, out, _ = cli(capsys, "show", operation_id, "--json", "--dsn", dsn)
    shown = json.loads(out)["operation"]
    assert (shown["batch_size"], shown["sub_batch_size"], shown["pause_ms"]) == (250, 20, 5)


def test_disable_disabled_and_enable(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "disable", "Purge", "--reason", "bad deploy", "--dsn", dsn)
    assert code == 0 and out.startswith("class Purge disabled")
    code, out, _ = cli(capsys, "disabled", "--json", "--dsn", dsn)
    (entry,) = json.loads(out)
    assert (entry["job_class_name"], entry["reason"]) == ("Purge", "bad deploy")
    assert entry["disabled_by"].startswith("cli:")
    assert cli(capsys, "enable", "Purge", "--dsn", dsn)[0] == 0
    assert cli(capsys, "disabled", "--dsn", dsn)[1].strip() == "no disabled classes"


def test_finalize_runs_the_rest_now_with_a_progress_bar(
    dsn: str, counters: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    operation_id = enqueue(dsn)
    code, out, err = cli(capsys, "finalize", operation_id, "--json", "--dsn", dsn)
    assert code == 0, err
    assert json.loads(out)["operation"]["status"] == "finished"
    assert f"operation {operation_id}" in err and "300/300" in err
    assert counters.execute("SELECT min(visits), max(visits) FROM counters").fetchone() == (1, 1)


def test_an_operation_enqueued_under_a_named_database_is_steered_and_finalized(
    dsn: str, counters: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    bbo.configure(databases={"ci": dsn})
    try:
        operation_id = str(bbo.enqueue(Visit, "counters", "id", database="ci").operation.id)
    finally:
        bbo.reset()

    assert cli(capsys, "--database", "ci", "pause", operation_id, "--dsn", dsn)[0] == 0
    code, out, _ = cli(capsys, "list", "--json", "--database", "ci", "--dsn", dsn)
    assert code == 0 and json.loads(out)[0]["database_name"] == "ci"
    # finalize runs it under the name it was enqueued with, whatever --database says
    code, out, err = cli(capsys, "finalize", operation_id, "--json", "--dsn", dsn)
    assert code == 0, err
    assert json.loads(out)["operation"]["status"] == "finished"


# -- bad input: one line, the exit code, nothing changed -------------------------------------------

BAD_INPUT: list[tuple[str, list[str], int, str]] = [
    ("list-bad-status", ["list", "--status", "running"], 2, "unknown status 'running'"),
    ("list-bad-scope", ["list", "--scope", "global"], 2, "unknown scope"),
    ("list-zero-limit", ["list", "--limit", "0"], 2, "--limit must be 1..10,000"),
    ("list-bad-organization", ["list", "--organization", "acme"], 2, "--organization"),
    ("list-json-and-markdown", ["list", "--json", "--markdown"], 2, "at most one of"),
    ("show-unknown", ["show", "999"], 1, "no operation '999'"),
    ("show-malformed", ["show", "abc"], 2, "not an operation id"),
    ("show-missing-id", ["show"], 2, "Missing argument 'ID'"),
    ("failures-bad-since", ["failures", "--since", "5x"], 2, "not a duration"),
    ("failures-negative-since", ["failures", "--since", "-1h"], 2, "not a duration"),
    ("pause-unknown", ["pause", "999"], 1, "no operation '999'"),
    ("pause-finished", ["pause", "{finished}"], 1, "it is finished"),
    ("resume-finished", ["resume", "{finished}"], 1, "cannot resume"),
    ("resume-queued", ["resume", "{queued}"], 1, "it is queued"),
    ("cancel-finished", ["cancel", "{finished}"], 1, "cannot cancel"),
    ("retry-no-failed-job", ["retry", "{finished}"], 1, "cannot retry"),
    ("set-nothing", ["set", "{queued}"], 2, "at least one of"),
    ("set-negative", ["set", "{queued}", "--batch-size", "-5"], 2, "--batch-size"),
    ("set-nan-interval", ["set", "{queued}", "--interval", "nan"], 2, "--interval"),
    ("set-inverted", ["set", "{queued}", "--sub-batch-size", "500"], 1, "larger than batch"),
    ("set-finished", ["set", "{finished}", "--batch-size", "10"], 1, "cannot update"),
    ("disable-empty", ["disable", ""], 2, "not an operation class name"),
    ("disable-twice", ["disable", "Already"], 1, "already disabled"),
    ("enable-not-disabled", ["enable", "Nobody"], 1, "Nobody"),
    ("finalize-finished", ["finalize", "{finished}"], 1, "cannot finalize"),
    ("watch-zero-every", ["watch", "--every", "0"], 2, "--every"),
    ("disabled-extra-argument", ["disabled", "Purge"], 2, "unexpected extra argument"),
    ("migrate-unknown-option", ["migrate", "--force"], 2, "No such option"),
    ("unknown-command", ["frobnicate"], 2, "No such command"),
]


@pytest.mark.parametrize(
    ("case", "argv", "code", "message"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_refused_with_one_line_and_nothing_changes(
    dsn: str,
    counters: psycopg.Connection[Any],
    capsys: pytest.CaptureFixture[str],
    case: str,
    argv: list[str],
    code: int,
    message: str,
) -> None:
    finished = enqueue(dsn)
    run_through(dsn, finished)
    queued = enqueue(dsn)
    main(["disable", "Already", "--dsn", dsn])
    capsys.readouterr()
    before = state(counters)

    argv = [word.format(finished=finished, queued=queued) for word in argv]
    result, out, err = cli(capsys, *argv, "--dsn", dsn)

    assert result == code, err
    assert message in err
    assert err.startswith("dramatiq-bbo: error: ") and err.count("\n") == 1, err
    assert out == ""
    assert state(counters) == before


def test_no_database_is_a_usage_error(capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
    monkeypatch.delenv("BBO_DSN", raising=False)
    code, _, err = cli(capsys, "list")
    assert code == 2 and "--dsn" in err and "BBO_DSN" in err


# -- the installed command, as a shell runs it ----------------------------------------------


def test_the_command_takes_the_dsn_after_the_command_and_prints_json(
    dsn: str, counters: psycopg.Connection[Any]
) -> None:
    operation_id = enqueue(dsn)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dramatiq_bbo.cli.main", *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )

    paused = run("pause", operation_id, "--dsn", dsn)
    assert paused.returncode == 0, paused.stderr
    listed = run("list", "--json", "--dsn", dsn)
    assert listed.returncode == 0, listed.stderr
    assert [(o["id"], o["status"]) for o in json.loads(listed.stdout)] == [(operation_id, "paused")]


# -- finalize in a shell: the operation's class imported with --import, Ctrl-C ------------------


def finalize_process(dsn: str, operation_id: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dramatiq_bbo.cli.main", "finalize", operation_id, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "BBO_DSN": dsn},
    )


def test_finalize_in_a_shell_imports_the_class_and_stops_cleanly_on_ctrl_c(
    dsn: str, counters: psycopg.Connection[Any]
) -> None:
    # 15 sub-batches of 20 rows, each at least 0.12 s: time to interrupt it
    slow = enqueue(dsn, DisableItself)
    unknown = run_cli_finalize(dsn, slow)
    assert unknown.returncode == 1 and "steering.disable_itself" in unknown.stderr

    process = finalize_process(dsn, slow, "--import", "tests.integration.steering_support")
    try:
        wait_until(lambda: operation_row(counters, int(slow))["processed_tuple_count"] > 0)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    row = operation_row(counters, int(slow))
    assert row["status"] == int(OperationStatus.ACTIVE) and row["processed_tuple_count"] < 300
    visited = counters.execute("SELECT count(*) FILTER (WHERE visits = 1) FROM counters")
    assert visited.fetchone() == (row["processed_tuple_count"],)  # nothing half done


def run_cli_finalize(dsn: str, operation_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    process = finalize_process(dsn, operation_id, *extra)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_finalize_refuses_a_module_it_cannot_import(
    dsn: str, counters: psycopg.Connection[Any]
) -> None:
    operation_id = enqueue(dsn)
    before = state(counters)
    result = run_cli_finalize(dsn, operation_id, "--import", "no_such_module_here")
    assert result.returncode == 2
    assert "--import: cannot import 'no_such_module_here'" in result.stderr
    assert state(counters) == before

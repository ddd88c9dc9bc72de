"""The examples of ``examples/`` run to completion on a real Postgres, with real dramatiq
workers where the example starts them, and do what their docstring says.

(``security_attributes_bulk_update.py`` and ``chatops_bot.py`` have their own test modules:
``test_security_attributes_example.py`` and ``test_chatops_bot.py``.)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from dramatiq_bbo.pipeline import schedules

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def forget_schedules() -> Iterator[None]:
    """The examples declare cron schedules in this process: forget them afterwards."""
    before = {declared.actor_name for declared in schedules.scheduled()}
    yield
    for declared in schedules.scheduled():
        if declared.actor_name not in before:
            schedules.unschedule(declared.actor_name)


def test_unconfirmed_emails_purge_deletes_the_stale_addresses_once(
    dsn: str, forget_schedules: None, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example("unconfirmed_emails_purge")
    report = example.run(dsn, rows=4_000, timeout=60)

    before, after = report["before"], report["after"]
    # every fourth address is unconfirmed; of those, ages 8..19 days are past the week
    assert before["stale"] > 0 and after["stale"] == 0
    assert before["emails"] - after["emails"] == before["stale"]
    operation = report["operation"]
    assert operation.status == "finished" and operation.scope == "cell_local"
    # the second firing of the same slot returned the finished operation: no second purge
    assert report["again"].duplicate and str(report["again"].operation.id) == operation.id
    assert "stale left: 0" in capsys.readouterr().out


def test_inactive_projects_deletion_resumes_after_a_deploy_and_warns_each_owner_once(
    dsn: str, forget_schedules: None
) -> None:
    example = load_example("inactive_projects_deletion")
    report = example.run(dsn, projects=2_000, timeout=60, quiet=True)

    # stopped mid-walk by the deploy, at a checkpoint; the next firing returned it
    stopped = report["stopped"]
    assert stopped.status == "active" and 0 < stopped.processed_tuple_count < 2_000
    assert report["again"].duplicate and str(report["again"].operation.id) == stopped.id
    assert report["finished"].id == stopped.id and report["finished"].status == "finished"
    # one in five of each kind (ids 1..2000): warned 40 days ago -> deleted; never warned ->
    # warned now, one email each; active again -> warning forgotten
    assert report["after"]["projects"] == 1_600
    never_warned = [i for i in range(1, 2_001) if i % 5 == 1]
    assert sorted(report["emails"]) == sorted(f"inactive-warning:{i}" for i in never_warned)
    assert report["after"]["warned"] == 800  # the new warnings and the grace still running
    assert report["after"]["active_but_warned"] == 0


def test_chatops_bot_demo_reads_refuses_a_stranger_and_lets_the_operator_steer(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example("chatops_bot")
    exchanged = example.demo(dsn)

    replies = {(user, line.split()[0]): reply for user, line, reply in exchanged}
    assert "refused" in replies[("mallory", "disable")]
    assert "refused" not in replies[("alice", "disable")]
    assert "bad deploy, INC-4711" in replies[("eve", "disabled")]
    assert "refused" not in replies[("alice", "enable")]
    assert "mallory> disable" in capsys.readouterr().out


def test_delete_done_todos_from_a_web_request_deletes_only_the_users_done_todos(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example("delete_done_todos")
    report = example.run(dsn, timeout=60)

    assert report["status"] == 202
    # the second click found the operation the first one started
    assert report["second"] == {"operation_id": report["first"]["operation_id"], "duplicate": True}
    operation = report["operation"]
    # the middleware's organization and user, taken by enqueue from the context
    assert (operation.organization_id, operation.user_id) == example.CLICKING
    assert operation.status.name == "FINISHED"
    assert operation.processed_tuple_count == 3_000  # the scope: the user's rows only
    # user 10's done todos are gone; the others' rows are untouched
    assert report["after"] == {
        10: (1_000, 0), 11: (1_000, 500), 20: (1_000, 1_000), "others": (40_000, 20_000)
    }  # fmt: skip
    assert "duplicate=True" in capsys.readouterr().out

"""Delete inactive projects after a warning and a grace period: per-row work, a daily cron,
and an operation that resumes where it stopped.

The use case: a project without activity for a year gets a warning email to its owner; if it
is still inactive when the grace period (30 days) has passed, it is deleted; a project active
again after the warning is forgotten. Each sub-batch does **per-row Python work** (decide,
send the email) next to its SQL, and a **daily cron** starts the walk over every project.

It never starts over. The walk is long on a big table, and a deploy, a killed worker or the
next day's firing may come while it runs: each job resumes right after its last committed
sub-batch, and a firing that finds yesterday's operation unfinished returns it instead of
starting another. The example shows both: it stops the workers mid-walk (a deploy), fires the
cron again (the next day), starts new workers, and checks that each owner got **one**
warning.

    python examples/inactive_projects_deletion.py          # --dsn URL: your own server

Emails go to :class:`Mailer`, which prints them and keeps the idempotency key of each: swap
in your mail service (most accept such a key). The email is sent from the sub-batch, which
also marks the project warned: the mark commits with the sub-batch's checkpoint, so a retried
sub-batch skips the projects already warned, and the key covers the one sub-batch that may
have sent its emails and then rolled back.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import threading
import time
from typing import Any

import psycopg

import dramatiq_bbo as bbo
from dramatiq_bbo import migrations
from dramatiq_bbo.demo import runtime

INACTIVE_AFTER_DAYS = 365
GRACE_DAYS = 30
ENDED = ("finished", "failed", "cancelled")


class Mailer:
    """An email service that honours idempotency keys (a second send with a key is a no-op)."""

    def __init__(self, quiet: bool = False) -> None:
        self.sent: dict[str, tuple[str, str]] = {}
        self.quiet = quiet
        self._lock = threading.Lock()

    def send(self, *, to: str, subject: str, idempotency_key: str) -> None:
        with self._lock:
            if idempotency_key in self.sent:
                return
            self.sent[idempotency_key] = (to, subject)
        if not self.quiet:
            print(f"  email to {to}: {subject}")


#: the application's mail service (set by run())
MAILER = Mailer()


class DeleteInactiveProjects(bbo.BaseOperation):
    """Warn the owners of inactive projects; delete the projects still inactive after the
    grace period; forget the warning of a project active again."""

    name = "examples.delete_inactive_projects"
    operation_name = "delete_all"
    feature_category = "groups_and_projects"
    cursor = ("id",)
    tables = ("projects",)
    sub_batch_size = 50

    def process(self, sub_batch: bbo.SubBatch) -> None:
        now = datetime.datetime.now(datetime.UTC)  # when the warning is sent
        # one cutoff for the whole run: from when this firing created the operation
        started = self.operation.created_at
        inactive_since = started - datetime.timedelta(days=self.arguments["inactive_after_days"])
        grace_ended = started - datetime.timedelta(days=self.arguments["grace_days"])
        warn, delete, forget = [], [], []
        for project in sub_batch.dicts():  # read the rows before changing them
            warned_at = project["inactive_warned_at"]
            if project["last_activity_at"] >= inactive_since:
                if warned_at is not None:
                    forget.append(project["id"])
            elif warned_at is None:
                warn.append(project)
            elif warned_at < grace_ended:
                delete.append(project["id"])
        if delete:
            sub_batch.where(self.table.id.in_(delete)).delete()
        if forget:
            sub_batch.where(self.table.id.in_(forget)).update(inactive_warned_at=None)
        if warn:
            sub_batch.where(self.table.id.in_([p["id"] for p in warn])).update(
                inactive_warned_at=now
            )
            for project in warn:  # at-least-once: the key makes a resend a no-op
                MAILER.send(
                    to=project["owner_email"],
                    subject=f"{project['name']} will be deleted in {GRACE_DAYS} days",
                    idempotency_key=f"inactive-warning:{project['id']}",
                )


def declare_schedule() -> Any:
    """The daily schedule (declared at import time in an application)."""
    return bbo.schedule(
        DeleteInactiveProjects,
        "projects",
        "id",
        cron="@daily",
        arguments={"inactive_after_days": INACTIVE_AFTER_DAYS, "grace_days": GRACE_DAYS},
        # paced so that the walk spans the example's deploy; production keeps the defaults
        interval_seconds=0,
        pause_ms=20,
        batch_size=200,
        min_batch_size=200,
        max_batch_size=200,
    )


def create_projects(dsn: str, count: int) -> dict[str, int]:
    """``projects``, one in five of each kind: active; inactive, never warned; warned 40
    days ago (grace over: deleted); warned 10 days ago (grace running: kept); active again
    after a warning (the warning is forgotten)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE projects (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " name text NOT NULL, owner_email text NOT NULL,"
            " last_activity_at timestamptz NOT NULL, inactive_warned_at timestamptz)"
        )
        conn.execute(
            "INSERT INTO projects (name, owner_email, last_activity_at, inactive_warned_at)"
            " SELECT 'project-' || g, 'owner' || g || '@example.com',"
            "   CASE WHEN g %% 5 IN (0, 4) THEN now() - interval '2 days'"
            "        ELSE now() - interval '500 days' END,"
            "   CASE g %% 5 WHEN 2 THEN now() - interval '40 days'"
            "        WHEN 3 THEN now() - interval '10 days'"
            "        WHEN 4 THEN now() - interval '20 days' END"
            " FROM generate_series(1, %s) AS g",
            [count],
        )
        conn.execute("ANALYZE projects")
    return project_counts(dsn)


def project_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(inactive_warned_at),"
            " count(*) FILTER (WHERE last_activity_at > inactive_warned_at) FROM projects"
        ).fetchone()
    assert row is not None
    return {"projects": row[0], "warned": row[1], "active_but_warned": row[2]}


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:g} s")
        time.sleep(0.05)
    return found


def the_operation() -> Any:
    found = bbo.list_operations(class_name=DeleteInactiveProjects.name, limit=1)
    return found[0] if found else None


def run(
    dsn: str, *, projects: int = 2_000, timeout: float = 60.0, quiet: bool = False
) -> dict[str, Any]:
    """The whole flow on ``dsn``; returns what happened (and prints it)."""
    MAILER.sent.clear()
    MAILER.quiet = quiet
    migrations.migrate(dsn)
    before = create_projects(dsn, projects)
    print(f"projects: {before['projects']}, already warned: {before['warned']}")
    bbo.configure(dsn=dsn)
    try:
        schedule = declare_schedule()
        with runtime.broker(dsn) as broker:
            bbo.setup(broker)
            with runtime.workers(broker, "background_operations", threads=2):
                print("day 1: the cron fires")
                broker.get_actor(schedule.actor_name).send()
                wait_for(
                    lambda: (op := the_operation()) and op.processed_tuple_count > 0,
                    timeout,
                    "the first committed sub-batch",
                )
                print("a deploy: the workers stop (each job at its last checkpoint)")
        stopped = the_operation()
        print(
            f"  operation {stopped.id}: {stopped.status}, "
            f"{stopped.processed_tuple_count} of {projects} projects walked"
        )
        with runtime.broker(dsn) as broker:  # the new release's processes
            bbo.setup(broker)
            print("day 2: the cron fires again, before any worker is back")
            again = schedule.fire()
            print(f"  it returned operation {again.operation.id} (duplicate={again.duplicate})")
            with runtime.workers(broker, "background_operations", threads=2):
                print("new workers: the operation resumes from its checkpoint")
                finished = wait_for(
                    lambda: (op := the_operation()) and op.status in ENDED and op,
                    timeout,
                    "the end of the walk",
                )
        after = project_counts(dsn)
    finally:
        bbo.reset()
    print(
        f"operation {finished.id}: {finished.status}; projects left: {after['projects']} "
        f"of {before['projects']}; warnings sent: {len(MAILER.sent)}"
    )
    return {
        "before": before,
        "after": after,
        "stopped": stopped,
        "again": again,
        "finished": finished,
        "emails": dict(MAILER.sent),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a Postgres of your own (default: a throw-away one)")
    parser.add_argument("--projects", type=int, default=2_000)
    parser.add_argument("--quiet", action="store_true", help="do not print each email")
    args = parser.parse_args(argv)
    if args.dsn:
        run(args.dsn, projects=args.projects, quiet=args.quiet)
        return 0
    with runtime.embedded_server() as server:
        run(server.dsn, projects=args.projects, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())

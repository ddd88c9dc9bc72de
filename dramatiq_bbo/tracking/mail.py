"""The failure email: totals, and every failed item with its error and a link.

Two parts, plain text and HTML, of one :class:`email.message.EmailMessage`. Every value
that came from a user or an item (operation type, names, paths, messages, codes) is escaped
in the HTML part; links are ``tracking_base_url`` + ``/`` + the item's full path, quoted.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Sequence
from email.message import EmailMessage
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .records import FailedItem, TrackedOperation


def link(base_url: str, item: FailedItem) -> str | None:
    """The item's page: ``<base_url>/<full path>``, or None without a base URL."""
    if not base_url:
        return None
    return f"{base_url.rstrip('/')}/{urllib.parse.quote(item.entity_full_path.lstrip('/'))}"


def subject(operation: TrackedOperation) -> str:
    kind = " ".join(operation.operation_type.split())
    return (
        f"{kind}: {operation.failed_items} of {operation.total_items} items failed "
        f"(operation {operation.id})"
    )


def text_body(operation: TrackedOperation, items: Sequence[FailedItem], base_url: str) -> str:
    lines = [
        f"Bulk operation {operation.operation_type} (id {operation.id}) finished.",
        "",
        f"Total items: {operation.total_items}",
        f"Successful: {operation.successful_items}",
        f"Failed: {operation.failed_items}",
        "",
        "Failed items:",
    ]
    for item in items:
        lines.append(
            f"- {item.entity_type} {item.entity_name} ({item.entity_full_path}, id "
            f"{item.entity_id}): {item.error_message} [{item.error_code}]"
        )
        url = link(base_url, item)
        if url:
            lines.append(f"  {url}")
    return "\n".join(lines) + "\n"


def html_body(operation: TrackedOperation, items: Sequence[FailedItem], base_url: str) -> str:
    e = html.escape
    rows = []
    for item in items:
        url = link(base_url, item)
        path = e(item.entity_full_path)
        where = f'<a href="{e(url)}">{path}</a>' if url else path
        rows.append(
            f"<tr><td>{e(item.entity_type)}</td><td>{e(item.entity_name)}</td>"
            f"<td>{where}</td><td>{e(item.error_message)}</td>"
            f"<td><code>{e(item.error_code)}</code></td></tr>"
        )
    return (
        "<html><body>"
        f"<p>Bulk operation <b>{e(operation.operation_type)}</b> (id {operation.id}) "
        "finished.</p>"
        f"<ul><li>Total items: {operation.total_items}</li>"
        f"<li>Successful: {operation.successful_items}</li>"
        f"<li>Failed: {operation.failed_items}</li></ul>"
        "<table><tr><th>Type</th><th>Name</th><th>Path</th><th>Error</th><th>Code</th></tr>"
        f"{''.join(rows)}</table>"
        "</body></html>"
    )


def render(
    operation: TrackedOperation,
    items: Sequence[FailedItem],
    *,
    sender: str,
    recipient: str,
    base_url: str,
) -> EmailMessage:
    """The email about ``operation`` and its failed ``items``, from ``sender`` to
    ``recipient``."""
    message = EmailMessage()
    message["Subject"] = subject(operation)
    message["From"] = sender
    message["To"] = recipient
    message.set_content(text_body(operation, items, base_url))
    message.add_alternative(html_body(operation, items, base_url), subtype="html")
    return message

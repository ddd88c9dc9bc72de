"""Shared pieces of the tracking tests: a recording notifier, an SMTP server that keeps what
it receives (aiosmtpd, a real server on a free port), expiring an entry, counting rows."""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller

from dramatiq_bbo.testing.programs import free_port

ITEM = {
    "entity_id": 7,
    "entity_type": "Project",
    "entity_name": "web",
    "entity_full_path": "acme/web",
    "error_message": "Permission denied",
    "error_code": "service_error",
}


@dataclass
class Recorder:
    """A ``tracking_notifier``: keeps each call's operation and failed items."""

    calls: list[tuple[Any, list[Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def notify(self, operation: Any, failed_items: Sequence[Any]) -> None:
        with self.lock:
            self.calls.append((operation, list(failed_items)))


class Inbox:
    """aiosmtpd handler: every message received, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(parsed)  # type: ignore[arg-type]
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on a free local port: ``(inbox, port)``."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def expire(conn: psycopg.Connection[Any], tracked_id: int) -> None:
    """Make ``tracked_id`` expired now (created two hours ago, expired an hour ago)."""
    conn.execute(
        "UPDATE bbo.tracked_operations SET created_at = now() - interval '2 hours',"
        " expires_at = now() - interval '1 hour' WHERE id = %s",
        [tracked_id],
    )


def rows(conn: psycopg.Connection[Any]) -> tuple[int, int, Any]:
    """(tracked operations, failed items, sum of counters) in the database."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM bbo.tracked_operations),"
        " (SELECT count(*) FROM bbo.tracked_failed_items),"
        " (SELECT coalesce(sum(successful_items + failed_items), 0)"
        "  FROM bbo.tracked_operations)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])

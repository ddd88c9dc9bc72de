"""The failure email over a real SMTP server (aiosmtpd on a free port): sent once with the
right counts and every failed item (escaped in HTML), none when nothing failed, and a send
that keeps failing is retried, logged and kept on the tracked operation."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import tracking
from dramatiq_bbo.testing.programs import free_port
from dramatiq_bbo.tracking import events
from tests.integration.tracking_support import ITEM, Inbox, rows, smtp_server  # noqa: F401

ADDRESSES = {42: "alice@example.com"}


@pytest.fixture
def mail_settings(dsn: str) -> Iterator[dict[str, Any]]:
    settings: dict[str, Any] = {
        "tracking_recipient": ADDRESSES.__getitem__,
        "mail_from": "bbo@example.com",
        "tracking_base_url": "https://git.example.com/",
        "tracking_notification_backoff_seconds": 0.01,
    }
    yield settings
    bbo.reset()


def test_the_failure_email_has_the_counts_and_every_failed_item(
    dsn: str,
    smtp_server: tuple[Inbox, int],  # noqa: F811
    mail_settings: dict[str, Any],
    conn: psycopg.Connection[Any],
) -> None:
    inbox, port = smtp_server
    bbo.configure(dsn=dsn, smtp_host="127.0.0.1", smtp_port=port, **mail_settings)
    tracked = tracking.create_operation("attribute_update", 42, 6)
    assert tracked is not None
    tracking.increment_successful(tracked, 3)
    hostile = "<script>alert('x')</script> & co"
    failures = [
        {**ITEM, "entity_id": 1, "entity_full_path": "acme/web"},
        {**ITEM, "entity_id": 2, "entity_name": hostile, "entity_full_path": "acme/<b>"},
        {
            **ITEM,
            "entity_id": 3,
            "entity_type": "Group",
            "entity_full_path": "acme",
            "error_message": 'boom "quoted"',
            "error_code": "unexpected_error",
        },
    ]
    for item in failures:
        assert inbox.messages == []  # nothing before the last outcome
        tracking.add_failed_item(tracked, **item)

    [message] = inbox.messages
    assert inbox.envelopes == [("bbo@example.com", ["alice@example.com"])]
    assert message["To"] == "alice@example.com" and "3 of 6 items failed" in message["Subject"]
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    for needle in ("Total items: 6", "Successful: 3", "Failed: 3"):
        assert needle in text and needle in html
    for item in failures:
        assert f"id {item['entity_id']})" in text
    assert "https://git.example.com/acme/web" in text and "Permission denied" in text
    assert hostile in text  # plain text is plain
    assert (
        "<script>" not in html
        and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in html
    )
    assert 'href="https://git.example.com/acme/%3Cb%3E"' in html
    assert "boom &quot;quoted&quot;" in html and "unexpected_error" in html
    assert html.count("<tr><td>") == 3
    assert rows(conn) == (0, 0, 0)  # sent, then cleaned up


def test_no_email_when_nothing_failed(
    dsn: str,
    smtp_server: tuple[Inbox, int],  # noqa: F811
    mail_settings: dict[str, Any],
    conn: psycopg.Connection[Any],
) -> None:
    inbox, port = smtp_server
    bbo.configure(dsn=dsn, smtp_host="127.0.0.1", smtp_port=port, **mail_settings)
    tracked = tracking.create_operation("attribute_update", 42, 5)
    assert tracked is not None
    for _ in range(5):
        tracking.increment_successful(tracked)
    assert inbox.messages == []
    assert rows(conn) == (0, 0, 0)


def test_a_send_that_keeps_failing_is_retried_logged_and_kept_on_the_row(
    dsn: str,
    mail_settings: dict[str, Any],
    conn: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nobody listens there
    bbo.configure(dsn=dsn, smtp_host="127.0.0.1", smtp_port=port, **mail_settings)
    tracked = tracking.create_operation("attribute_update", 42, 1)
    assert tracked is not None
    with caplog.at_level(logging.INFO, logger="dramatiq_bbo"):
        tracking.add_failed_item(tracked, **ITEM)
    names = [getattr(r, "bbo", {}).get("message") for r in caplog.records]
    assert names.count(events.NOTIFICATION_RETRY) == 2
    assert names.count(events.NOTIFICATION_FAILED) == 1
    kept = tracking.get_operation(tracked)  # visible, with why, until it expires
    assert kept.status == "finished" and kept.notification_attempts == 3
    assert kept.notification_error and "ConnectionRefusedError" in kept.notification_error


def test_no_recipient_is_not_retried_and_is_recorded(
    dsn: str,
    smtp_server: tuple[Inbox, int],  # noqa: F811
    mail_settings: dict[str, Any],
) -> None:
    inbox, port = smtp_server
    bbo.configure(
        dsn=dsn,
        smtp_host="127.0.0.1",
        smtp_port=port,
        **{**mail_settings, "tracking_recipient": None},
    )
    tracked = tracking.create_operation("attribute_update", 7, 1)
    assert tracked is not None
    tracking.add_failed_item(tracked, **ITEM)
    kept = tracking.get_operation(tracked)
    assert kept.notification_attempts == 1
    assert kept.notification_error and "tracking_recipient" in kept.notification_error
    assert inbox.messages == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_credentials_are_used_and_starttls_is_never_skipped(
    dsn: str, mail_settings: dict[str, Any], conn: psycopg.Connection[Any]
) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret")

    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        settings = {**mail_settings, "smtp_host": "127.0.0.1", "smtp_port": port}
        bbo.configure(dsn=dsn, smtp_username="bbo", smtp_password="s3cret", **settings)
        tracked = tracking.create_operation("attribute_update", 42, 1)
        assert tracked is not None
        tracking.add_failed_item(tracked, **ITEM)
        assert len(inbox.messages) == 1 and logins == [(b"bbo", b"s3cret")]

        # STARTTLS asked for, the server does not offer it: nothing goes out in clear
        bbo.configure(dsn=dsn, smtp_starttls=True, **settings)
        tracked = tracking.create_operation("attribute_update", 42, 1)
        assert tracked is not None
        tracking.add_failed_item(tracked, **ITEM)
        assert len(inbox.messages) == 1
        error = tracking.get_operation(tracked).notification_error
        assert error and "STARTTLS" in error.upper()
    finally:
        controller.stop()

"""The default notifier: one email over SMTP to the user who started the operation.

The recipient comes from the ``tracking_recipient`` hook (``fn(user_id) -> address``); the
server from the ``smtp_*`` settings. STARTTLS (with certificate checks) and login happen only
when ``smtp_starttls`` / ``smtp_username`` ask for them. Retries belong to the caller
(:func:`dramatiq_bbo.tracking.notifier.deliver`): this sends once or raises.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence

from ..settings import Settings
from . import mail
from .records import FailedItem, NotificationImpossible, TrackedOperation


class EmailNotifier:
    """Sends the failure email (:mod:`.mail`) with the settings it was built with."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def recipient(self, user_id: int) -> str:
        lookup = self.settings.tracking_recipient
        if lookup is None:
            raise NotificationImpossible(
                "no tracking_recipient is configured: configure(tracking_recipient=fn) with "
                "fn(user_id) -> email address"
            )
        try:
            address = lookup(user_id)
        except Exception as exc:
            raise NotificationImpossible(
                f"tracking_recipient({user_id}) raised {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(address, str) or "@" not in address or "\n" in address:
            raise NotificationImpossible(
                f"tracking_recipient({user_id}) gave no email address: {address!r}"
            )
        return address

    def notify(self, operation: TrackedOperation, failed_items: Sequence[FailedItem]) -> None:
        settings = self.settings
        message = mail.render(
            operation,
            failed_items,
            sender=settings.mail_from,
            recipient=self.recipient(operation.user_id),
            base_url=settings.tracking_base_url,
        )
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds
        ) as client:
            if settings.smtp_starttls:
                client.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                client.login(settings.smtp_username, settings.smtp_password)
            client.send_message(message)

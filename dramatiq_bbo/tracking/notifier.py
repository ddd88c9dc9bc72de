"""Who is told that a tracked operation finished with failures, and how hard we try.

The notifier is pluggable: the ``tracking_notifier`` setting holds a callable
``fn(operation, failed_items)`` or an object with ``notify(operation, failed_items)``; None
(the default) is :class:`~dramatiq_bbo.tracking.smtp.EmailNotifier`, one email over SMTP.
:func:`deliver` calls it, retrying with a doubling delay; an error that no retry can fix
(:class:`NotificationImpossible`: no recipient) ends it at once. It never raises: it returns
why it failed, which the finaliser records on the row and logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..logs import event
from ..settings import Settings
from . import events
from .records import FailedItem, NotificationImpossible, TrackedOperation
from .smtp import EmailNotifier

__all__ = ["NotificationImpossible", "Notifier", "configured", "deliver"]

Notify = Callable[[TrackedOperation, Sequence[FailedItem]], Any]


class Notifier(Protocol):
    """What an object given as ``tracking_notifier`` provides."""

    def notify(self, operation: TrackedOperation, failed_items: Sequence[FailedItem]) -> Any: ...


def configured(settings: Settings) -> Notify:
    """The notifier in force: the ``tracking_notifier`` setting, or the email."""
    hook = settings.tracking_notifier
    if hook is None:
        return EmailNotifier(settings).notify
    return hook if callable(hook) else hook.notify  # type: ignore[no-any-return]


def deliver(
    operation: TrackedOperation, failed_items: Sequence[FailedItem], settings: Settings
) -> tuple[int, str | None]:
    """Notify about ``operation``: ``(attempts made, None)`` once sent, or ``(attempts
    made, why it failed)`` after ``tracking_notification_attempts`` tries."""
    notify = configured(settings)
    attempts = int(settings.tracking_notification_attempts)
    delay = float(settings.tracking_notification_backoff_seconds)
    for attempt in range(1, attempts + 1):
        try:
            notify(operation, failed_items)
            return attempt, None
        except NotificationImpossible as exc:
            return attempt, describe(exc)
        except Exception as exc:
            if attempt == attempts:
                return attempt, describe(exc)
            event(
                events.NOTIFICATION_RETRY,
                level=logging.WARNING,
                tracked_operation_id=operation.id,
                attempt=attempt,
                delay_seconds=delay,
                error=describe(exc),
            )
            time.sleep(delay)
            delay *= 2
    return attempts, "no attempt was made"  # attempts >= 1: not reached


def describe(exc: BaseException) -> str:
    """``ExceptionClass: message`` on one line."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"

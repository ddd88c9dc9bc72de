"""What a reader of the tracking store gets back: a tracked operation and its failed items."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FailedItem",
    "NotificationImpossible",
    "TrackedOperation",
    "failed_item_of",
    "operation_of",
]

PENDING = "pending"
RUNNING = "running"
FINISHED = "finished"


@dataclass(frozen=True)
class FailedItem:
    """One item that failed, as recorded and as the notification shows it."""

    entity_id: str
    entity_type: str
    entity_name: str
    entity_full_path: str
    error_message: str
    error_code: str
    created_at: Any = None


@dataclass(frozen=True)
class TrackedOperation:
    """One tracked bulk operation: who started it, over how many items, how they went."""

    id: int
    operation_type: str
    user_id: int
    parameters: dict[str, Any]
    status: str
    total_items: int
    successful_items: int
    failed_items: int
    created_at: datetime.datetime
    expires_at: datetime.datetime
    finished_at: datetime.datetime | None
    notification_attempts: int
    #: why its notification could not be sent (None: sent, not needed, or not yet tried)
    notification_error: str | None


def operation_of(row: dict[str, Any]) -> TrackedOperation:
    return TrackedOperation(**row)


def failed_item_of(row: dict[str, Any]) -> FailedItem:
    return FailedItem(**row)


class NotificationImpossible(Exception):
    """A notification no retry can send (no recipient for the user): not retried."""

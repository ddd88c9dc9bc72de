"""Tracked bulk item operations: counters, failed items, a TTL, a failure notification.

A bulk action over many items (projects, groups...) is tracked in Postgres: create it with
its total, record each item's outcome (from any process or thread, or from an operation's
sub-batch with ``self.track_success()`` / ``self.track_failure(...)``), and the one caller
that completes it notifies the user when items failed (an email by default), then deletes
it. Entries expire after ``tracking_ttl_hours`` and are purged in batches by a periodiq
actor. See docs/tracking.md.

    from dramatiq_bbo import tracking
    id = tracking.create_operation("attribute_update", user.id, total_items=len(projects),
                                   parameters={"mode": "ADD"})
    tracking.increment_successful(id)
    tracking.add_failed_item(id, entity_id=7, entity_type="Project", entity_name="web",
                             entity_full_path="acme/web", error_message="Permission denied",
                             error_code="service_error")
"""

from __future__ import annotations

from .counters import (
    add_failed_item,
    create_operation,
    increment_successful,
    set_total_items,
)
from .flags import disable, enable, is_enabled, list_flags
from .inputs import SERVICE_ERROR, UNEXPECTED_ERROR
from .notifier import Notifier
from .outcomes import tracked_walk  # installs the sub-batch outcomes (track_success...)
from .purge import purge
from .records import FailedItem, TrackedOperation
from .store import delete_operation, get_failed_items, get_operation

__all__ = [
    "SERVICE_ERROR",
    "UNEXPECTED_ERROR",
    "FailedItem",
    "Notifier",
    "TrackedOperation",
    "add_failed_item",
    "create_operation",
    "delete_operation",
    "disable",
    "enable",
    "get_failed_items",
    "get_operation",
    "increment_successful",
    "is_enabled",
    "list_flags",
    "purge",
    "set_total_items",
    "tracked_walk",
]

"""The log events of tracked operations: stable names operators filter on (see
:mod:`dramatiq_bbo.logs`, whose :func:`~dramatiq_bbo.logs.event` renders them)."""

from __future__ import annotations

#: a tracked operation reached its total and was finalised (once per operation)
FINISHED = "background_operation_tracking_finished"
#: one attempt at sending a notification failed; another follows after a delay
NOTIFICATION_RETRY = "background_operation_tracking_notification_retry"
#: the notification could not be sent at all: kept on the row (notification_error)
NOTIFICATION_FAILED = "background_operation_tracking_notification_failed"
#: the finaliser's notification or cleanup hit an error (the purge retries it later)
FINALISATION_DEFERRED = "background_operation_tracking_finalisation_deferred"
#: the purge deleted expired tracked operations and failed items
PURGED = "background_operation_tracking_purged"
#: tracking of an operation type was turned on or off
FLAG_CHANGED = "background_operation_tracking_flag_changed"

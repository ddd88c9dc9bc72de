"""Hooks consulted before a job starts and between its sub-batches.

The health layer (and the per-class kill switch) plug in here, so the pipeline stages do
not import them. A *pre-job check* gets the orchestrator's connection (inside its
transaction, with the operation row locked) and the operation; returning True means "do not
start a job now" — the check itself records why (a hold, a log event). A *between-sub-batch
check* gets the operation and returns a stop reason or None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..records import OperationRecord

PreJobCheck = Callable[[Any, OperationRecord], bool]
SubBatchCheck = Callable[[OperationRecord], str | None]

pre_job_checks: list[PreJobCheck] = []
sub_batch_checks: list[SubBatchCheck] = []

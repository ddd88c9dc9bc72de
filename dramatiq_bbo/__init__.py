"""dramatiq-bbo: batched background operations on PostgreSQL.

The public API lives here and only here; everything else is an implementation detail.
Names are imported lazily (PEP 562) so that ``import dramatiq_bbo`` stays cheap and a worker
that only needs the actors does not import the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors
from .configure import configure, reset, settings

# Imported eagerly, as it always was: enqueueing is what most processes that import the
# package do.
from .enqueueing.api import EnqueueResult, enqueue  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from . import chatops, health, tracking
    from .cells.move import move_organization
    from .enqueueing.current_organization import current_organization, organization_in_context
    from .jobs.control import cancel, pause, resume
    from .jobs.inline import run_to_completion
    from .middleware import Middleware
    from .operate.finalize import finalize
    from .operate.steering import (
        DisabledClass,
        disable,
        disabled_classes,
        enable,
        retry,
        update,
    )
    from .operate.summaries import list_operations
    from .operation import BaseOperation, register
    from .pipeline.actors import default_middleware, setup
    from .pipeline.schedules import schedule
    from .state.records import JobRecord, JobStatus, OperationRecord, OperationStatus
    from .state.store import get_operation, list_jobs
    from .walk.sub_batch import SubBatch

_LAZY = {
    "BaseOperation": "operation",
    "register": "operation",
    "OperationRecord": "state.records",
    "JobRecord": "state.records",
    "OperationStatus": "state.records",
    "JobStatus": "state.records",
    "get_operation": "state.store",
    "list_jobs": "state.store",
    "run_to_completion": "jobs.inline",
    "SubBatch": "walk.sub_batch",
    "pause": "jobs.control",
    "resume": "jobs.control",
    "cancel": "jobs.control",
    "disable": "operate.steering",
    "enable": "operate.steering",
    "disabled_classes": "operate.steering",
    "DisabledClass": "operate.steering",
    "retry": "operate.steering",
    "update": "operate.steering",
    "finalize": "operate.finalize",
    "setup": "pipeline.actors",
    "default_middleware": "pipeline.actors",
    "Middleware": "middleware",
    "schedule": "pipeline.schedules",
    "list_operations": "operate.summaries",
    "current_organization": "enqueueing.current_organization",
    "organization_in_context": "enqueueing.current_organization",
    "move_organization": "cells.move",
}


#: public submodules, imported on first use: ``bbo.health`` or ``from dramatiq_bbo import chatops``
_SUBPACKAGES = {"chatops", "health", "tracking"}


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        package = importlib.import_module(f".{name}", __name__)
        globals()[name] = package
        return package
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dramatiq_bbo' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "BaseOperation",
    "DisabledClass",
    "cancel",
    "chatops",
    "tracking",
    "disable",
    "disabled_classes",
    "enable",
    "finalize",
    "retry",
    "update",
    "pause",
    "resume",
    "setup",
    "EnqueueResult",
    "JobRecord",
    "JobStatus",
    "Middleware",
    "OperationRecord",
    "OperationStatus",
    "SubBatch",
    "configure",
    "current_organization",
    "default_middleware",
    "enqueue",
    "errors",
    "get_operation",
    "health",
    "list_jobs",
    "list_operations",
    "move_organization",
    "organization_in_context",
    "register",
    "reset",
    "run_to_completion",
    "schedule",
    "settings",
]

"""The author's operation class instantiated for one operation record (and job): what every
runner, the job creator and the splitter start from.

It sits low in the package, apart from the runners (:mod:`dramatiq_bbo.jobs.run`), so that
what only needs the keyset (splitting a job, :mod:`dramatiq_bbo.jobs.planning`) does not
depend on running one.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..operation import BaseOperation, own_scope, resolve
from ..state.records import JobRecord, OperationRecord
from ..walk.keyset import Keyset
from ..walk.tables import table_info, table_model


def build_operation(
    operation: OperationRecord,
    job: JobRecord | None = None,
    conn: psycopg.Connection[Any] | None = None,
) -> tuple[BaseOperation, Keyset]:
    """The author's class instantiated for ``operation`` (arguments, table model, records)
    and its keyset. Reflection happens here, outside any transaction. The stored table's
    identity is checked on ``conn`` when the caller holds one (TableChanged if replaced)."""
    cls = resolve(operation.job_class_name)
    info = table_info(operation.database_name, operation.table_ref, conn)
    model = table_model(operation.database_name, info, operation_class=cls)
    instance = cls(operation.job_arguments, table=model)
    instance.operation = operation
    if job is not None:
        instance.job = job
    return instance, Keyset.for_operation(
        instance, info, operation.cursor_columns, own_scope(instance)
    )

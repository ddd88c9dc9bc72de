"""The demo's operation: delete the done todos last updated before a cutoff.

A cell-local operation (no organization scope) walking every row of ``bbo_demo.todos`` in
``id`` order (the primary key is the index the walk needs). It only says what to do with one
sub-batch — delete its matching rows — and the framework walks the sub-batches, each in its
own transaction committed with the checkpoint.
"""

from __future__ import annotations

from typing import ClassVar

import dramatiq_bbo as bbo

#: the registry name of the demo's database. Not ``"main"``: on a server of your own
#: (``--dsn``) the demo's scheduler ticks then only ever see the demo's operation, never
#: operations your application enqueued in the same database.
DATABASE = "bbo_demo"


class PurgeDoneTodos(bbo.BaseOperation):
    name = "bbo_demo.PurgeDoneTodos"
    operation_name = "delete_done_todos"
    feature_category = "demo"
    cursor = ("id",)
    database: ClassVar[str] = DATABASE

    def process(self, sub_batch: bbo.SubBatch) -> None:
        cutoff = self.arguments["updated_before"]
        sub_batch.where(self.table.done == True, self.table.updated_at < cutoff).delete()  # noqa: E712

"""The operator command that runs an operation in the calling process: ``finalize``.

Apart from :mod:`.commands` because it stands on the inline runner, the top of the library's
execution stack, while the other commands only read and steer: a surface that never runs
operations in its own process (ChatOps: a chat bot is no place for a long run) does not
import it. The command line does, and draws a bar from ``Context.on_progress``.
"""

from __future__ import annotations

from typing import Any

from . import summaries
from .commands import OPERATION_ID, Command, Context
from .finalize import finalize as run_rest
from .results import Done


def finalize(context: Context, operation_id: Any) -> Done:
    run_rest(
        operation_id, on_progress=context.on_progress, by=context.by, database=context.database
    )
    summary = summaries.get_summary(operation_id, database=context.database)
    if summary.status == "finished":
        message = f"operation {operation_id} finished: run to its end in this process"
    else:
        message = f"operation {operation_id} stopped before its end: it is {summary.status}"
    return Done(message, summary.as_dict())


FINALIZE = Command("finalize", "run the rest of an operation now", finalize, (OPERATION_ID,), True)

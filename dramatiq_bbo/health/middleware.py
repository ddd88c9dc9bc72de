"""``HealthMiddleware``: the health indicators as the pipeline's gates.

- Before a job: the orchestrator, holding the operation's row lock, asks the indicators; on
  a stop the operation is held (on the orchestrator's connection, in its transaction) and no
  job starts. On a normal answer an expired hold is cleared.
- Between sub-batches: the runner asks again, accepting the answers of the previous check
  while fresh ones are asked for in the background (so no sub-batch waits on an indicator);
  on a stop the operation is held and the job ends cleanly at its checkpoint with
  ``health_stop`` — not a failed attempt. The runner then chains an orchestrator message,
  which refuses the held operation; the scheduler hands it back once the hold expires.

So a stop takes effect within one more sub-batch, or one cache period of the indicator.
``bbo.setup(broker)`` installs it by default (:func:`dramatiq_bbo.default_middleware`); a
``middleware=`` list without it runs with no throttling.
"""

from __future__ import annotations

from typing import Any

from ..db import REGISTRY
from ..logs import logger
from ..middleware import Middleware
from ..state.records import JobRecord, OperationRecord
from .base import Result
from .evaluator import evaluate
from .hold import hold, release

#: the runner's interrupted_reason for a job ended by a health stop
HEALTH_STOP = "health_stop"


class HealthMiddleware(Middleware):
    """Asks the indicators before each job and between sub-batches; a stop holds."""

    def before_job(self, conn: Any, operation: OperationRecord) -> bool:
        """True (do not start a job) when an indicator says stop; the operation is then held
        on ``conn``. On a normal answer an expired hold is cleared."""
        stop = _verdict(operation, stale=False)
        if stop is not None:
            hold(conn, operation, stop)
            return True
        release(conn, operation)
        return False

    def between_sub_batches(self, operation: OperationRecord, job: JobRecord) -> str | None:
        """``"health_stop"`` when an indicator says stop (the operation is then held)."""
        stop = _verdict(operation, stale=True)
        if stop is None:
            return None
        try:
            with REGISTRY.connection(operation.database_name) as conn:
                hold(conn, operation, stop)
        except Exception:  # stopping matters more than recording why
            logger.exception("could not hold operation %s after a health stop", operation.id)
        return HEALTH_STOP


def _verdict(operation: OperationRecord, *, stale: bool) -> Result | None:
    """The first stop, or None; a failure of the evaluation itself never stops the pipeline
    (each indicator's own failures are already UNKNOWN answers)."""
    try:
        return evaluate(operation, stale=stale).stop
    except Exception:
        logger.exception("health evaluation failed for operation %s", operation.id)
        return None

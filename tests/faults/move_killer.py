"""A move that kills its own process (SIGKILL) right after one of its steps committed:
``python -m tests.faults.move_killer MAIN_DSN CELL_B_DSN ORGANIZATION STEP``.

The kill comes from the move's ``on_step`` hook, so it lands exactly between two steps, with
nothing of the next one done and no clean-up of any kind run.
"""

from __future__ import annotations

import os
import signal
import sys

import dramatiq_bbo as bbo
from dramatiq_bbo.cells.record import MoveRecord, Step


def main(main_dsn: str, cell_b_dsn: str, organization: str, step: str) -> None:
    bbo.configure(dsn=main_dsn, databases={"cell_b": cell_b_dsn})
    kill_after = Step(step)

    def on_step(done: Step, record: MoveRecord) -> None:
        if done == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    bbo.move_organization(int(organization), source="main", target="cell_b", on_step=on_step)
    sys.exit(3)  # never reached: the kill comes first


if __name__ == "__main__":
    main(*sys.argv[1:])

"""``move_organization()``: an organization's operations from one cell's database to
another's, crash-safe at every step.

The steps (:mod:`.steps`) run in order — pause, drain, copy, delete, resume, finish — each
committed with the move's record on its side. A call first reads both records: with none it
starts a move; with one it carries that move on from its last committed step. So a move
killed anywhere (``kill -9`` included) is finished by running it again, and it never leaves
an operation live in both databases.

``on_step(step, record)`` hears each step once it committed: the command line prints
progress with it, and a test can stop the process there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..db import REGISTRY
from ..errors import InvalidArgument, MoveConflict
from ..logs import ORGANIZATION_MOVE_STEP, ORGANIZATION_MOVED, event
from ..migrations import ensure_schema, schema_errors
from ..queries import query
from . import steps
from .record import MoveRecord, Role, Step, unfinished

#: what ``on_step`` is called with after each committed step
StepHook = Callable[[Step, MoveRecord], None]

#: how long the move waits, by default, for running jobs to reach a checkpoint
DEFAULT_WAIT_SECONDS = 60.0
#: how many times one call copies again a copy made stale by a change at the source (a
#: runner's late end-of-job write, an operator's resume) before it gives up
_COPY_ATTEMPTS = 3


@dataclass(frozen=True)
class MoveResult:
    """What a move did: its id, the operations that moved (text ids), those it left at the
    source because they were enqueued there during the move, and the steps this call ran."""

    move_id: str
    organization_id: int
    source: str
    target: str
    moved: list[str]
    left_behind: list[str] = field(default_factory=list)
    steps_run: list[Step] = field(default_factory=list)


def move_organization(
    organization_id: int,
    *,
    source: str = "main",
    target: str,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    on_step: StepHook | None = None,
    target_database_name: str | None = None,
) -> MoveResult:
    """Move the organization's operations (and their job history) from database ``source``
    to database ``target`` (names from ``configure(databases=...)``), or finish a half-done
    move of it. Raises :class:`~dramatiq_bbo.errors.MoveTimeout` when running jobs do not reach
    a checkpoint within ``wait_seconds`` (run it again to go on).

    ``target_database_name``: the name the target cell's own workers register its database
    under, which the arriving operations carry (default: ``target``, right when one
    application runs both databases)."""
    _check(organization_id, source, target, wait_seconds)
    arriving_as = _name(target_database_name or target)
    for name in (source, target):
        ensure_schema(name)
    with schema_errors(source), _move_lock(source, organization_id):
        return _Move(organization_id, source, target, arriving_as, wait_seconds, on_step).run()


@contextlib.contextmanager
def _move_lock(source: str, organization_id: int) -> Iterator[None]:
    """One process at a time moves an organization: a session lock held on the source for
    the whole move (a killed mover's session ends, and its lock with it)."""
    params = {"organization_id": organization_id}
    with REGISTRY.connection(source) as conn:
        row = conn.execute(query("cells_try_move_lock"), params).fetchone()
        if not (row and row[0]):
            raise MoveConflict(
                f"organization {organization_id} is being moved by another process right now"
            )
        try:
            yield
        finally:
            conn.execute(query("cells_move_unlock"), params)


def _check(organization_id: object, source: str, target: str, wait_seconds: float) -> None:
    """Refuse bad input before anything is read or written."""
    if isinstance(organization_id, bool) or not isinstance(organization_id, int):
        raise InvalidArgument(f"organization_id must be an int, got {organization_id!r}")
    if not -(2**63) <= organization_id < 2**63:
        raise InvalidArgument(f"organization_id {organization_id} is out of the bigint range")
    if source == target:
        raise InvalidArgument(f"source and target are the same database ({source!r})")
    if not (isinstance(wait_seconds, int | float) and 0 <= wait_seconds <= 86400):
        raise InvalidArgument(f"wait_seconds must be within 0..86400, got {wait_seconds!r}")
    REGISTRY.get(source)  # UnknownDatabase, before any connection
    REGISTRY.get(target)


def _name(text: object) -> str:
    if not isinstance(text, str) or not 1 <= len(text) <= 63:
        raise InvalidArgument(f"a database name must be 1..63 characters, got {text!r}")
    return text


class _Move:
    """One call's walk through the steps, from where the records say the move stands."""

    def __init__(
        self,
        organization_id: int,
        source: str,
        target: str,
        arriving_as: str,
        wait_seconds: float,
        on_step: StepHook | None,
    ) -> None:
        self.organization_id = organization_id
        self.source = source
        self.target = target
        self.arriving_as = arriving_as
        self.wait_seconds = wait_seconds
        self.on_step = on_step
        self.ran: list[Step] = []

    def run(self) -> MoveResult:
        record = self._current()
        for attempt in range(_COPY_ATTEMPTS):
            try:
                record = self._leave_source(record)
                break
            except steps.StaleCopy:
                if attempt + 1 == _COPY_ATTEMPTS:
                    raise
                record = self._current()  # back at its pause: paused again, copied again
        assert record is not None
        arrived, live = steps.resume_at_target(self.target, record)
        self._done(arrived)
        if self.arriving_as == self.target:  # else the target's own workers know its name
            _wake(self.target, live)
        record = self._done(steps.finish(self.source, record))
        return self._result(record)

    def _leave_source(self, record: MoveRecord | None) -> MoveRecord:
        """Pause, drain, copy and delete, from where ``record`` stands."""
        if record is None or not record.at_least(Step.COPIED):
            steps.check_target(self.source, self.target, self.organization_id)
            record = self._done(steps.pause(self.source, self.target, self.organization_id, record))
            record = self._done(steps.drain(self.source, record, self.wait_seconds))
        if not record.at_least(Step.COPIED):
            copied = steps.copy_to_target(self.source, self.target, record, self.arriving_as)
            record = self._done(copied)
        if not record.at_least(Step.DELETED):
            record = self._done(steps.delete_at_source(self.source, self.target, record))
        return record

    def _current(self) -> MoveRecord | None:
        """The move to carry on (the source's unfinished record), checked against the
        target's; None when no move of the organization is under way."""
        with REGISTRY.connection(self.source) as conn:
            record = unfinished(conn, self.organization_id, Role.SOURCE)
        if record is not None and record.target_name != self.target:
            raise MoveConflict(
                f"organization {self.organization_id} has an unfinished move from "
                f"{record.source_name!r} to {record.target_name!r} (move {record.move_id}): "
                "run that move again to finish it first"
            )
        with REGISTRY.connection(self.target) as conn:
            arriving = unfinished(conn, self.organization_id, Role.TARGET)
        if arriving is not None and (record is None or arriving.move_id != record.move_id):
            raise MoveConflict(
                f"database {self.target!r} holds an unfinished arrival of organization "
                f"{self.organization_id} (move {arriving.move_id}) that database "
                f"{self.source!r} does not know: was it started from another source?"
            )
        return record

    def _done(self, record: MoveRecord) -> MoveRecord:
        self.ran.append(record.step)
        event(
            ORGANIZATION_MOVE_STEP,
            move_id=str(record.move_id),
            organization_id=self.organization_id,
            source=self.source,
            target=self.target,
            step=record.step.value,
        )
        if self.on_step is not None:
            self.on_step(record.step, record)
        return record

    def _result(self, record: MoveRecord) -> MoveResult:
        moved = sorted(record.fingerprints)
        with REGISTRY.connection(self.source) as conn:
            rows = conn.execute(
                query("cells_left_behind"),
                {"organization_id": self.organization_id, "ids": moved},
            ).fetchall()
        result = MoveResult(
            move_id=str(record.move_id),
            organization_id=self.organization_id,
            source=self.source,
            target=self.target,
            moved=moved,
            left_behind=[str(row[0]) for row in rows],
            steps_run=list(self.ran),
        )
        event(
            ORGANIZATION_MOVED,
            move_id=result.move_id,
            organization_id=self.organization_id,
            source=self.source,
            target=self.target,
            moved=len(moved),
            left_behind=len(result.left_behind),
        )
        return result


def _wake(target: str, ids: list[str]) -> None:
    """Wake the resumed operations at once when this process runs the pipeline on the
    target (else the target's scheduler picks them up at its next tick)."""
    if not ids:
        return
    from ..pipeline.wake import wake
    from ..state.store import get_operation

    for id_ in ids:
        wake(get_operation(id_, database=target))

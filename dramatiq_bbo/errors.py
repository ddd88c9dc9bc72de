"""Every error a caller of dramatiq-bbo can catch.

All of them derive from :class:`BBOError`, so ``except bbo.errors.BBOError`` catches anything
the library raises on purpose. Messages name the offending value and say what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class BBOError(Exception):
    """Base class of every error raised on purpose by dramatiq-bbo."""


# -- configuration and connectivity -------------------------------------------------------


class ConfigurationError(BBOError):
    """The library was used before ``configure()`` or with contradictory settings."""


class ConnectionFailed(BBOError):
    """The database could not be reached or refused the connection (bad DSN, server down)."""


class UnknownDatabase(ConfigurationError):
    """An operation or command named a database that is not in the databases registry."""


# -- schema migrations -----------------------------------------------------------------------


class MigrationError(BBOError):
    """Applying the schema failed; the failing file is named and nothing of it was kept."""


class SchemaTooNew(MigrationError):
    """The database holds migrations this version of dramatiq-bbo does not know."""


class SchemaNotInstalled(MigrationError):
    """The ``bbo`` schema is missing or behind: run ``dramatiq-bbo migrate``."""


# -- operations: definition and enqueue ------------------------------------------------------


class ValidationError(BBOError):
    """An enqueue or an operation definition was refused before anything was written."""


class UnknownOperationClass(ValidationError):
    """No operation class is registered under the given name."""


class OperationDefinitionError(ValidationError):
    """An operation class is malformed (bad cursor, neither or both of process and perform, a
    misspelt attribute name, duplicate name...)."""


class TableNotFound(ValidationError):
    """The target table does not exist in the catalog."""


class ColumnNotFound(ValidationError):
    """A cursor or batching column does not exist on the target table."""


class CursorNotIndexed(ValidationError):
    """The cursor columns are not unique together, or do not lead a btree index."""


class InvalidArguments(ValidationError):
    """Operation arguments are not JSON-serialisable, not an object or list, or too large."""


class InvalidBatchSizes(ValidationError):
    """Batch sizes, pause or interval are not positive or not ordered sensibly."""


class InvalidScope(ValidationError):
    """Organization scope is half-given (organization_id without user_id, or the reverse)."""


class InvalidCronExpression(ValidationError):
    """A cron expression is malformed, out of range, or one periodiq cannot run faithfully."""


class ColumnNotInCursor(ValidationError):
    """``column_name`` is not one of the operation class's cursor columns."""


class InvalidPriority(ValidationError):
    """The priority is not an int in the smallint range."""


class InvalidConnection(ValidationError):
    """``connection=`` is neither a psycopg 3 connection nor a peewee psycopg 3 database."""


class ConcurrentEnqueue(BBOError):
    """An identical operation was committed by a concurrent enqueue that this transaction
    cannot see (its snapshot is older): retry the whole transaction."""


# -- running operations ----------------------------------------------------------------------


class OperationNotFound(BBOError):
    """No operation exists with the given id."""


class InvalidOperationId(OperationNotFound, ValidationError):
    """The value given as an operation id is neither an int (cell-local) nor a uuid
    (organization-scoped)."""


class InvalidTransition(BBOError):
    """The requested state change is not allowed from the operation's current status."""


class InvalidArgument(ValidationError):
    """A value given to a reading or steering function is not one it accepts (an unknown
    status or scope, a limit out of range, a negative duration...): nothing was read or
    written."""


class InvalidSteering(ValidationError):
    """A steering call (``disable``, ``enable``, ``retry``, ``update``, ``finalize``, or
    ``pause``/``resume``/``cancel`` with ``by=``) got a value it cannot store or use: a class
    name, reason or operator name that is not text, empty, too long or holding a NUL, or an
    ``on_progress`` that is not callable. Nothing was written."""


class SubBatchTimeout(BBOError):
    """A sub-batch hit ``statement_timeout`` or ``lock_timeout``; its transaction rolled back.

    The pipeline reacts to this one specifically: it shrinks the sub-batch size and, on the
    last attempt of a job, splits the job's range in two.
    """

    def __init__(self, message: str, *, kind: str = "statement_timeout") -> None:
        super().__init__(message)
        self.kind = kind


class LeaseLost(BBOError):
    """Another runner took this job over (its lease had expired): this runner stops at once,
    before touching the job again, so no sub-batch is ever applied twice."""


class IncompleteJob(BBOError):
    """``perform()`` returned before ``each_sub_batch()`` reached the end of the job's range
    (a ``break`` in the loop): the current sub-batch was rolled back, the rest of the range
    was not walked, so the job is failed (and retried from its checkpoint) rather than
    silently skipping rows."""


class OperationInterrupted(BBOError):
    """A job stopped early at a checkpoint (pause, cancel, disable, health stop, time budget).

    Not a failure: the rest of the range becomes the next job.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- identifiers, table scope and inputs -------------------------------------------------------


class InvalidIdentifier(ValidationError):
    """A table or column name is not one Postgres can hold: empty, longer than 63 bytes
    (Postgres would silently truncate it to another name), or holding a NUL or a lone
    surrogate."""


class TableNotAllowed(ValidationError):
    """The table is in a schema no operation may touch (``bbo``, ``dramatiq``, the system
    catalogs, temporary schemas), or outside the tables the operation class declares."""


class TablePrivilegeMissing(ValidationError):
    """The connected role lacks a privilege the operation needs on its table (or schema)."""


class TableChanged(BBOError):
    """The table stored on an operation is no longer the table that was validated at enqueue
    (dropped, or renamed and another table took its name): the operation refuses to run on
    another table."""


class TooManyInterruptions(BBOError):
    """A job was interrupted (worker shutdown, expired lease) more than ``max_interruptions``
    times: from then on each interruption counts as a failed attempt. Recorded on the job row
    (``exception_class``) rather than raised."""


class ReadOnlyCheckFailed(BBOError):
    """The ``organization_read_only`` check (``bbo.configure(organization_read_only=...)``)
    raised, or answered something other than False/None (writable), True or a reason string
    (read-only). Not raised to the caller: logged, and the organization counts as read-only
    (its operations are held, then asked about again) rather than written while unknown."""


# -- operator commands (CLI, ChatOps) -----------------------------------------------------------


class InvalidCommand(ValidationError):
    """An operator command (a command line or a chat line) names no known command, lacks an
    argument, or gives one a malformed value (an unknown status, a limit of 0, a duration
    that is not ``30m``/``1h``/``2d``...): nothing was read or changed."""


class NotAuthorized(BBOError):
    """A mutating ChatOps command was refused: no ``chatops_authorize`` is configured, or it
    said no for this user, command and operation."""


# -- tracked bulk item operations (dramatiq_bbo.tracking) ------------------------------------


class TrackedOperationNotFound(BBOError):
    """No live tracked operation has this id: it never existed, it was cleaned up after it
    finished, or it expired (expired entries are invisible at once, before the purge)."""


class InvalidTrackingInput(ValidationError):
    """A tracking call got a value it cannot store: a negative or non-integer count, an
    operation type, user id or parameters of the wrong kind, a failed item without its
    entity fields, an error message or code too long or malformed. Nothing was written."""


class TrackedCountExceeded(InvalidTrackingInput):
    """Recording these outcomes (or this new total) would make the counted items exceed the
    tracked operation's total, or the operation already finished. Nothing was written."""


# -- moving an organization between cells (dramatiq_bbo.cells) ------------------------------


class MoveError(BBOError):
    """Moving an organization to another cell stopped before its end. The move's record keeps
    where it stands: running the same move again finishes it."""


class MoveTimeout(MoveError):
    """The organization's running jobs did not reach a checkpoint within the move's wait;
    its operations stay paused at the source until the move is run again."""


class MoveConflict(MoveError):
    """The move cannot go on as asked: another move of the organization is unfinished (to
    another cell, or recorded differently on the two sides), an operation changed at the
    source while it was being copied, or the target already holds one of its operations."""


class MoveTargetNotReady(MoveError):
    """The target database lacks what the moved operations need (a table they walk):
    the application's own rows and tables must be in the target before the move."""


# -- setup mistakes --------------------------------------------------------------------------


class UnsupportedBroker(ConfigurationError):
    """``setup(broker)`` got a broker that is not dramatiq-pg's ``PostgresBroker``: the
    pipeline writes its messages into dramatiq-pg's ``dramatiq.queue`` table, so any other
    broker would never see them."""


class InvalidMiddleware(ConfigurationError):
    """``setup(broker, middleware=[...])`` got something that is not a
    :class:`dramatiq_bbo.Middleware` instance (a class instead of an instance, a dramatiq
    broker middleware, a function): nothing is set up."""


def error_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and every error it wraps, each once: its cause, its context, the original a
    peewee error carries in ``orig``, and errors passed as its arguments."""
    stack: list[Any] = [exc]
    seen: set[int] = set()
    while stack:
        error = stack.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        stack.extend([error.__cause__, error.__context__, getattr(error, "orig", None)])
        stack.extend(error.args)

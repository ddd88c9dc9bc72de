"""The operator commands, once, for every surface: the command line, ChatOps, a web page.

Each :class:`Command` names its parameters (with the parser of each, from
:mod:`.arguments`), whether it changes anything, and the function that runs it. The function
reads through the views (:mod:`.summaries`) or steers through the public API
(:mod:`.steering`), passing who asked (``by``), and returns data — a ``Listing``, a
``Detail`` or a ``Done`` (:mod:`.results`) — never text: each surface renders it its own way
(:mod:`.render`). A surface that receives words (a chat line) parses them with :func:`parse`;
the command line builds its options from the same parameters. ``finalize``, which runs an
operation in the caller's process, is apart (:mod:`.running`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidCommand
from . import arguments as read
from . import steering, summaries
from .results import Detail, Done, Listing, Result

#: the option every command accepts for a named database (``configure(databases=...)``)
DATABASE_FLAG = "--database"


@dataclass(frozen=True)
class Parameter:
    """One thing a command takes: ``flag`` is ``--status``-like, or None for the positional
    argument (an operation id or a class name); ``parse`` reads the text of its value."""

    name: str
    flag: str | None
    parse: Callable[[str], Any]
    help: str
    metavar: str = "VALUE"


@dataclass(frozen=True)
class Context:
    """Who runs a command and where: ``by`` is recorded in the log event of every change;
    ``on_progress`` is called by ``finalize`` after each job (a surface draws a bar)."""

    by: str
    database: str | None = None
    on_progress: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class Command:
    """One operator command: a surface reads its parameters, asks for authorisation when it
    is ``mutating``, and calls ``run(context, **values)``."""

    name: str
    help: str
    run: Callable[..., Result]
    parameters: tuple[Parameter, ...] = ()
    mutating: bool = False

    @property
    def positional(self) -> Parameter | None:
        return next((p for p in self.parameters if p.flag is None), None)

    def usage(self) -> str:
        words = [self.name]
        for parameter in self.parameters:
            if parameter.flag is None:
                words.append(parameter.metavar)
            else:
                words.append(f"[{parameter.flag} {parameter.metavar}]")
        return " ".join(words)


@dataclass(frozen=True)
class Invocation:
    """A command with its parsed values, ready to run."""

    command: Command
    values: dict[str, Any] = field(default_factory=dict)
    database: str | None = None

    @property
    def target(self) -> str | None:
        """The operation id or class name it acts on, as text (for an authorisation hook)."""
        positional = self.command.positional
        if positional is None:
            return None
        value = self.values.get(positional.name)
        return None if value is None else str(value)

    def run(self, context: Context) -> Result:
        return self.command.run(context, **self.values)


# -- reading -----------------------------------------------------------------------------------


def list_operations(context: Context, **filters: Any) -> Listing:
    found = summaries.list_operations(database=context.database, **filters)
    return Listing("operations", tuple(s.as_dict() for s in found))


def show(context: Context, operation_id: Any, jobs: int = 10) -> Detail:
    summary = summaries.get_summary(operation_id, database=context.database)
    recent = summaries.recent_jobs(operation_id, limit=jobs, database=context.database)
    return Detail(summary.as_dict(), tuple(j.as_dict() for j in recent))


def failures(context: Context, **filters: Any) -> Listing:
    found = summaries.failed_jobs(database=context.database, **filters)
    return Listing("failures", tuple(f.as_dict() for f in found))


def disabled(context: Context) -> Listing:
    found = steering.disabled_classes(database=context.database)
    return Listing("disabled", tuple(d.as_dict() for d in found))


# -- steering ----------------------------------------------------------------------------------


def _done(context: Context, operation_id: Any, what: str) -> Done:
    summary = summaries.get_summary(operation_id, database=context.database)
    return Done(f"operation {operation_id} {what} (now {summary.status})", summary.as_dict())


def pause(context: Context, operation_id: Any) -> Done:
    steering.pause(operation_id, by=context.by, database=context.database)
    return _done(context, operation_id, "paused: its job stops at the next checkpoint")


def resume(context: Context, operation_id: Any) -> Done:
    steering.resume(operation_id, by=context.by, database=context.database)
    return _done(context, operation_id, "resumed")


def cancel(context: Context, operation_id: Any) -> Done:
    steering.cancel(operation_id, by=context.by, database=context.database)
    return _done(context, operation_id, "cancelled: its job stops at the next checkpoint")


def retry(context: Context, operation_id: Any) -> Done:
    steering.retry(operation_id, by=context.by, database=context.database)
    return _done(context, operation_id, "retried: its failed jobs are queued again")


def update(context: Context, operation_id: Any, **sizes: Any) -> Done:
    if not sizes:
        raise InvalidCommand(
            "set: give at least one of --batch-size, --sub-batch-size, --pause-ms, --interval"
        )
    steering.update(operation_id, by=context.by, database=context.database, **sizes)
    changed = ", ".join(f"{name}={value:g}" for name, value in sorted(sizes.items()))
    return _done(context, operation_id, f"updated ({changed}; from its next job)")


def disable(context: Context, class_name: str, reason: str | None = None) -> Done:
    entry = steering.disable(class_name, reason=reason, by=context.by, database=context.database)
    return Done(
        f"class {class_name} disabled: its jobs stop within one sub-batch", entry.as_dict(), "class"
    )


def enable(context: Context, class_name: str) -> Done:
    steering.enable(class_name, by=context.by, database=context.database)
    return Done(f"class {class_name} enabled: its operations run again", None, "class")


# -- the table of commands -----------------------------------------------------------------------

#: the operation id every command acting on one operation takes
OPERATION_ID = Parameter("operation_id", None, read.operation_id, "the operation's id", "ID")
_ID = OPERATION_ID
_CLASS = Parameter("class_name", None, read.class_name, "the operation class's name", "CLASS")


def _size(setting: str, flag: str) -> Callable[[str], Any]:
    return lambda text: read.size(setting, text, option=flag)


def _option(name: str, flag: str, parse: Callable[..., Any], help: str, metavar: str) -> Parameter:
    return Parameter(name, flag, lambda text: parse(text, option=flag), help, metavar)


_LIST = (
    _option("status", "--status", read.status, "only operations in this status", "STATUS"),
    _option("class_name", "--class", read.class_name, "only operations of this class", "CLASS"),
    _option(
        "organization_id", "--organization", read.organization, "only this organization", "ORG"
    ),
    _option("scope", "--scope", read.scope, "organization or cell_local", "SCOPE"),
    _option("limit", "--limit", read.limit, "at most this many (default 20)", "N"),
)
_FAILURES = (
    _option("since", "--since", read.duration, "failed in this last while (30m, 1h, 2d)", "AGE"),
    _option("operation_id", "--operation", read.operation_id, "only this operation", "ID"),
    _option("limit", "--limit", read.limit, "at most this many (default 100)", "N"),
)
_SIZES = (
    Parameter(
        "batch_size", "--batch-size", _size("batch_size", "--batch-size"), "rows per job", "N"
    ),
    Parameter(
        "sub_batch_size",
        "--sub-batch-size",
        _size("sub_batch_size", "--sub-batch-size"),
        "rows per sub-batch (one transaction)",
        "N",
    ),
    Parameter(
        "pause_ms", "--pause-ms", _size("pause_ms", "--pause-ms"), "sleep between sub-batches", "MS"
    ),
    Parameter(
        "interval_seconds",
        "--interval",
        _size("interval_seconds", "--interval"),
        "seconds between two jobs",
        "SECONDS",
    ),
)

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("list", "operations, newest first", list_operations, _LIST),
        Command(
            "show",
            "one operation and its last jobs",
            show,
            (_ID, _option("jobs", "--jobs", read.limit, "last jobs shown (default 10)", "N")),
        ),
        Command("failures", "failed jobs, newest first", failures, _FAILURES),
        Command("disabled", "the disabled operation classes", disabled),
        Command("pause", "stop an operation at its next checkpoint", pause, (_ID,), True),
        Command("resume", "run a paused operation again", resume, (_ID,), True),
        Command("cancel", "end an operation for good", cancel, (_ID,), True),
        Command("retry", "requeue an operation's failed jobs", retry, (_ID,), True),
        Command("set", "change sizes from the next job on", update, (_ID, *_SIZES), True),
        Command(
            "disable",
            "stop every operation of a class (kill switch)",
            disable,
            (_CLASS, _option("reason", "--reason", read.reason, "why, for the log", "TEXT")),
            True,
        ),
        Command("enable", "let a disabled class run again", enable, (_CLASS,), True),
    )
}


def parse(words: Sequence[str]) -> Invocation:
    """A command from its words (``["list", "--status", "active"]``, ``["pause", "42"]``):
    ``--flag value`` or ``--flag=value``, one positional argument where the command takes one,
    and ``--database NAME`` everywhere. Refused with :class:`InvalidCommand`."""
    if not words:
        raise InvalidCommand("no command given")
    command = COMMANDS.get(words[0].lower())
    if command is None:
        raise InvalidCommand(f"unknown command {words[0]!r}")
    flags = {p.flag: p for p in command.parameters if p.flag is not None}
    values: dict[str, Any] = {}
    database = None
    rest = list(words[1:])
    while rest:
        word = rest.pop(0)
        if not word.startswith("--"):
            parameter = command.positional
            if parameter is None or parameter.name in values:
                raise InvalidCommand(f"{command.name}: unexpected argument {word!r}")
            values[parameter.name] = parameter.parse(word)
            continue
        flag, has_value, value = word.partition("=")
        if flag != DATABASE_FLAG and flag not in flags:
            raise InvalidCommand(f"{command.name}: unknown option {flag!r}")
        if not has_value:
            if not rest:
                raise InvalidCommand(f"{command.name}: {flag} needs a value")
            value = rest.pop(0)
        if flag == DATABASE_FLAG:
            database = read.database_name(value)
        else:
            values[flags[flag].name] = flags[flag].parse(value)
    positional = command.positional
    if positional is not None and positional.name not in values:
        raise InvalidCommand(f"{command.name}: {positional.metavar} is missing")
    return Invocation(command, values, database)

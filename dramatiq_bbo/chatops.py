"""ChatOps: operate dramatiq-bbo from a chat line — ``chatops.handle(text, user) -> markdown``.

A bot hands each message addressed to it to :func:`handle` with the sender's name and posts
the reply. The line is the command line's, without ``dramatiq-bbo`` (``list --status
active``, ``show 42``, ``pause 42``, ``set 42 --batch-size 5000``, ``disable Purge --reason
"bad deploy"``): the commands, their parsing and their data come from
:mod:`dramatiq_bbo.operate.commands`, the markdown from :mod:`dramatiq_bbo.operate.render`.

Reading is open to whoever can talk to the bot. A command that changes something is asked of
``configure(chatops_authorize=fn)`` first: ``fn(user, command, target) -> bool`` where
``target`` is the operation id (or the class name for disable/enable) as text; without a
function every change is refused. Nothing a user types produces a traceback: a bad line gets
the usage, a refusal one line, an unexpected failure a short apology (logged with its trace).
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import traceback

import psycopg

from .configure import settings
from .errors import BBOError, InvalidCommand, NotAuthorized
from .logs import CHATOPS_COMMAND_FAILED, event
from .operate import render
from .operate.commands import COMMANDS, Context, Invocation, parse

#: commands a chat cannot run, and why
NOT_IN_CHAT = {
    "finalize": "finalize runs the rest of an operation in the calling process: run "
    "`dramatiq-bbo finalize ID` on a machine that may take that load",
}
#: words a bot may leave in front of the command (its name, a slash command)
PREFIXES = ("dramatiq-bbo", "bbo", "/bbo")
#: the longest chat line read (a command is a few words)
MAX_LINE = 2_000
#: the longest user name passed on as ``by``
MAX_USER = 200
#: the most rows a chat reply holds (``--limit``, ``--jobs``); also the default of
#: ``failures``, whose own default (100) is too long for a chat
MAX_CHAT_ROWS = 50


def usage() -> str:
    """The reply to ``help``, to an unknown command and to a malformed line."""
    lines = ["**dramatiq-bbo commands**", ""]
    for command in COMMANDS.values():
        change = " _(needs authorisation)_" if command.mutating else ""
        lines.append(f"- `{command.usage()}`: {command.help}{change}")
    lines += ["", "Every command also takes `--database NAME`."]
    return "\n".join(lines)


def handle(text: str, user: str) -> str:
    """Run one chat line for ``user``; the reply, in markdown. Never raises."""
    try:
        return _handle(text, user)
    except InvalidCommand as exc:
        return f"**error:** {_one_line(exc)}\n\n{usage()}"
    except NotAuthorized as exc:
        return f"**refused:** {_one_line(exc)}"
    except BBOError as exc:
        return f"**error:** {_one_line(exc)}"
    except psycopg.Error as exc:  # one the library did not wrap (a connection lost mid-read)
        return f"**error:** database error: {_one_line(exc)}"
    except Exception as exc:  # a reply, never a traceback in the chat; the trace in the log
        event(
            CHATOPS_COMMAND_FAILED,
            level=logging.ERROR,
            user=str(user)[:MAX_USER],
            command=str(text)[:MAX_LINE],
            error_class=type(exc).__name__,
            error=_one_line(exc),
            traceback=traceback.format_exc(),
        )
        return f"**error:** the command failed unexpectedly ({type(exc).__name__}); see the logs"


def _handle(text: str, user: str) -> str:
    if not isinstance(user, str) or not user.strip() or len(user) > MAX_USER:
        raise InvalidCommand(f"the user must be a name of 1..{MAX_USER} characters")
    user = user.strip()
    if not isinstance(text, str) or len(text) > MAX_LINE:
        raise InvalidCommand(f"a command is one line of at most {MAX_LINE} characters")
    try:
        words = shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        raise InvalidCommand(f"cannot read the line: {exc}") from None
    if words and words[0].lower() in PREFIXES:
        words = words[1:]
    if not words or words[0].lower() in ("help", "--help", "-h"):
        return usage()
    why_not = NOT_IN_CHAT.get(words[0].lower())
    if why_not is not None:
        return f"**not in chat:** {why_not}"
    invocation = _capped(parse(words))
    if invocation.command.mutating:
        authorize(user, invocation)
    result = invocation.run(Context(by=f"chat:{user}", database=invocation.database))
    return render.as_markdown(result)


def _capped(invocation: Invocation) -> Invocation:
    """The invocation with at most ``MAX_CHAT_ROWS`` rows asked for (InvalidCommand above)."""
    values = dict(invocation.values)
    for name in ("limit", "jobs"):
        if values.get(name, 0) > MAX_CHAT_ROWS:
            raise InvalidCommand(f"at most {MAX_CHAT_ROWS} rows in a chat, got {values[name]}")
    if invocation.command.name == "failures":
        values.setdefault("limit", MAX_CHAT_ROWS)
    return dataclasses.replace(invocation, values=values)


def authorize(user: str, invocation: Invocation) -> None:
    """Ask ``chatops_authorize`` whether ``user`` may run this change; NotAuthorized if not
    (or if no function is configured, or it fails)."""
    name = invocation.command.name
    check = settings().chatops_authorize
    if check is None:
        raise NotAuthorized(
            f"`{name}` changes operations and no chatops_authorize is configured: "
            "call bbo.configure(..., chatops_authorize=fn) to allow it"
        )
    try:
        allowed = check(user, name, invocation.target)
    except Exception as exc:  # refused; the operator finds why in the log
        event(
            CHATOPS_COMMAND_FAILED,
            level=logging.ERROR,
            user=user,
            command=name,
            target=invocation.target,
            error_class=type(exc).__name__,
            error=f"chatops_authorize failed: {_one_line(exc)}",
            traceback=traceback.format_exc(),
        )
        allowed = False
    if allowed is not True:
        target = f" {invocation.target}" if invocation.target else ""
        raise NotAuthorized(f"{user} may not run `{name}{target}`")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())

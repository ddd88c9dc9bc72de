"""The operator subcommands (list, show, pause, set, disable...), built from the command layer.

Each :class:`~dramatiq_bbo.operate.commands.Command` becomes a click command with the same
parameters, parsed by the same functions, so the command line and ChatOps accept and refuse
exactly the same things. A malformed value is a usage error (exit 2), a refusal by the
library (unknown operation, wrong state) an error (exit 1). Read commands print an aligned
table, or ``--json`` / ``--markdown``; a change prints one line saying what was done.
"""

from __future__ import annotations

from typing import Any

import click

from dramatiq_bbo.cli.main import (
    EXIT_OK,
    configure_library,
    database_option,
    dsn_option,
    operator,
)
from dramatiq_bbo.cli.output import emit
from dramatiq_bbo.errors import InvalidCommand
from dramatiq_bbo.operate.commands import COMMANDS, Command, Context, Parameter

_READ_EPILOG = """\b
--json prints the views' columns under their own names (see docs/operating.md); --markdown
prints the table as markdown (for a chat or an issue).
"""


class ParsedValue(click.ParamType):
    """A click type that reads its value with the command layer's parser; a refused value is a
    usage error naming the option and the value."""

    def __init__(self, parameter: Parameter) -> None:
        self.parameter = parameter
        self.name = parameter.metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.parameter.parse(value)
        except InvalidCommand as exc:
            raise click.UsageError(str(exc), ctx) from None


def click_parameter(parameter: Parameter) -> click.Parameter:
    kind = ParsedValue(parameter)
    if parameter.flag is None:
        return click.Argument([parameter.name], type=kind, metavar=parameter.metavar)
    return click.Option(
        [parameter.flag, parameter.name],
        type=kind,
        metavar=parameter.metavar,
        default=None,
        help=parameter.help,
    )


def format_options(function: Any) -> Any:
    """``--json`` and ``--markdown`` (the default is an aligned table)."""
    function = click.option(
        "--markdown", "markdown", is_flag=True, help="print markdown (a table, or the fields)"
    )(function)
    return click.option("--json", "as_json", is_flag=True, help="print JSON (stable keys)")(
        function
    )


def output_format(as_json: bool, markdown: bool) -> str:
    if as_json and markdown:
        raise click.UsageError("give at most one of --json and --markdown")
    return "json" if as_json else "markdown" if markdown else "table"


def build_command(command: Command) -> click.Command:
    """The click command for ``command``: its parameters, --dsn/--database, output format."""

    @click.pass_context
    def callback(ctx: click.Context, as_json: bool, markdown: bool, **values: Any) -> int:
        form = output_format(as_json, markdown)
        database = configure_library(ctx)
        given = {name: value for name, value in values.items() if value is not None}
        result = command.run(Context(by=operator(), database=database), **given)
        emit(result, form)
        return EXIT_OK

    function: Any = format_options(callback)
    function = database_option(dsn_option(function))
    built = click.command(
        command.name,
        help=command.help[0].upper() + command.help[1:] + ".",
        short_help=command.help,
        epilog=None if command.mutating else _READ_EPILOG,
    )(function)
    # The command layer's parameters after click's own (``--dsn``...): ID/CLASS first.
    built.params = [click_parameter(p) for p in command.parameters] + built.params
    return built


def register(group: click.Group) -> None:
    for command in COMMANDS.values():
        group.add_command(build_command(command))

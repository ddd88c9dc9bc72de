"""``dramatiq-bbo move-organization ID --target NAME``: move an organization's operations to
another cell's database, or finish a half-done move of it.

A move needs two databases, so this command takes them the way ``configure()`` does:
``--dsn`` (or ``BBO_DSN``) is the database named ``main``, and each ``--database NAME=DSN``
adds one more under its name (repeat it). ``--source`` and ``--target`` then name two of
them. Why names and not two bare DSNs: the move's record keeps the names and the arriving
operations carry the target's name, so the command speaks the same names as the
application's ``configure(dsn=..., databases={...})``, and a re-run is recognised by them.
Each committed step is printed as it happens; a re-run after a crash prints the steps it
still had to do.
"""

from __future__ import annotations

import click

from dramatiq_bbo.cli.main import (
    DEFAULT_DATABASE,
    EXIT_ERROR,
    EXIT_OK,
    dsn_option,
    require_dsn,
    target,
)
from dramatiq_bbo.errors import InvalidCommand
from dramatiq_bbo.operate import arguments as read

_DESCRIPTION = """\
Move the operations of organization ID (their cursors, counters, sizes, status, hold and job
history) from the --source database to the --target database: pause them, wait for their
running jobs to reach a checkpoint, copy them (inert at the target), delete them at the
source, resume them at the target as they were. Safe to run again: a move stopped at any
step (crash, timeout) is finished by the same command. Copy the organization's own rows
to the target first (see docs/cells.md).
"""


def register(group: click.Group) -> None:
    group.add_command(move_organization)


@click.command(
    "move-organization", help=_DESCRIPTION, short_help="move an organization to another cell"
)
@click.argument("organization_id", metavar="ID")
@dsn_option
@click.option(
    "--database",
    "databases",
    metavar="NAME=DSN",
    multiple=True,
    help="one more database and its name (repeat it), as configure(databases=...)",
)
@click.option(
    "--source",
    metavar="NAME",
    default=DEFAULT_DATABASE,
    show_default=True,
    help="the database the organization leaves (--dsn is main)",
)
@click.option(
    "--target",
    "target_name_",
    metavar="NAME",
    required=True,
    help="the database it moves to (a --database NAME)",
)
@click.option(
    "--target-name",
    metavar="NAME",
    help="the name the target cell's workers know their database by (default: --target)",
)
@click.option(
    "--wait",
    "wait_seconds",
    metavar="SECONDS",
    type=click.FloatRange(0, 86400),
    default=60.0,
    show_default=True,
    help="how long to wait for running jobs to reach a checkpoint",
)
@click.pass_context
def move_organization(
    ctx: click.Context,
    organization_id: str,
    databases: tuple[str, ...],
    source: str,
    target_name_: str,
    target_name: str | None,
    wait_seconds: float,
) -> int:
    import dramatiq_bbo as bbo

    if target(ctx).database is not None:
        raise click.UsageError("give --database NAME=DSN after move-organization", ctx)
    organization = read.organization(organization_id, option="ID")
    named = _databases(databases)
    dsn = require_dsn(ctx) if DEFAULT_DATABASE not in named else None
    bbo.configure(dsn=dsn, databases=named)
    ctx.call_on_close(bbo.reset)
    result = bbo.move_organization(
        organization,
        source=read.database_name(source, option="--source"),
        target=read.database_name(target_name_, option="--target"),
        target_database_name=target_name,
        wait_seconds=wait_seconds,
        on_step=lambda step, record: click.echo(f"{step.value}  (move {record.move_id})"),
    )
    click.echo(
        f"organization {organization}: {len(result.moved)} operation(s) moved from "
        f"{result.source!r} to {result.target!r}"
    )
    if result.left_behind:
        click.echo(
            f"{len(result.left_behind)} operation(s) were enqueued in {result.source!r} during "
            f"the move and stayed there: {', '.join(result.left_behind)}; run the move again",
            err=True,
        )
        return EXIT_ERROR
    return EXIT_OK


def _databases(values: tuple[str, ...]) -> dict[str, str]:
    """``NAME=DSN`` values → {name: dsn}; a malformed or repeated one is a usage error."""
    named: dict[str, str] = {}
    for value in values:
        name, sep, dsn = value.partition("=")
        if not sep or not dsn.strip():
            raise InvalidCommand(f"--database: expected NAME=DSN, got {value!r}")
        name = read.database_name(name)
        if name in named:
            raise InvalidCommand(f"--database: {name!r} is given twice")
        named[name] = dsn.strip()
    return named

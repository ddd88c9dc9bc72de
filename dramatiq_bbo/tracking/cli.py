"""``dramatiq-bbo tracking enable|disable|status``: the per-operation-type tracking flag.

Registered on the ``dramatiq-bbo`` group by :mod:`dramatiq_bbo.cli.main`; the flag itself
lives in :mod:`dramatiq_bbo.tracking.flags`.
"""

from __future__ import annotations

import click

from dramatiq_bbo.cli.main import EXIT_OK, configure_library, database_option, dsn_option, operator
from dramatiq_bbo.tracking import flags


def register(group: click.Group) -> None:
    group.add_command(tracking)


@click.group(short_help="turn tracking of bulk item operations on or off, per type")
def tracking() -> None:
    """Tracked bulk item operations: the per-operation-type flag (on unless disabled)."""


@tracking.command(short_help="turn tracking of an operation type on")
@click.argument("operation_type", metavar="TYPE")
@dsn_option
@database_option
@click.pass_context
def enable(ctx: click.Context, operation_type: str) -> int:
    """Turn tracking of TYPE on: tracking.create_operation(TYPE, ...) creates entries."""
    database = configure_library(ctx)
    flags.enable(operation_type, by=operator(), database=database)
    print(f"tracking of {operation_type} is on")
    return EXIT_OK


@tracking.command(short_help="turn tracking of an operation type off")
@click.argument("operation_type", metavar="TYPE")
@dsn_option
@database_option
@click.pass_context
def disable(ctx: click.Context, operation_type: str) -> int:
    """Turn tracking of TYPE off: tracking.create_operation(TYPE, ...) returns None."""
    database = configure_library(ctx)
    flags.disable(operation_type, by=operator(), database=database)
    print(f"tracking of {operation_type} is off")
    return EXIT_OK


@tracking.command(short_help="list the operation types whose flag was set")
@dsn_option
@database_option
@click.pass_context
def status(ctx: click.Context) -> int:
    """List the operation types whose flag was set (every other type is on)."""
    database = configure_library(ctx)
    rows = flags.list_flags(database=database)
    if not rows:
        print("no flag set: tracking is on for every operation type")
    for flag in rows:
        state = "on" if flag.enabled else "off"
        when = f"{flag.changed_at:%Y-%m-%d %H:%M:%S}"
        print(f"{flag.operation_type}\t{state}\t{when}\t{flag.changed_by or '-'}")
    return EXIT_OK

"""``dramatiq-bbo read-only add|remove|list``: the read-only flags of organizations.

Registered on the ``dramatiq-bbo`` group by :mod:`dramatiq_bbo.cli.main`; the flags live in
``bbo.read_only_organizations`` (:mod:`dramatiq_bbo.read_only.flags`), the default check's
table. An application that configured its own ``organization_read_only`` check answers for
itself: these commands change nothing it reads.
"""

from __future__ import annotations

import click

from dramatiq_bbo.cli.main import EXIT_OK, configure_library, database_option, dsn_option, operator
from dramatiq_bbo.read_only import flags


def register(group: click.Group) -> None:
    group.add_command(read_only)


@click.group(name="read-only", short_help="flag organizations read-only, lift flags, list them")
def read_only() -> None:
    """Read-only organizations: their operations are held (paused_by 'read-only organization')
    while flagged, and resume by themselves once the flag is lifted."""


_ORGANIZATION = click.option(
    "--organization", "organization_id", type=int, required=True, metavar="ID",
    help="the organization's id",
)  # fmt: skip


@read_only.command(short_help="flag an organization read-only")
@_ORGANIZATION
@click.option("--reason", metavar="TEXT", help="why (shown in hold_reason)")
@dsn_option
@database_option
@click.pass_context
def add(ctx: click.Context, organization_id: int, reason: str | None) -> int:
    """Flag an organization read-only: its running jobs stop at their next sub-batch, and no
    job of it starts until the flag is lifted."""
    database = configure_library(ctx)
    flags.mark_read_only(organization_id, reason=reason, by=operator(), database=database)
    print(f"organization {organization_id} is read-only")
    return EXIT_OK


@read_only.command(short_help="lift an organization's read-only flag")
@_ORGANIZATION
@dsn_option
@database_option
@click.pass_context
def remove(ctx: click.Context, organization_id: int) -> int:
    """Lift an organization's flag: its operations resume when their hold ends
    (read_only_hold_seconds)."""
    database = configure_library(ctx)
    removed = flags.clear_read_only(organization_id, by=operator(), database=database)
    state = "is no longer read-only" if removed else "was not read-only"
    print(f"organization {organization_id} {state}")
    return EXIT_OK


@read_only.command(name="list", short_help="list the read-only organizations")
@dsn_option
@database_option
@click.pass_context
def list_flags(ctx: click.Context) -> int:
    """List the flagged organizations: id, since, reason."""
    database = configure_library(ctx)
    rows = flags.read_only_organizations(database=database)
    if not rows:
        print("no organization is read-only")
    for flag in rows:
        print(f"{flag.organization_id}\t{flag.since:%Y-%m-%d %H:%M:%S}\t{flag.reason or '-'}")
    return EXIT_OK

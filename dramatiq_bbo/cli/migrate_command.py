"""``dramatiq-bbo migrate``: apply the pending schema files, or show which are applied.

A thin shell over :mod:`dramatiq_bbo.migrations`; the locking, ordering and the refusal of a
database that is ahead of this code live there, so the Python API and the command agree.
"""

from __future__ import annotations

import click

from dramatiq_bbo import migrations
from dramatiq_bbo.cli.main import EXIT_OK, dsn_option, require_dsn

_DESCRIPTION = """\
Apply the pending files of the dramatiq-bbo schema (schema "bbo" and dramatiq-pg's
schema "dramatiq"), each in its own transaction, recording them in bbo.schema_migrations.
Safe to run repeatedly and concurrently: a second run finds nothing to do.
"""


def register(group: click.Group) -> None:
    group.add_command(migrate)


@click.command(help=_DESCRIPTION, short_help="apply the pending schema migrations")
@dsn_option
@click.option(
    "--status",
    "show",
    is_flag=True,
    help="list applied, pending and unknown versions; change nothing",
)
@click.pass_context
def migrate(ctx: click.Context, show: bool) -> int:
    dsn = require_dsn(ctx)
    if show:
        return show_status(dsn)
    return apply(dsn)


def apply(dsn: str) -> int:
    files = {f.version: f for f in migrations.migration_files()}
    report = migrations.migrate(dsn)
    for version in report.applied_now:
        print(f"applied {files[version].path.name}")
    span = _span(sorted(files))
    if report.nothing_to_do:
        print(f"nothing to do: schema is up to date (versions {span})")
    else:
        print(f"schema is up to date (versions {span}): applied {len(report.applied_now)} now")
    return EXIT_OK


def show_status(dsn: str) -> int:
    files = {f.version: f for f in migrations.migration_files()}
    state = migrations.status(dsn)
    for version in state.applied:
        print(f"applied  {version}  {files[version].name}")
    for file in state.pending:
        print(f"pending  {file.version}  {file.name}")
    for version in state.unknown:
        print(f"unknown  {version}  (not known to this dramatiq-bbo: upgrade it)")
    summary = f"{len(state.applied)} applied, {len(state.pending)} pending"
    if state.unknown:
        summary += f", {len(state.unknown)} unknown"
    print(summary)
    return EXIT_OK


def _span(versions: list[str]) -> str:
    if not versions:
        return "none"
    return versions[0] if len(versions) == 1 else f"{versions[0]}..{versions[-1]}"

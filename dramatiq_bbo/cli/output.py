"""Drawing a command's result on the terminal: rich tables, or JSON, or markdown as text.

The columns and the formatting of every cell come from :mod:`dramatiq_bbo.operate.render`
(ChatOps shows the same); this module only lays them out. Output that is not a terminal (a
pipe, a file) gets the full width of the table rather than a terminal's 80 columns, so a
table read by a script is never wrapped.
"""

from __future__ import annotations

import io
import sys

import click
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table

from dramatiq_bbo.operate import render
from dramatiq_bbo.operate.results import Detail, Done, Listing, Result

#: the width given to rich when stdout is not a terminal
PIPE_WIDTH = 1_000
#: rich's SIMPLE_HEAD drawn in ASCII: what a pipe gets (a script, a log, a plain terminal)
ASCII_HEAD = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


def console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH
    return Console(file=stream, width=width, highlight=False, soft_wrap=False, emoji=False)


def show(renderable: RenderableType) -> None:
    """Print ``renderable`` on stdout; off a terminal, at its natural width, with no trailing
    spaces (what a script reading the table expects)."""
    out = console()
    if out.is_terminal:
        out.print(renderable)
        return
    buffer = io.StringIO()
    Console(file=buffer, width=PIPE_WIDTH, highlight=False, emoji=False).print(renderable)
    click.echo("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()))


def grid(headers: list[str], rows: list[list[str]], *, terminal: bool = True) -> Table:
    """An aligned table without borders, headers in bold, numbers right-aligned; its rule in
    ASCII off a terminal."""
    rule = box.SIMPLE_HEAD if terminal else ASCII_HEAD
    table = Table(box=rule, show_edge=False, pad_edge=False, header_style="bold")
    for index, header in enumerate(headers):
        numeric = bool(rows) and all(_numeric(row[index]) for row in rows)
        table.add_column(header, justify="right" if numeric else "left", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def _numeric(cell: str) -> bool:
    stripped = cell.replace(",", "").replace(".", "").replace("%", "").replace("/", "")
    return stripped.isdigit() or cell == "-"


def emit(result: Result, form: str) -> None:
    """Print ``result`` as ``form``: ``table``, ``json`` or ``markdown``."""
    if form == "json":
        click.echo(render.as_json(result))
    elif form == "markdown":
        click.echo(render.as_markdown(result))
    elif isinstance(result, Listing):
        _print_listing(result.kind, list(result.items))
    elif isinstance(result, Detail):
        _print_detail(result)
    else:
        assert isinstance(result, Done)
        click.echo(result.message)


def _print_listing(kind: str, items: list[render.Item]) -> None:
    if not items:
        click.echo(render.EMPTY[kind])
        return
    headers, rows = render.table(kind, items)
    show(grid(headers, rows, terminal=console().is_terminal))


def _print_detail(detail: Detail) -> None:
    fields = render.fields(detail.operation)
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        click.echo(f"{name:<{width}}  {value}")
    click.echo()
    click.echo(click.style("last jobs", bold=True))
    _print_listing("jobs", list(detail.jobs))

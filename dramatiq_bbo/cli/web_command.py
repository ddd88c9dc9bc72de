"""``dramatiq-bbo web``: serve the operators' web page alone (uvicorn), on 127.0.0.1 by default.

Standing alone, the page has no login of its own, so it is read-only unless ``--allow-actions``
is given: then every request may act, recorded as ``web:<client address>`` — for a page
reached only through an SSH tunnel or a trusted proxy. An application that has users mounts
:func:`dramatiq_bbo.web.create_app` behind its own authentication instead (docs/web.md).
"""

from __future__ import annotations

from typing import Any

import click

from dramatiq_bbo.cli.main import EXIT_OK, configure_library, database_option, dsn_option

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8077


def register(group: click.Group) -> None:
    group.add_command(web)


def _allow_everyone(request: Any, action: str, target: str | None) -> bool:
    return True


@click.command(
    "web",
    help="Serve the operators' web page (operations, failures, health) until Ctrl-C. "
    "Read-only unless --allow-actions.",
    short_help="serve the operators' web page",
)
@dsn_option
@database_option
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="address to bind")
@click.option("--port", type=click.IntRange(1, 65_535), default=DEFAULT_PORT, show_default=True)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="let every visitor pause, resume, cancel... (only behind your own access control)",
)
@click.option("--title", default="dramatiq-bbo", show_default=True, help="the pages' title")
@click.pass_context
def web(ctx: click.Context, host: str, port: int, allow_actions: bool, title: str) -> int:
    try:
        import uvicorn

        from dramatiq_bbo.web import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the web page needs the 'web' extra: pip install 'dramatiq-bbo[web]' ({exc})"
        ) from None
    database = configure_library(ctx)
    app = create_app(
        authorize=_allow_everyone if allow_actions else None, databases=[database], title=title
    )
    click.echo(f"dramatiq-bbo web: http://{host}:{port}/ (Ctrl-C to stop)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
    return EXIT_OK

"""The page's actions (POST only): pause, resume, cancel, retry, finalize, set sizes, and the
kill switch — run through the command layer, the same commands as the command line and
ChatOps (:mod:`dramatiq_bbo.operate.commands`), with the same parsers for every value.

Each POST passes three gates before anything is read from the database, each a 403 that
changes nothing: an ``authorize`` hook was given (else the page is read-only), the form
carries the browser's signed CSRF token (:mod:`.csrf`), and the hook allows this action on
this target. The command then runs with ``by="web:<who>"``, so the steering layer's own event
names who did it, and this module logs one :data:`WEB_ACTION` event per action (or
:data:`WEB_ACTION_REFUSED`, :data:`WEB_ACTION_FAILED`). On success the browser is sent back
to the page (303), which says what was done.

``finalize`` runs the rest of an operation in this process, which may take hours: it runs on
a thread of its own; the request waits a moment for an early refusal (an ended operation, a
disabled class) and then returns, while the page shows the operation moving.
"""

from __future__ import annotations

import inspect
import logging
import threading
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..errors import BBOError
from ..logs import event, logger
from ..operate.commands import COMMANDS, Command, Context, Invocation
from ..operate.results import Done, Result
from ..operate.running import FINALIZE
from . import csrf
from .config import Authorize, database_of, settings_of
from .rendering import error_page

#: one event per action done: ``action``, ``target``, ``by``, ``database``, ``result``
WEB_ACTION = "background_operation_web_action"
#: an action refused before it ran (no hook, bad CSRF token, the hook said no): ``reason``
WEB_ACTION_REFUSED = "background_operation_web_action_refused"
#: an action the command layer refused or that failed while running: ``error``
WEB_ACTION_FAILED = "background_operation_web_action_failed"

#: the actions on one operation (``POST /operations/{id}/<action>``)
OPERATION_ACTIONS: dict[str, Command] = {
    **{name: COMMANDS[name] for name in ("pause", "resume", "cancel", "retry")},
    "finalize": FINALIZE,
    "set": COMMANDS["set"],
}
#: the actions on an operation class (``POST /classes/<action>``, the class in the form)
CLASS_ACTIONS: dict[str, Command] = {name: COMMANDS[name] for name in ("disable", "enable")}
#: how long a finalize request waits for an early refusal before it returns (seconds)
FINALIZE_EARLY_SECONDS = 1.0
#: the longest ``who`` recorded
MAX_WHO = 200


def routes() -> list[Route]:
    made = [
        Route(f"/operations/{{operation_id}}/{name}", _on_operation(name), methods=["POST"],
              name=f"operation_{name}")
        for name in OPERATION_ACTIONS
    ]  # fmt: skip
    made += [
        Route(f"/classes/{name}", _on_class(name), methods=["POST"], name=f"class_{name}")
        for name in CLASS_ACTIONS
    ]
    return made


def _on_operation(action: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return await act(request, OPERATION_ACTIONS[action], request.path_params["operation_id"])

    return endpoint


def _on_class(action: str) -> Any:
    async def endpoint(request: Request) -> Response:
        form = await request.form()
        return await act(request, CLASS_ACTIONS[action], str(form.get("class_name") or ""))

    return endpoint


async def act(request: Request, command: Command, target_text: str) -> Response:
    """The three gates, then the command, then the redirect back to the page."""
    settings = settings_of(request)
    form = await request.form()
    action = command.name
    if settings.authorize is None:
        return _refused(request, action, target_text, "no authorize hook: read-only")
    if not csrf.accepted(request, settings.secret, _text(form, csrf.FIELD)):
        return _refused(request, action, target_text, "missing or wrong CSRF token")
    database = database_of(request, _text(form, "database"))
    invocation = Invocation(command, values_of(command, target_text, form), database)
    who = await _who(request, settings.authorize, action, invocation.target)
    if who is None:
        return _refused(request, action, invocation.target, "not authorised")
    context = Context(by=f"web:{who}", database=database)
    try:
        if command is FINALIZE:
            message = await run_in_threadpool(_start_finalize, invocation, context)
        else:
            message = _message(await run_in_threadpool(invocation.run, context))
    except BBOError as exc:
        event(WEB_ACTION_FAILED, action=action, target=invocation.target, by=context.by,
              database=database, error=" ".join(str(exc).split()))  # fmt: skip
        raise
    event(WEB_ACTION, action=action, target=invocation.target, by=context.by,
          database=database, result=message)  # fmt: skip
    return RedirectResponse(_back(request, action, invocation.target, database), 303)


def values_of(command: Command, target_text: str, form: FormData) -> dict[str, Any]:
    """The command's values: the target from the path (or the form), the other parameters
    from the form fields of the same names, each read by the command layer's parser
    (InvalidCommand, a 400, when malformed); empty fields are left out."""
    values: dict[str, Any] = {}
    for parameter in command.parameters:
        text = target_text if parameter.flag is None else _text(form, parameter.name)
        if text is not None and text.strip():
            values[parameter.name] = parameter.parse(text)
        elif parameter.flag is None:
            values[parameter.name] = parameter.parse(text or "")
    return values


async def _who(
    request: Request, authorize: Authorize, action: str, target: str | None
) -> str | None:
    """Who asks, if ``authorize`` allows it: the text it returned, else the request's
    authenticated user (Starlette's AuthenticationMiddleware), else the client's address."""
    answer = authorize(request, action, target)
    if inspect.isawaitable(answer):
        answer = await answer
    if isinstance(answer, str) and answer.strip():
        return answer.strip()[:MAX_WHO]
    if answer is not True:
        return None
    user = request.scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        return str(user.display_name)[:MAX_WHO]
    return request.client.host if request.client else "unknown"


def _refused(request: Request, action: str, target: str | None, reason: str) -> Response:
    client = request.client.host if request.client else None
    shown = None if target is None else target[:MAX_WHO]  # as sent, before any parsing
    event(WEB_ACTION_REFUSED, level=logging.WARNING, action=action, target=shown,
          reason=reason, client=client)  # fmt: skip
    return error_page(request, 403, f"{action} refused: {reason}")


def _start_finalize(invocation: Invocation, context: Context) -> str:
    """Start ``finalize`` on a thread of its own; raise its error if it fails at once."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            invocation.run(context)
        except BaseException as exc:
            failed.append(exc)
            if not isinstance(exc, BBOError):
                logger.exception("finalize of operation %s failed", invocation.target)

    thread = threading.Thread(target=run, name=f"bbo-web-finalize-{invocation.target}")
    thread.daemon = True
    thread.start()
    thread.join(FINALIZE_EARLY_SECONDS)
    if failed:
        raise failed[0]
    return f"operation {invocation.target} finalizing in the web server's process"


def _back(request: Request, action: str, target: str | None, database: str) -> str:
    if action in CLASS_ACTIONS:
        url = request.url_for("disabled")
    else:
        url = request.url_for("operation", operation_id=str(target))
    return str(url.include_query_params(database=database, done=action))


def _message(result: Result) -> str:
    return result.message if isinstance(result, Done) else "done"


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None

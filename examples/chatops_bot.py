"""A ChatOps bot for dramatiq-bbo: a small HTTP webhook server, standard library only.

Point a chat's outgoing webhook (Mattermost, Slack's slash commands, Rocket.Chat, or
anything that POSTs) at it. Each request carries the line typed and who typed it, as JSON
(``{"text": "pause 42", "user": "eve"}``) or as a form (``text=...&user_name=...``, what
Slack and Mattermost send); the reply is ``{"text": "<markdown>"}``, which those chats post.

    BBO_DSN=postgresql://... BBO_CHATOPS_OPERATORS=alice,eve BBO_CHATOPS_TOKEN=s3cret \\
        python examples/chatops_bot.py --port 8080

Reading (``list``, ``show 42``, ``failures --since 1h``...) is open to anyone who can reach
the bot; a change (``pause 42``, ``disable Purge``...) only to the users named in
``BBO_CHATOPS_OPERATORS``, through ``bbo.configure(chatops_authorize=...)``. With
``BBO_CHATOPS_TOKEN`` set, a request must carry that token (``token`` field, as the chats
send it, or an ``Authorization: Bearer`` header), or it gets 403.

To see it answer without a chat or a database of your own::

    python examples/chatops_bot.py --demo       # a throw-away Postgres; --dsn URL: yours

It types a few lines at the bot (a read, a change refused to a non-operator, the kill switch
set and lifted by an operator) and prints the replies.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import urllib.parse
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dramatiq_bbo as bbo
from dramatiq_bbo import chatops

#: the largest request body read (a chat line is short)
MAX_BODY = 16_384


def operators(names: Iterable[str]) -> Callable[[str, str, str | None], bool]:
    """A ``chatops_authorize`` letting the named users run every command."""
    allowed = frozenset(name.strip() for name in names if name.strip())

    def authorize(user: str, command: str, operation_id: str | None) -> bool:
        return user in allowed

    return authorize


def read_request(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a webhook request: JSON or a form, with ``user_name`` as ``user``."""
    if content_type.startswith("application/json"):
        loaded = json.loads(body or b"{}")
        fields = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
    else:
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        fields = {key: values[0] for key, values in form.items()}
    if "user" not in fields and "user_name" in fields:
        fields["user"] = fields["user_name"]
    return fields


def make_handler(token: str | None) -> type[BaseHTTPRequestHandler]:
    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length_text = self.headers.get("Content-Length") or "0"
            if not length_text.isdecimal():
                return self._reply(HTTPStatus.BAD_REQUEST, "a Content-Length is needed")
            length = int(length_text)
            if length > MAX_BODY:
                return self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request too large")
            try:
                fields = read_request(self.headers.get("Content-Type", ""), self.rfile.read(length))
            except ValueError:
                return self._reply(HTTPStatus.BAD_REQUEST, "send JSON or a form")
            if token is not None and not self._token_ok(fields):
                return self._reply(HTTPStatus.FORBIDDEN, "wrong or missing token")
            if not fields.get("user"):
                return self._reply(HTTPStatus.BAD_REQUEST, "who is asking? (user or user_name)")
            self._reply(HTTPStatus.OK, chatops.handle(fields.get("text", ""), fields["user"]))

        def _token_ok(self, fields: dict[str, str]) -> bool:
            given = fields.get("token") or self.headers.get("Authorization", "")
            given = given.removeprefix("Bearer ").strip()
            return token is not None and hmac.compare_digest(given.encode(), token.encode())

        def _reply(self, status: HTTPStatus, text: str) -> None:
            body = json.dumps({"text": text}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the chat is the log
            pass

    return Webhook


def make_server(host: str, port: int, *, token: str | None = None) -> ThreadingHTTPServer:
    """The webhook server (``port`` 0: any free port, see ``server.server_port``)."""
    return ThreadingHTTPServer((host, port), make_handler(token))


#: what ``--demo`` types in the chat, and who types it
DEMO_LINES = (
    ("eve", "help"),
    ("eve", "list"),
    ("mallory", "disable examples.purge_unconfirmed_emails --reason 'I can'"),
    ("alice", "disable examples.purge_unconfirmed_emails --reason 'bad deploy, INC-4711'"),
    ("eve", "disabled"),
    ("alice", "enable examples.purge_unconfirmed_emails"),
)


def post(url: str, user: str, text: str, token: str | None = None) -> str:
    """One chat line sent to the bot, as a chat's webhook would; the bot's reply."""
    import urllib.request

    body = json.dumps({"text": text, "user": user, "token": token or ""}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["text"])


def demo(dsn: str) -> list[tuple[str, str, str]]:
    """The bot on ``dsn`` (migrated here), alice its only operator, a few lines typed in
    the chat by her and others; returns (user, line, reply) and prints them."""
    import threading

    from dramatiq_bbo import migrations

    migrations.migrate(dsn)
    bbo.configure(dsn=dsn, chatops_authorize=operators(["alice"]))
    server = make_server("127.0.0.1", 0, token="demo-token")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/"
    exchanged = []
    try:
        for user, line in DEMO_LINES:
            reply = post(url, user, line, token="demo-token")
            print(f"{user}> {line}\n{reply}\n")
            exchanged.append((user, line, reply))
    finally:
        server.shutdown()
        server.server_close()
        bbo.reset()
    return exchanged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--demo",
        action="store_true",
        help="type a few lines at the bot and exit (on --dsn, or a throw-away Postgres)",
    )
    parser.add_argument("--dsn", help="with --demo: a Postgres of your own")
    args = parser.parse_args(argv)
    if args.demo:
        if args.dsn:
            demo(args.dsn)
            return
        from dramatiq_bbo.demo import runtime

        with runtime.embedded_server() as server:
            demo(server.dsn)
        return
    bbo.configure(
        os.environ["BBO_DSN"],
        chatops_authorize=operators(os.environ.get("BBO_CHATOPS_OPERATORS", "").split(",")),
    )
    server = make_server(args.host, args.port, token=os.environ.get("BBO_CHATOPS_TOKEN"))
    print(f"dramatiq-bbo ChatOps bot on http://{args.host}:{server.server_port}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

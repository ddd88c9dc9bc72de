"""``examples/chatops_bot.py``: the webhook server a chat posts to, over real HTTP and a real
Postgres — JSON and form requests, the token, and a change allowed only to its operators."""

from __future__ import annotations

import importlib.util
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from tests.integration.steering_support import Visit, make_counters

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chatops_bot.py"
TOKEN = "s3cret"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chatops_bot", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bot(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[tuple[str, str]]:
    """The bot on a free port, alice its only operator; yields its URL and an operation id."""
    example = load_example()
    make_counters(conn, 100)
    bbo.configure(dsn=dsn, chatops_authorize=example.operators(["alice"]))
    operation_id = str(bbo.enqueue(Visit, "counters", "id").operation.id)
    server = example.make_server("127.0.0.1", 0, token=TOKEN)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", operation_id
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        bbo.reset()


def post(url: str, body: bytes, content_type: str) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())["text"]
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())["text"]


def post_json(url: str, **fields: str) -> tuple[int, str]:
    return post(url, json.dumps(fields).encode(), "application/json")


def test_the_bot_answers_a_chat_and_lets_only_its_operators_change_things(
    bot: tuple[str, str],
) -> None:
    url, operation_id = bot

    status, text = post_json(url, text="list", user="bob", token=TOKEN)
    assert status == 200 and f"| {operation_id} | {Visit.name} |" in text

    status, text = post_json(url, text=f"pause {operation_id}", user="bob", token=TOKEN)
    assert status == 200 and text.startswith("**refused:** bob may not run `pause")

    form = urllib.parse.urlencode(
        {"text": f"pause {operation_id}", "user_name": "alice", "token": TOKEN}
    ).encode()
    status, text = post(url, form, "application/x-www-form-urlencoded")
    assert status == 200 and text.startswith(f"operation {operation_id} paused")
    assert bbo.get_operation(operation_id).status == bbo.OperationStatus.PAUSED


def test_the_bot_refuses_a_request_without_the_token_or_a_user(bot: tuple[str, str]) -> None:
    url, operation_id = bot
    assert post_json(url, text=f"pause {operation_id}", user="alice")[0] == 403
    assert post_json(url, text="list", user="alice", token="guess")[0] == 403
    assert post_json(url, text="list", token=TOKEN)[0] == 400
    assert post(url, b"{not json", "application/json")[0] == 400
    assert post(url, b"x" * 20_000, "application/json")[0] == 413
    assert bbo.get_operation(operation_id).status == bbo.OperationStatus.QUEUED

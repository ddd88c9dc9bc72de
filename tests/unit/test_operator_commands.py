"""The operator command layer without a database: what a typed word means, and what is refused
before anything is read or written (dramatiq_bbo.operate.arguments and commands.parse)."""

from __future__ import annotations

import datetime
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dramatiq_bbo as bbo
from dramatiq_bbo.errors import ConfigurationError, InvalidCommand
from dramatiq_bbo.operate import arguments, render
from dramatiq_bbo.operate.commands import COMMANDS, parse


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172800), ("1h30m", 5400), ("1w", 604800)],
)
def test_durations_read_as_an_operator_writes_them(text: str, seconds: int) -> None:
    assert arguments.duration(text) == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "1", "h", "-1h", "0m", "1y", "1h 2x", "400d", "nan", "1e9s"])
def test_a_malformed_or_out_of_range_duration_is_refused_naming_the_option(text: str) -> None:
    with pytest.raises(InvalidCommand, match="--since"):
        arguments.duration(text)


def test_ids_statuses_and_scopes_are_read_or_refused() -> None:
    key = uuid.uuid4()
    assert arguments.operation_id("42") == 42
    assert arguments.operation_id(str(key)) == key
    assert arguments.status("Active") == "active"
    assert arguments.scope("cell-local") == "cell_local"
    for parser, text in [
        (arguments.operation_id, "forty-two"),
        (arguments.operation_id, "99999999999999999999"),
        (arguments.status, "running"),
        (arguments.scope, "global"),
        (arguments.limit, "0"),
        (arguments.limit, "10001"),
        (arguments.limit, "3.5"),
        (arguments.organization, "-4"),
        (arguments.class_name, "two words"),
        (arguments.class_name, "x" * 256),
        (arguments.reason, "   "),
        (arguments.database_name, "x" * 64),
    ]:
        with pytest.raises(InvalidCommand):
            parser(text)


@pytest.mark.parametrize(
    ("flag", "text"),
    [("--batch-size", "-5"), ("--batch-size", "0"), ("--batch-size", "1.5"), ("--interval", "nan")],
)
def test_sizes_use_the_settings_bounds(flag: str, text: str) -> None:
    with pytest.raises(InvalidCommand, match=flag):
        parse(["set", "7", flag, text])


def test_parse_reads_flags_with_or_without_equals_and_the_database() -> None:
    invocation = parse(["list", "--status=paused", "--limit", "5", "--database", "ci"])
    assert invocation.command is COMMANDS["list"]
    assert invocation.values == {"status": "paused", "limit": 5}
    assert invocation.database == "ci"
    assert invocation.target is None

    pause = parse(["pause", "42"])
    assert pause.command.mutating and pause.target == "42"
    assert parse(["disable", "Purge", "--reason", "bad deploy"]).values == {
        "class_name": "Purge",
        "reason": "bad deploy",
    }


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ([], "no command"),
        (["frobnicate"], "unknown command"),
        (["pause"], "ID is missing"),
        (["pause", "1", "2"], "unexpected argument"),
        (["list", "7"], "unexpected argument"),
        (["list", "--force"], "unknown option"),
        (["list", "--status"], "needs a value"),
        (["show", "abc"], "not an operation id"),
    ],
)
def test_parse_refuses_a_malformed_line(words: list[str], message: str) -> None:
    with pytest.raises(InvalidCommand, match=message):
        parse(words)


def test_every_read_command_has_columns_and_every_command_a_usage() -> None:
    for command in COMMANDS.values():
        assert command.usage().startswith(command.name)
    assert {"operations", "failures", "jobs", "disabled"} <= set(render.EMPTY)


def test_cells_are_formatted_for_a_person() -> None:
    assert render.duration(3_725) == "1h 02m"
    assert render.duration(0.5) == "0.50s"
    assert render.percent(None) == "-" and render.percent(12.345) == "12.3%"
    assert render.text("2026-11-30T01:36:10.123456+00:00") == "2026-11-30 01:36:10"
    assert render.text("2026-11-30T02:36:10+01:00") == "2026-11-30 01:36:10"  # UTC
    assert render.text(1234567) == "1,234,567"


def test_chatops_authorize_must_be_a_callable_or_none() -> None:
    try:
        with pytest.raises(ConfigurationError, match="chatops_authorize"):
            bbo.configure("postgresql://x@127.0.0.1/x", chatops_authorize="yes")
        with pytest.raises(ConfigurationError, match="three arguments"):
            bbo.configure("postgresql://x@127.0.0.1/x", chatops_authorize=lambda user: True)
        configured = bbo.configure("postgresql://x@127.0.0.1/x", chatops_authorize=lambda *a: True)
        assert configured.chatops_authorize is not None
    finally:
        bbo.reset()


def test_the_operating_guide_names_every_command_and_every_json_key() -> None:
    import dataclasses
    from pathlib import Path

    from dramatiq_bbo.operate.kill_switch import DisabledClass
    from dramatiq_bbo.operate.running import FINALIZE
    from dramatiq_bbo.operate.summaries import FailedJob, JobSummary, OperationSummary

    guide = (Path(__file__).resolve().parents[2] / "docs" / "operating.md").read_text()
    for name in [*COMMANDS, FINALIZE.name, "watch", "migrate", "demo"]:
        assert f"| `{name}" in guide, name
    for kind in (OperationSummary, JobSummary, FailedJob, DisabledClass):
        for field in dataclasses.fields(kind):
            assert f"`{field.name}`" in guide, (kind.__name__, field.name)


def test_the_help_lists_every_command_and_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dramatiq_bbo.cli.main import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in [*COMMANDS, "finalize", "watch", "migrate", "demo"]:
        assert f"\n  {name} " in out, name
    for code in ("0", "1", "2", "3", "130"):
        assert f"  {code} " in out


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(
        st.one_of(
            st.sampled_from([*COMMANDS, "finalize", "help", "--status", "--limit", "--since"]),
            st.text(max_size=12),
        ),
        max_size=6,
    ),
    user=st.text(max_size=8),
)
def test_chatops_never_raises_whatever_is_typed(words: list[str], user: str) -> None:
    """Without a database configured, so every line ends in a reply before or at the first
    read: the usage, a refusal, or one error line."""
    from dramatiq_bbo import chatops

    reply = chatops.handle(" ".join(words), user)
    assert isinstance(reply, str) and reply
    assert "Traceback" not in reply

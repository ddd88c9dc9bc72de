"""The log events read well under any formatter, and stay structured for machines."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest

from dramatiq_bbo import logs
from dramatiq_bbo.logs import HEALTH_SIGNAL, JsonFormatter, event, render


@pytest.fixture
def stream() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    """A handler on the ``dramatiq_bbo`` logger writing to a string; removed afterwards."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    level = logs.logger.level
    logs.logger.addHandler(handler)
    logs.logger.setLevel(logging.DEBUG)
    yield out, handler
    logs.logger.removeHandler(handler)
    logs.logger.setLevel(level)


def test_the_message_text_names_the_event_then_its_fields_as_key_value(
    stream: tuple[io.StringIO, logging.Handler],
) -> None:
    out, handler = stream
    # dramatiq's own format: the message is all a reader of ``dramatiq app`` sees of an event
    handler.setFormatter(logging.Formatter("[%(name)s] [%(levelname)s] %(message)s"))
    event(
        HEALTH_SIGNAL,
        level=logging.WARNING,
        indicator="replication_lag",
        signal="stop",
        reason="lag 12s above 10s",
        operation_id="42",
        organization_id=None,
    )
    assert out.getvalue() == (
        "[dramatiq_bbo] [WARNING] background_operation_health_signal indicator=replication_lag"
        ' signal=stop reason="lag 12s above 10s" operation_id=42\n'
    )


def test_values_are_quoted_only_where_a_parser_would_need_it() -> None:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    text = render(
        "e",
        {
            "plain": "abc",
            "number": 1.5,
            "flag": False,
            "empty": "",
            "percent": "50%",
            "quote": 'say "hi"\nthen',
            "equals": "a=b",
            "cursor": [1, "x"],
            "id": ident,
            "absent": None,
        },
    )
    assert text == (
        'e plain=abc number=1.5 flag=false empty="" percent=50% quote="say \\"hi\\"\\nthen"'
        ' equals="a=b" cursor="[1,\\"x\\"]" id=12345678-1234-5678-1234-567812345678'
    )


def test_the_json_formatter_keeps_the_event_name_and_its_fields_unrendered(
    stream: tuple[io.StringIO, logging.Handler],
) -> None:
    out, handler = stream
    handler.setFormatter(JsonFormatter())
    event(HEALTH_SIGNAL, indicator="wal_rate", reason="50% of max", hold_seconds=2.5, extra=None)
    logs.logger.info("plain %s", "text")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == HEALTH_SIGNAL and first["level"] == "info"
    assert first["logger"] == "dramatiq_bbo" and first["time"].endswith("+00:00")
    assert (first["reason"], first["hold_seconds"], first["extra"]) == ("50% of max", 2.5, None)
    assert second["message"] == "plain text"


def test_a_percent_sign_in_a_value_is_never_read_as_a_placeholder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="dramatiq_bbo"):
        event("e", reason="100%s done %(x)d")
    (record,) = caplog.records
    assert record.getMessage() == 'e reason="100%s done %(x)d"'
    assert record.bbo == {"message": "e", "reason": "100%s done %(x)d"}  # type: ignore[attr-defined]


def test_the_json_formatter_adds_the_traceback_of_a_logged_exception(
    stream: tuple[io.StringIO, logging.Handler],
) -> None:
    out, handler = stream
    handler.setFormatter(JsonFormatter())
    try:
        raise ValueError("bad cursor")
    except ValueError:
        logs.logger.exception("could not hold operation %s", 7)
    (line,) = out.getvalue().splitlines()
    logged = json.loads(line)
    assert logged["message"] == "could not hold operation 7" and logged["level"] == "error"
    assert "ValueError: bad cursor" in logged["exception"]

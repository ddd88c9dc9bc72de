"""The reading API's JSON form: stable keys, and values JSON holds without loss."""

from __future__ import annotations

import datetime
import decimal
import json
import uuid

from dramatiq_bbo.operate.summaries import FailedJob, json_safe

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def test_json_safe_turns_timestamps_intervals_decimals_and_uuids_into_json_values() -> None:
    value = {
        "at": T0,
        "eta": datetime.timedelta(minutes=2, seconds=3),
        "progress": decimal.Decimal("42.5"),
        "id": uuid.UUID(int=1),
        "cursor": [1, "a", T0],
    }
    assert json_safe(value) == {
        "at": "2026-01-02T03:04:05+00:00",
        "eta": 123.0,
        "progress": 42.5,
        "id": "00000000-0000-0000-0000-000000000001",
        "cursor": [1, "a", "2026-01-02T03:04:05+00:00"],
    }


def test_as_dict_keeps_the_view_columns_as_keys_and_ids_as_text() -> None:
    failure = FailedJob(
        operation_id="9007199254740993",
        job_id="12",
        scope="cell_local",
        database_name="main",
        organization_id=None,
        job_class_name="Cleanup",
        attempts=3,
        min_cursor=[1],
        max_cursor=[100],
        checkpoint_cursor=None,
        exception_class="RuntimeError",
        exception_message="boom",
        failed_at=T0,
    )
    as_dict = failure.as_dict()
    assert list(as_dict) == list(FailedJob.__dataclass_fields__)
    assert as_dict["operation_id"] == "9007199254740993" and as_dict["job_id"] == "12"
    assert json.loads(json.dumps(as_dict)) == as_dict

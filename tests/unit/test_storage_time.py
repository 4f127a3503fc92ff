"""RFC3339 parsing/formatting and the zero-time mapping used by the storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from katib.storage.tables import (
    ZERO_TIME,
    ZERO_TIME_SENTINEL,
    format_rfc3339nano,
    from_db_time,
    parse_rfc3339,
    to_db_time,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-04T17:55:08Z", datetime(2024, 3, 4, 17, 55, 8, tzinfo=UTC)),
        ("2024-03-04T17:55:08.123456789Z", datetime(2024, 3, 4, 17, 55, 8, 123456, tzinfo=UTC)),
        ("2024-03-04T17:55:08.1z", datetime(2024, 3, 4, 17, 55, 8, 100000, tzinfo=UTC)),
        ("2024-03-04t19:55:08+02:00", datetime(2024, 3, 4, 17, 55, 8, tzinfo=UTC)),
        ("2024-03-04T12:25:08.5-05:30", datetime(2024, 3, 4, 17, 55, 8, 500000, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", ZERO_TIME),
        ("0001-01-01T00:00:00+01:00", ZERO_TIME),
    ],
)
def test_parse(text: str, expected: datetime) -> None:
    got = parse_rfc3339(text)
    assert got == expected and got.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "2024-03-04", "2024-03-04T17:55:08", "2024-13-01T00:00:00Z",
     "2024-03-04T17:55:08+25:00", "1709574908"],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2024, 3, 4, 17, 55, 8, 123456, tzinfo=UTC), "2024-03-04T17:55:08.123456Z"),
        (datetime(2024, 3, 4, 17, 55, 8, 120000, tzinfo=UTC), "2024-03-04T17:55:08.12Z"),
        (datetime(2024, 3, 4, 17, 55, 8, tzinfo=UTC), "2024-03-04T17:55:08Z"),
        (datetime(2024, 3, 4, 19, 55, 8, tzinfo=timezone(timedelta(hours=2))),
         "2024-03-04T17:55:08Z"),
        (ZERO_TIME, "0001-01-01T00:00:00Z"),
        (datetime(999, 5, 6, tzinfo=UTC), "0999-05-06T00:00:00Z"),
    ],
)
def test_format(value: datetime, text: str) -> None:
    assert format_rfc3339nano(value) == text


def test_zero_time_maps_to_sentinel_and_back() -> None:
    assert to_db_time(ZERO_TIME) == ZERO_TIME_SENTINEL
    assert to_db_time(datetime.min) == ZERO_TIME_SENTINEL
    assert to_db_time(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=3)))) == ZERO_TIME_SENTINEL
    assert from_db_time(ZERO_TIME_SENTINEL) == ZERO_TIME
    real = datetime(2024, 3, 4, 17, 55, 8, 1, tzinfo=UTC)
    assert to_db_time(real) == real.replace(tzinfo=None)
    assert from_db_time(to_db_time(real)) == real

"""JSON-lines metrics (Katib's File collector, format JSON) and the line-parser factory."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from katib.errors import InvalidArgumentError
from metrics_collector.json_parser import (
    BAD_TIMESTAMP,
    SKIP_BAD_VALUE,
    SKIP_EMPTY_VALUE,
    SKIP_INVALID_JSON,
    SKIP_NO_METRIC,
    SKIP_NOT_OBJECT,
    SKIP_TOO_LONG,
    JsonLineParser,
    parse_epoch_seconds,
)
from metrics_collector.parsers import (
    PARSE_HEAD_BYTES,
    ParsedMetric,
    TextParser,
    make_line_parser,
)

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def pairs(found: list[ParsedMetric]) -> list[tuple[str, str]]:
    return [(m.name, m.value) for m in found]


def test_numbers_and_strings_are_both_values_katib_drops_numbers() -> None:
    p = JsonLineParser(["loss", "accuracy"])
    found = p.parse_line('{"accuracy": "0.91", "loss": 0.22}', NOW)
    # metric-name order, numbers kept (Katib issue #2162 drops them)
    assert pairs(found) == [("loss", "0.22"), ("accuracy", "0.91")]
    assert all(type(m.value) is str for m in found)
    assert not p.skipped


@pytest.mark.parametrize("literal", ["1e-3", "-5", "2.50", "1E+10", "0", "-0.0"])
def test_number_literals_keep_their_text(literal: str) -> None:
    assert pairs(JsonLineParser(["lr"]).parse_line(f'{{"lr": {literal}}}', NOW)) == [
        ("lr", literal)
    ]


def test_huge_integer_literal_is_kept_not_converted() -> None:
    digits = "9" * 5000  # int() of this raises ValueError in Python >= 3.11
    assert pairs(JsonLineParser(["n"]).parse_line(f'{{"n": {digits}}}', NOW)) == [("n", digits)]


def test_nan_and_infinity_are_reported_as_text() -> None:
    found = JsonLineParser(["a", "b"]).parse_line('{"a": NaN, "b": -Infinity}', NOW)
    assert pairs(found) == [("a", "NaN"), ("b", "-Infinity")]


def test_string_values_are_stripped_and_empty_ones_skipped() -> None:
    p = JsonLineParser(["loss", "acc"])
    assert pairs(p.parse_line('{"loss": " 0.5 ", "acc": "  "}', NOW)) == [("loss", "0.5")]
    assert p.skipped == {SKIP_EMPTY_VALUE: 1}


@pytest.mark.parametrize("raw", ["true", "false", "null", "[1]", '{"v": 1}'])
def test_non_scalar_values_are_skipped_and_counted(raw: str) -> None:
    p = JsonLineParser(["loss"])
    assert p.parse_line(f'{{"loss": {raw}}}', NOW) == []
    assert p.skipped == {SKIP_BAD_VALUE: 1}


def test_bad_lines_are_counted_by_reason_not_fatal() -> None:
    p = JsonLineParser(["loss"])
    lines = [
        '{"loss": 1}',
        "loss=0.5",  # TEXT in a JSON file
        '["loss", 1]',
        '"loss"',
        '{"loss": 2,',  # cut short
        '{"epoch": 1, "note": "loss soon"}',  # names appear only in a value
        "",
        "   ",
        '{"epoch": 3}',  # no name at all: never parsed (pre-filter), not counted
        '{"loss": 3}',
    ]
    found = [m for line in lines for m in p.parse_line(line, NOW)]
    assert pairs(found) == [("loss", "1"), ("loss", "3")]
    assert p.skipped == {SKIP_INVALID_JSON: 2, SKIP_NOT_OBJECT: 2, SKIP_NO_METRIC: 1}
    assert p.summary() == "2 invalid JSON, 2 not a JSON object, 1 no requested metric key"


def test_only_top_level_keys_count() -> None:
    p = JsonLineParser(["loss"])
    assert p.parse_line('{"metrics": {"loss": 1}}', NOW) == []
    assert p.skipped == {SKIP_NO_METRIC: 1}


def test_duplicate_keys_last_wins() -> None:
    assert pairs(JsonLineParser(["loss"]).parse_line('{"loss": 1, "loss": 2}', NOW)) == [
        ("loss", "2")
    ]


def test_deep_nesting_does_not_raise() -> None:
    p = JsonLineParser(["loss"])
    assert p.parse_line('{"loss": ' + "[" * 100_000 + "]" * 100_000 + "}", NOW) == []
    assert sum(p.skipped.values()) == 1


def test_a_line_cut_at_the_parse_head_is_reported_as_too_long() -> None:
    p = JsonLineParser(["loss"])
    line = ('{"loss": 1, "pad": "' + "x" * PARSE_HEAD_BYTES + '"}').encode()
    assert p.parse_bytes(line[:PARSE_HEAD_BYTES], NOW) == []
    assert p.skipped == {SKIP_TOO_LONG: 1}


def test_bytes_crlf_bom_and_invalid_utf8() -> None:
    p = JsonLineParser(["loss", "acc"])
    assert pairs(p.parse_bytes(b'\xef\xbb\xbf{"loss": 1}\r', NOW)) == [("loss", "1")]
    found = p.parse_bytes(b'{"note": "\xff\xfe", "acc": "0.5"}', NOW)
    assert pairs(found) == [("acc", "0.5")]
    assert not p.skipped


# -- timestamps ------------------------------------------------------------------


def ts_of(line: str, p: JsonLineParser | None = None) -> datetime:
    found = (p or JsonLineParser(["loss"])).parse_line(line, NOW)
    assert len(found) == 1
    return found[0].timestamp


def test_float_epoch_fraction_is_seconds_not_nanoseconds() -> None:
    # Katib's unit test asserts 2021-12-02T05:27:27.000028721Z for this input (§5.4).
    ts = ts_of('{"loss": "1", "timestamp": 1638422847.28721}')
    assert ts == datetime(2021, 12, 2, 5, 27, 27, 287210, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1638422847", datetime(2021, 12, 2, 5, 27, 27, tzinfo=UTC)),
        ("1.638422847e9", datetime(2021, 12, 2, 5, 27, 27, tzinfo=UTC)),
        ('"1638422847.5"', datetime(2021, 12, 2, 5, 27, 27, 500000, tzinfo=UTC)),
        ("1638422847.1234569", datetime(2021, 12, 2, 5, 27, 27, 123456, tzinfo=UTC)),
        ('"2021-12-02T05:27:27.123456789Z"', datetime(2021, 12, 2, 5, 27, 27, 123456, tzinfo=UTC)),
        (
            '"2021-12-02T07:27:27+02:00"',
            datetime(2021, 12, 2, 7, 27, 27, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("-1.5", datetime(1969, 12, 31, 23, 59, 58, 500000, tzinfo=UTC)),
    ],
)
def test_timestamp_forms(raw: str, expected: datetime) -> None:
    ts = ts_of(f'{{"loss": 1, "timestamp": {raw}}}')
    assert ts == expected
    assert ts.tzinfo == UTC


@pytest.mark.parametrize(
    "raw", ['"yesterday"', "1e999999999", "NaN", "Infinity", "true", "[1]", '""', "1e12"]
)
def test_invalid_timestamps_fall_back_to_read_time_and_are_counted(raw: str) -> None:
    p = JsonLineParser(["loss"])
    assert ts_of(f'{{"loss": 1, "timestamp": {raw}}}', p) == NOW
    assert p.bad_timestamps == 1
    assert BAD_TIMESTAMP in p.summary()


def test_missing_or_null_timestamp_is_read_time_without_complaint() -> None:
    p = JsonLineParser(["loss"])
    assert ts_of('{"loss": 1}', p) == NOW
    assert ts_of('{"loss": 1, "timestamp": null}', p) == NOW
    assert p.bad_timestamps == 0
    before = datetime.now(UTC)
    (m,) = p.parse_line('{"loss": 1}')
    assert before <= m.timestamp <= datetime.now(UTC)


def test_parse_epoch_seconds_edges() -> None:
    assert parse_epoch_seconds("0") == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_epoch_seconds("253402300799.999999") == datetime(
        9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC
    )
    assert parse_epoch_seconds("253402300800") is None  # year 10000
    assert parse_epoch_seconds("abc") is None
    assert parse_epoch_seconds("sNaN") is None


# -- the factory -------------------------------------------------------------------


def test_make_line_parser_formats_and_katib_messages() -> None:
    text = make_line_parser("TEXT", ["loss"], [r"(\w+):\s*([\d.]+)"])
    assert isinstance(text, TextParser)
    assert pairs(text.parse_bytes(b"loss: 0.5", NOW)) == [("loss", "0.5")]
    assert isinstance(make_line_parser("text", ["loss"]), TextParser)
    js = make_line_parser("json", ["loss"])
    assert isinstance(js, JsonLineParser)
    assert js.metric_names == ("loss",)
    with pytest.raises(InvalidArgumentError, match="filter must be nil when format"):
        make_line_parser("JSON", ["loss"], ["(a)(b)"])
    with pytest.raises(InvalidArgumentError, match="format of metrics file is required"):
        make_line_parser("YAML", ["loss"])
    with pytest.raises(InvalidArgumentError, match="at least one metric"):
        JsonLineParser([" , "])


# -- fuzzing -----------------------------------------------------------------------

NAMES = ["loss", "accuracy", "val-loss"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_parse_bytes_never_raises(line: bytes) -> None:
    p = JsonLineParser(NAMES)
    for m in p.parse_bytes(b'{"loss": ' + line, NOW) + p.parse_bytes(line, NOW):
        assert m.name in NAMES and m.value


json_scalars = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from([*NAMES, "timestamp", "x"]), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([*NAMES, "timestamp", "x"]), json_scalars, max_size=5))
def test_fuzz_any_json_object_never_raises(obj: dict[str, object]) -> None:
    p = JsonLineParser(NAMES)
    found = p.parse_line(json.dumps(obj), NOW)
    assert {m.name for m in found} <= set(obj) & set(NAMES)


metric_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(NAMES), metric_values, min_size=1),
    st.one_of(st.none(), st.integers(min_value=0, max_value=4_000_000_000)),
    st.integers(min_value=0, max_value=999_999),
)
def test_fuzz_valid_lines_round_trip(
    values: dict[str, float | int | str], seconds: int | None, micros: int
) -> None:
    obj: dict[str, object] = dict(values)
    if seconds is not None:
        obj["timestamp"] = f"{seconds}.{micros:06d}"
    found = JsonLineParser(NAMES).parse_bytes(json.dumps(obj).encode(), NOW)
    assert [m.name for m in found] == [n for n in NAMES if n in values]
    for m in found:
        assert float(m.value) == float(values[m.name])
        expected = NOW
        if seconds is not None:
            expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
                seconds=seconds, microseconds=micros
            )
        assert m.timestamp == expected

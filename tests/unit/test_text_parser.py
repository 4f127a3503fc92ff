"""TEXT metric parsing: Katib's default filter, custom filters, timestamps, line splitting."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from katib.errors import InvalidArgumentError
from metrics_collector.parsers import (
    DEFAULT_FILTER,
    PARSE_HEAD_BYTES,
    ParsedMetric,
    TextParser,
    _default_finditer,
    format_rfc3339nano,
    parse_rfc3339,
    split_metric_names,
)
from metrics_collector.result import TrialResult, read_unreported, unreported_record
from metrics_collector.wrapper import LineAssembler

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
KATIB_LOG_FILTER = r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}"


def pairs(found: list[ParsedMetric]) -> list[tuple[str, str]]:
    return [(m.name, m.value) for m in found]


def test_default_filter_is_katibs() -> None:
    assert DEFAULT_FILTER == r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"


def test_multiple_pairs_per_line() -> None:
    p = TextParser(["loss", "accuracy"])
    assert pairs(p.parse_line("accuracy=0.9 loss=0.1", NOW)) == [
        ("accuracy", "0.9"),
        ("loss", "0.1"),
    ]


def test_spaces_around_equals_and_signs() -> None:
    p = TextParser(["loss"])
    assert pairs(p.parse_line("epoch 3: loss = -0.25", NOW)) == [("loss", "-0.25")]
    assert pairs(p.parse_line("loss=+7", NOW)) == [("loss", "+7")]


@pytest.mark.parametrize("value", ["1e-3", "2.5E+10", ".5", "3", "-1.5e7"])
def test_scientific_notation(value: str) -> None:
    assert pairs(TextParser(["lr"]).parse_line(f"lr={value}", NOW)) == [("lr", value)]


def test_names_must_match_exactly_not_as_substrings() -> None:
    p = TextParser(["loss"])
    line = "val_loss=0.3 loss_avg=0.2 x-loss=0.1 Loss=0.4"
    assert p.parse_line(line, NOW) == []
    assert pairs(p.parse_line(line + " loss=0.5", NOW)) == [("loss", "0.5")]


def test_prefilter_rejects_lines_without_names() -> None:
    p = TextParser(["loss"])
    assert p.parse_line("accuracy=0.9", NOW) == []
    assert not p.wanted(b"accuracy=0.9\nfoo=1\n")
    assert p.wanted(b"a=1\nloss=2\n")


def test_unparseable_default_values_are_skipped() -> None:
    p = TextParser(["loss"])
    for line in ["loss=nan", "loss=inf", "loss=", "loss=-", "loss=e5", "loss=+"]:
        assert p.parse_line(line, NOW) == [], line


def test_custom_filter_katib_logging_style_with_timestamp() -> None:
    p = TextParser(["loss", "accuracy"], [KATIB_LOG_FILTER])
    found = p.parse_line("2024-03-04T17:55:08Z INFO     {metricName: loss, metricValue: 0.3634}")
    assert pairs(found) == [("loss", "0.3634")]
    assert found[0].timestamp == datetime(2024, 3, 4, 17, 55, 8, tzinfo=UTC)


def test_custom_filter_may_report_nan_and_inf_as_text() -> None:
    p = TextParser(["loss"], [r"(\w+):\s*(\S+)"])
    assert pairs(p.parse_line("loss: nan", NOW)) == [("loss", "nan")]
    assert pairs(p.parse_line("loss: -inf", NOW)) == [("loss", "-inf")]


def test_several_custom_filters_all_apply() -> None:
    p = TextParser(["loss", "acc"], [r"(\w+)=(\S+)", r"'(\w+)':\s*([\d.]+)"])
    assert pairs(p.parse_line("loss=0.5 {'acc': 0.75}", NOW)) == [("loss", "0.5"), ("acc", "0.75")]


def test_custom_filter_optional_groups_that_did_not_match() -> None:
    p = TextParser(["loss"], [r"(loss)?=(\d+)?"])
    assert p.parse_line("=3 loss=", NOW) == []


@pytest.mark.parametrize("bad", [r"(\w+)=\d+", r"no groups", r"(unclosed=(\d+)"])
def test_bad_filters_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        TextParser(["loss"], [bad])


def test_metric_names_accept_katib_semicolons() -> None:
    assert split_metric_names("objective;extra1, extra2,;objective") == [
        "objective",
        "extra1",
        "extra2",
    ]
    assert TextParser(["a;b"]).metric_names == ("a", "b")
    with pytest.raises(InvalidArgumentError):
        TextParser([" ; "])


def test_timestamp_from_first_token_or_now() -> None:
    p = TextParser(["loss"])
    stamped = p.parse_line("2024-03-04T17:55:08.123456789+02:00 loss=1", NOW)
    assert stamped[0].timestamp == datetime(2024, 3, 4, 15, 55, 8, 123456, tzinfo=UTC)
    assert p.parse_line("INFO loss=1", NOW)[0].timestamp == NOW
    assert p.parse_line("2024-13-04T17:55:08Z loss=1", NOW)[0].timestamp == NOW
    before = datetime.now(UTC)
    assert p.parse_line("loss=1")[0].timestamp >= before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-04T17:55:08Z", datetime(2024, 3, 4, 17, 55, 8, tzinfo=UTC)),
        ("2024-03-04t17:55:08.5z", datetime(2024, 3, 4, 17, 55, 8, 500000, tzinfo=UTC)),
        ("2024-03-04T17:55:08-05:30", datetime(2024, 3, 4, 23, 25, 8, tzinfo=UTC)),
        ("2024-03-04T17:55:08", None),
        ("2024-03-04 17:55:08Z", None),
        ("2024-02-30T00:00:00Z", None),
        ("2024-03-04T17:55:08+99:00", None),
        ("not-a-time", None),
    ],
)
def test_parse_rfc3339(text: str, expected: datetime | None) -> None:
    assert parse_rfc3339(text) == expected


def test_format_rfc3339nano_matches_go() -> None:
    assert format_rfc3339nano(datetime(2024, 3, 4, 17, 55, 8, tzinfo=UTC)) == (
        "2024-03-04T17:55:08Z"
    )
    tz = timezone(timedelta(hours=2))
    assert format_rfc3339nano(datetime(2024, 3, 4, 17, 55, 8, 120000, tzinfo=tz)) == (
        "2024-03-04T15:55:08.12Z"
    )
    assert format_rfc3339nano(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00Z"


def test_parse_bytes_strips_cr_and_replaces_invalid_utf8() -> None:
    p = TextParser(["loss"])
    assert pairs(p.parse_bytes(b"\xff\xfe loss=0.5\r", NOW)) == [("loss", "0.5")]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab|-= .1e+\t_x", max_size=60))
def test_linear_default_matcher_equals_the_plain_regex(line: str) -> None:
    plain = re.compile(DEFAULT_FILTER, re.ASCII)
    assert [m.span() for m in _default_finditer(line)] == [m.span() for m in plain.finditer(line)]


def test_long_name_runs_do_not_backtrack_quadratically() -> None:
    p = TextParser(["loss"])
    line = "loss=1 " + "x" * PARSE_HEAD_BYTES + " y"
    started = time.perf_counter()
    assert pairs(p.parse_line(line, NOW)) == [("loss", "1")]
    assert time.perf_counter() - started < 1.0


def test_only_the_head_of_a_long_line_is_parsed() -> None:
    p = TextParser(["loss"])
    line = b"loss=1 " + b"x" * PARSE_HEAD_BYTES + b" loss=2"
    assert pairs(p.parse_bytes(line, NOW)) == [("loss", "1")]


# -- line assembly ------------------------------------------------------------------


def test_assembler_splits_across_chunks_and_strips_cr() -> None:
    a = LineAssembler()
    assert a.feed(b"lo") == []
    assert a.feed(b"ss=1\r\nacc") == [b"loss=1"]
    assert a.feed(b"=2\n\nx") == [b"acc=2", b""]
    assert a.finish() == [b"x"]
    assert a.finish() == []


def test_assembler_bounds_a_huge_line() -> None:
    a = LineAssembler(max_pending=1000, parse_head=100)
    out = a.feed(b"loss=1 " + b"y" * 5000)
    assert out == [(b"loss=1 " + b"y" * 5000)[:100]]
    assert a.feed(b"z" * 5000) == []
    assert a.feed(b"tail\nloss=2\n") == [b"loss=2"]
    assert a.finish() == []


def test_assembler_want_vetoes_blocks() -> None:
    a = LineAssembler()
    assert a.feed(b"a=1\nb=2\nc", want=lambda block: False) == []
    assert a.feed(b"=3\n", want=lambda block: False) == [b"c=3"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_assembler_reassembles_any_chunking(chunks: list[bytes]) -> None:
    a = LineAssembler(max_pending=10_000, parse_head=10_000)
    lines: list[bytes] = []
    for chunk in chunks:
        lines.extend(a.feed(chunk))
    lines.extend(a.finish())
    parts = b"".join(chunks).split(b"\n")
    if parts[-1] == b"":
        parts.pop()  # no partial line after a final newline
    expected = [ln[:-1] if ln.endswith(b"\r") else ln for ln in parts]
    assert lines == expected


# -- fuzzing ------------------------------------------------------------------------

NAMES = ["loss", "acc-1", "val|x"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500))
def test_fuzz_parse_bytes_never_raises(line: bytes) -> None:
    for found in (
        TextParser(NAMES).parse_bytes(b"loss=" + line, NOW),
        TextParser(NAMES, [KATIB_LOG_FILTER]).parse_bytes(line, NOW),
    ):
        for m in found:
            assert m.name in NAMES
            assert m.value and m.value == m.value.strip()
            assert m.timestamp.tzinfo is not None


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=200),
    st.sampled_from(["", "2024-03-04T17:55:08Z ", "2024-03-04T17:55:08.1+01:00 ", "9999 "]),
)
def test_fuzz_parse_line_never_raises(text: str, prefix: str) -> None:
    p = TextParser(NAMES)
    for m in p.parse_line(prefix + text + " loss=" + text, NOW):
        float(m.value)  # the default filter only ever reports numbers
        assert m.timestamp.utcoffset() == timedelta(0)


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(NAMES))
def test_fuzz_printed_floats_round_trip(value: float, name: str) -> None:
    found = TextParser(NAMES).parse_line(f"step 1 {name}={value!r} other=1", NOW)
    assert len(found) == 1 and found[0].name == name
    assert float(found[0].value) == value


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_rfc3339_never_raises(text: str) -> None:
    ts = parse_rfc3339(text)
    assert ts is None or ts.tzinfo is UTC


# -- result files -------------------------------------------------------------------


def test_result_round_trip_and_missing_and_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    assert TrialResult.read(path) is None
    r = TrialResult(exit_code=0, objective_seen=True, metrics_count=3, started_at="x")
    r.write(path)
    assert TrialResult.read(path) == r
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
    assert set(json.loads(path.read_text())) == {
        "exit_code",
        "signal",
        "objective_seen",
        "metrics_count",
        "unreported",
        "started_at",
        "finished_at",
        "error",
        "early_stopped",
        "early_stopped_reason",
        "reason",
        "metric_counts",
        "collector_kind",
    }
    path.write_text("{not json")
    corrupt = TrialResult.read(path)
    assert corrupt is not None and corrupt.error and "corrupt" in corrupt.error
    path.write_text('{"exit_code": 2, "future_key": 1}')
    assert TrialResult.read(path) == TrialResult(exit_code=2)


def test_unreported_records_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "unreported.jsonl"
    path.write_text(
        unreported_record("loss", "0.5", "2024-03-04T17:55:08Z")
        + "\n\n"
        + '{"metric_name": "loss", "val'
    )
    assert list(read_unreported(path)) == [
        {"metric_name": "loss", "value": "0.5", "time_stamp": "2024-03-04T17:55:08Z"}
    ]
    assert list(read_unreported(tmp_path / "missing")) == []

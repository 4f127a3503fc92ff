"""Fuzzing TEXT parsing with custom filters, and the file path end to end.

The default filter's fuzz tests live in test_text_parser.py; these cover Katib's
logging-style custom filter, timestamps that round-trip, and the invariance that
matters for following a file: however the writer's bytes are split across polls, the
metrics are the same as parsing the finished file in one go.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from metrics_collector.file_follower import FileFollower
from metrics_collector.parsers import (
    ParsedMetric,
    format_rfc3339nano,
    make_line_parser,
)

KATIB_LOG_FILTER = r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}"
NAMES = ["loss", "accuracy", "val-loss"]
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

timestamps = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
)
decimals = st.decimals(min_value=-(10**9), max_value=10**9, places=6, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_custom_filter_never_raises(line: bytes) -> None:
    parser = make_line_parser("TEXT", NAMES, [KATIB_LOG_FILTER])
    for m in parser.parse_bytes(b"{metricName: loss, metricValue: " + line, NOW):
        assert m.name in NAMES and m.value


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), decimals, timestamps), max_size=6))
def test_fuzz_katib_logging_lines_round_trip(
    entries: list[tuple[str, object, datetime]],
) -> None:
    parser = make_line_parser("TEXT", NAMES, [KATIB_LOG_FILTER])
    found: list[ParsedMetric] = []
    for name, value, ts in entries:
        line = f"{format_rfc3339nano(ts)} INFO     {{metricName: {name}, metricValue: {value}}}"
        found += parser.parse_bytes(line.encode(), NOW)
    assert [(m.name, m.value, m.timestamp) for m in found] == [
        (name, str(value), ts) for name, value, ts in entries
    ]


def _log(entries: list[tuple[int, float]]) -> bytes:
    kinds = [
        "epoch {i}: loss={v} accuracy={v}\n",
        "noise line {i} without metrics\r\n",
        "val-loss = {v}",  # no newline: glued to the next entry
        "\xff\xfe broken utf-8 loss={v}\n",
        "\n",
    ]
    text = "".join(kinds[k].format(i=i, v=v) for i, (k, v) in enumerate(entries))
    return text.encode("utf-8", errors="surrogateescape")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.floats(-1e6, 1e6, allow_nan=False)), max_size=30),
    st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=12),
)
def test_fuzz_following_in_pieces_equals_parsing_the_whole_file(
    entries: list[tuple[int, float]], pieces: list[int]
) -> None:
    data = _log(entries)
    parser = make_line_parser("TEXT", NAMES)
    whole = [
        (m.name, m.value)
        for line in data.split(b"\n")
        for m in parser.parse_bytes(line.rstrip(b"\r"), NOW)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metrics.log"
        follower = FileFollower(path, want=parser.wanted, read_chunk=7)
        got: list[tuple[str, str]] = []
        pos = 0
        for size in pieces * (len(data) // max(1, sum(pieces)) + 1):
            if pos >= len(data):
                break
            with open(path, "ab") as fh:
                fh.write(data[pos : pos + size])
            pos += size
            got += [
                (m.name, m.value) for ln in follower.poll() for m in parser.parse_bytes(ln, NOW)
            ]
        got += [(m.name, m.value) for ln in follower.finish() for m in parser.parse_bytes(ln, NOW)]
        assert pos >= len(data)
    assert got == whole


def test_timestamps_of_katib_lines_survive_the_file_path(tmp_path: Path) -> None:
    start = datetime(2024, 3, 4, 17, 55, 8, tzinfo=UTC)
    lines = [
        f"{format_rfc3339nano(start + timedelta(seconds=i))} INFO "
        f"{{metricName: loss, metricValue: 0.{i}}}\n"
        for i in range(5)
    ]
    (tmp_path / "m.log").write_text("".join(lines))
    parser = make_line_parser("TEXT", ["loss"], [KATIB_LOG_FILTER])
    found = [m for ln in FileFollower(tmp_path / "m.log").finish() for m in parser.parse_bytes(ln)]
    assert [(m.value, m.timestamp) for m in found] == [
        (f"0.{i}", start + timedelta(seconds=i)) for i in range(5)
    ]

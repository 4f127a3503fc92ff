"""TEXT metric parsing, compatible with Katib's file-metricscollector.

Katib reads ``name=value`` pairs out of log lines with one or more regex filters
(group 1 = name, group 2 = value) and keeps a pair only when the name is exactly a
requested metric name. This module does the same, per line, as cheaply as possible:
the hot path is a substring pre-filter that rejects almost every line before any
regex runs, because collection must cost well under 5% of a trial's CPU.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple, Protocol

from katib.errors import InvalidArgumentError

#: Katib's ``DefaultFilter`` (pkg/metricscollector/v1beta1/common/const.go), verbatim.
DEFAULT_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"

#: Only this many bytes of a line are parsed; longer lines are still logged in full.
PARSE_HEAD_BYTES = 64 * 1024

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


# Same as DEFAULT_FILTER but a match may not start inside a run of name characters.
# Python's backtracking engine is quadratic on long runs of name characters (RE2 is
# linear); a start inside a run can only succeed if the run's start (or the search
# position) succeeds first, so skipping those starts does not change the matches.
_DEFAULT_EXACT = re.compile(DEFAULT_FILTER, re.ASCII)
_DEFAULT_RUN_START = re.compile(r"(?<![\w|-])" + DEFAULT_FILTER, re.ASCII)


#: Below this length the plain regex's worst case is cheap, and findall() is fastest.
_SHORT_LINE = 512


def _default_finditer(line: str) -> Iterator[re.Match[str]]:
    """Go's FindAllStringSubmatch with DEFAULT_FILTER, in linear time."""
    pos, end = 0, len(line)
    while pos <= end:
        m = _DEFAULT_EXACT.match(line, pos) or _DEFAULT_RUN_START.search(line, pos)
        if m is None:
            return
        yield m
        pos = m.end() if m.end() > m.start() else m.end() + 1


def _default_pairs(line: str) -> list[tuple[str, ...]]:
    """(name, value, ...) groups of every DEFAULT_FILTER match on the line."""
    if len(line) <= _SHORT_LINE:
        return _DEFAULT_EXACT.findall(line)
    return [m.groups("") for m in _default_finditer(line)]


class ParsedMetric(NamedTuple):
    """One observation: the value stays text, as Katib stores it."""

    name: str
    value: str
    timestamp: datetime  # aware, UTC


def split_metric_names(values: str | Iterable[str]) -> list[str]:
    """Split names on ',' and Katib's ';', dropping blanks and duplicates (order kept)."""
    raw = [values] if isinstance(values, str) else list(values)
    names: list[str] = []
    for item in raw:
        for part in item.replace(";", ",").split(","):
            name = part.strip()
            if name and name not in names:
                names.append(name)
    return names


def compile_filters(filters: Sequence[str]) -> list[re.Pattern[str]]:
    """Compile filters once; reject ones that cannot yield a (name, value) pair.

    ASCII mode matches Go's RE2, where ``\\w`` and ``\\d`` are ASCII-only.
    """
    patterns: list[re.Pattern[str]] = []
    for text in filters:
        try:
            pattern = re.compile(text, re.ASCII)
        except re.error as exc:
            raise InvalidArgumentError(f"invalid metrics filter {text!r}: {exc}") from exc
        if pattern.groups < 2:
            raise InvalidArgumentError(
                f"metrics filter {text!r} must have at least 2 groups (name, value), "
                f"has {pattern.groups}"
            )
        patterns.append(pattern)
    return patterns


def parse_rfc3339(token: str) -> datetime | None:
    """Parse an RFC3339(Nano) timestamp to aware UTC; None if it is not one.

    Nanoseconds are truncated to microseconds, as the DBManager stores them anyway.
    """
    m = _RFC3339.fullmatch(token)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    micro = int((frac + "000000")[:6]) if frac else 0
    if m.group(8):
        tz: timezone = UTC
    else:
        off = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        if off >= timedelta(hours=24):
            return None
        tz = timezone(-off if m.group(9) == "-" else off)
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def format_rfc3339nano(ts: datetime) -> str:
    """Format like Go's RFC3339Nano in UTC: trailing zeros of the fraction trimmed, 'Z'."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    ts = ts.astimezone(UTC)
    base = (
        ts.strftime("%Y-%m-%dT%H:%M:%S")
        if ts.year >= 1000
        else (f"{ts.year:04d}" + ts.strftime("-%m-%dT%H:%M:%S"))
    )
    if ts.microsecond:
        base += "." + f"{ts.microsecond:06d}".rstrip("0")
    return base + "Z"


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


class TextParser:
    """Turns log lines into ParsedMetric for the requested metric names.

    Empty values (Katib's default filter yields one for ``loss=nan``) are skipped.
    With the default filter a value must also parse as a float: the regex can match
    a lone sign or exponent (``x=-``), which is never a real number. Custom filters
    report any non-empty value as text (``nan``, ``inf``), as Katib would.
    """

    def __init__(self, metric_names: Iterable[str], filters: Sequence[str] | None = None) -> None:
        names = split_metric_names(list(metric_names))
        if not names:
            raise InvalidArgumentError("at least one metric name is required")
        self.metric_names: tuple[str, ...] = tuple(names)
        self._names = frozenset(names)
        self._names_b = tuple(n.encode("utf-8") for n in names)
        texts = list(filters) if filters else [DEFAULT_FILTER]
        # findall() gives one tuple of groups per match ("" for a group that did not take
        # part), the cheapest way to get every (name, value) pair of a line.
        self._finders: list[tuple[Callable[[str], list[tuple[str, ...]]], bool]] = [
            (_default_pairs, True) if t == DEFAULT_FILTER else (p.findall, False)
            for p, t in zip(compile_filters(texts), texts, strict=True)
        ]

    def wanted(self, data: bytes) -> bool:
        """Cheap pre-filter: can any line in ``data`` hold a requested metric?"""
        return any(n in data for n in self._names_b)

    def parse_bytes(self, line: bytes, now: datetime | None = None) -> list[ParsedMetric]:
        """Parse one raw line (no newline); only its first PARSE_HEAD_BYTES are looked at."""
        if len(line) > PARSE_HEAD_BYTES:
            line = line[:PARSE_HEAD_BYTES]
        if not any(n in line for n in self._names_b):
            return []
        if line.endswith(b"\r"):
            line = line[:-1]
        return self._parse(line.decode("utf-8", errors="replace"), now)

    def parse_line(self, line: str, now: datetime | None = None) -> list[ParsedMetric]:
        """Parse one decoded line; ``now`` is the timestamp when the line has none."""
        if len(line) > PARSE_HEAD_BYTES:
            line = line[:PARSE_HEAD_BYTES]
        if not any(n in line for n in self._names):
            return []
        return self._parse(line, now)

    def _parse(self, line: str, now: datetime | None) -> list[ParsedMetric]:
        pairs: list[tuple[str, str]] = []
        for findall, numeric_only in self._finders:
            for groups in findall(line):
                name = groups[0].strip()
                if name not in self._names:
                    continue
                value = groups[1].strip()
                if not value or (numeric_only and not _is_float(value)):
                    continue
                pairs.append((name, value))
        if not pairs:
            return []
        ts = self._line_timestamp(line) or now or datetime.now(UTC)
        return [ParsedMetric(name, value, ts) for name, value in pairs]

    @staticmethod
    def _line_timestamp(line: str) -> datetime | None:
        stripped = line.lstrip()
        if not stripped[:1].isdigit():
            return None
        return parse_rfc3339(stripped.split(None, 1)[0])


class LineParser(Protocol):
    """What the collector needs from a line format (TextParser, JsonLineParser)."""

    @property
    def metric_names(self) -> tuple[str, ...]: ...

    def wanted(self, data: bytes) -> bool: ...

    def parse_bytes(self, line: bytes, now: datetime | None = None) -> list[ParsedMetric]: ...


#: Katib's ``fileSystemPath.format`` values.
FILE_FORMATS = ("TEXT", "JSON")


def make_line_parser(
    file_format: str, metric_names: Iterable[str], filters: Sequence[str] | None = None
) -> LineParser:
    """The parser for a metrics file format, with Katib's validation messages.

    TEXT takes the filters (or Katib's default one); JSON must not have any.
    """
    fmt = file_format.strip().upper()
    if fmt == "TEXT":
        return TextParser(metric_names, filters or None)
    if fmt == "JSON":
        if filters:
            raise InvalidArgumentError("filter must be nil when format of metrics file is json")
        # imported here: json_parser imports this module
        from metrics_collector.json_parser import JsonLineParser

        return JsonLineParser(metric_names)
    raise InvalidArgumentError(
        f"format of metrics file is required for metrics collector: {file_format!r} "
        f"is not one of {', '.join(FILE_FORMATS)}"
    )

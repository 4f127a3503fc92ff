"""JSON-lines metric parsing: Katib's File collector with ``format: JSON``, minus two bugs.

Katib reads one JSON object per line, takes each requested metric name that is a
top-level key, and the optional ``timestamp`` key. Two deliberate differences
(reference §5.4 and §12 item 10):

* **Numbers count.** Katib keeps a value only when it is a JSON *string* and silently
  drops ``"loss": 0.22`` (issue #2162). Here numbers and strings are both accepted. A
  number keeps its literal text (``1e-3`` stays ``1e-3``), so nothing is lost to float
  formatting, and ``NaN``/``Infinity`` (accepted by Python's json) are reported as text
  like a custom TEXT filter would. Booleans, null, arrays and objects are skipped.
* **Epoch timestamps are seconds with a real fraction.** Katib reads the fraction of a
  float timestamp as nanoseconds (``1638422847.28721`` becomes ``...27.000028721``);
  here it becomes ``...27.287210``. RFC3339 strings work as in Katib, and numeric
  strings are read as epoch seconds too.

Also unlike Katib, one bad line does not fail the whole collection: non-JSON lines,
non-object lines and unusable values are skipped and counted by reason in
``skipped``, so a MetricsUnavailable trial can say why. A line without a (valid)
timestamp gets the time it was read, as TextParser does.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from katib.errors import InvalidArgumentError
from metrics_collector.parsers import (
    PARSE_HEAD_BYTES,
    ParsedMetric,
    parse_rfc3339,
    split_metric_names,
)

TIMESTAMP_KEY = "timestamp"

SKIP_INVALID_JSON = "invalid JSON"
SKIP_TOO_LONG = "line too long (only the first 64 KiB is read)"
SKIP_NOT_OBJECT = "not a JSON object"
SKIP_NO_METRIC = "no requested metric key"
SKIP_BAD_VALUE = "value is not a number or string"
SKIP_EMPTY_VALUE = "empty value"
BAD_TIMESTAMP = "invalid timestamp (read time used)"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Epoch seconds with more integer digits than this are out of datetime's range anyway;
#: checking first keeps ``1e999999999`` from building a billion-digit integer.
_MAX_EPOCH_DIGITS = 12


class _Number(str):
    """A JSON number, kept as its literal text (json's parse_int/parse_float hooks)."""

    __slots__ = ()


_DECODER = json.JSONDecoder(parse_int=_Number, parse_float=_Number, parse_constant=_Number)


def parse_epoch_seconds(text: str) -> datetime | None:
    """Exact epoch seconds (``1638422847.28721``, ``1.6e9``) to aware UTC; None if invalid.

    Decimal keeps every digit of the literal, so the fraction is exact to the
    microsecond (further digits are truncated, as parse_rfc3339 does with nanoseconds).
    """
    try:
        d = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    if not d.is_finite() or d.adjusted() >= _MAX_EPOCH_DIGITS:
        return None
    micros = int(d.scaleb(6).to_integral_value(rounding=ROUND_FLOOR))
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        return None


class JsonLineParser:
    """Turns JSON lines into ParsedMetric for the requested metric names.

    Same interface as TextParser (``wanted``, ``parse_bytes``, ``parse_line``), so the
    collector can use either. Counters: ``skipped`` (reason -> lines or values dropped)
    and ``bad_timestamps``.
    """

    def __init__(self, metric_names: Iterable[str]) -> None:
        names = split_metric_names(list(metric_names))
        if not names:
            raise InvalidArgumentError("at least one metric name is required")
        self.metric_names: tuple[str, ...] = tuple(names)
        self._names_b = tuple(n.encode("utf-8") for n in names)
        self.skipped: Counter[str] = Counter()
        self.bad_timestamps = 0

    def wanted(self, data: bytes) -> bool:
        """Cheap pre-filter: can any line in ``data`` hold a requested metric key?

        Keys written with JSON escapes (``"\\u006coss"``) are not seen; nobody does that.
        """
        return any(n in data for n in self._names_b)

    def parse_bytes(self, line: bytes, now: datetime | None = None) -> list[ParsedMetric]:
        """Parse one raw line (no newline); invalid UTF-8 is replaced, not fatal."""
        if not any(n in line for n in self._names_b):
            return []
        return self._parse(line.decode("utf-8", errors="replace"), now)

    def parse_line(self, line: str, now: datetime | None = None) -> list[ParsedMetric]:
        """Parse one decoded line; ``now`` is the timestamp when the line has none."""
        if not any(n in line for n in self.metric_names):
            return []
        return self._parse(line, now)

    def summary(self) -> str:
        """Human-readable skip counts, e.g. for a MetricsUnavailable reason."""
        parts = [f"{count} {reason}" for reason, count in self.skipped.most_common()]
        if self.bad_timestamps:
            parts.append(f"{self.bad_timestamps} {BAD_TIMESTAMP}")
        return ", ".join(parts)

    def _parse(self, line: str, now: datetime | None) -> list[ParsedMetric]:
        obj = self._decode(line)
        if obj is None:
            return []
        found: list[tuple[str, str]] = []
        for name in self.metric_names:
            if name not in obj:
                continue
            value = self._value(obj[name])
            if value is not None:
                found.append((name, value))
        if not found:
            if not any(name in obj for name in self.metric_names):
                self.skipped[SKIP_NO_METRIC] += 1
            return []
        ts = self._timestamp(obj) or now or datetime.now(UTC)
        return [ParsedMetric(name, value, ts) for name, value in found]

    def _decode(self, line: str) -> dict[str, Any] | None:
        text = line.strip().lstrip("\ufeff")
        if not text:
            return None
        try:
            obj = _DECODER.decode(text)
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
            too_long = len(line.encode("utf-8", errors="replace")) >= PARSE_HEAD_BYTES
            self.skipped[SKIP_TOO_LONG if too_long else SKIP_INVALID_JSON] += 1
            return None
        if not isinstance(obj, dict):
            self.skipped[SKIP_NOT_OBJECT] += 1
            return None
        return obj

    def _value(self, raw: object) -> str | None:
        if isinstance(raw, str):  # a _Number is a str too: its literal text
            value = raw.strip()
            if value:
                return value
            self.skipped[SKIP_EMPTY_VALUE] += 1
            return None
        self.skipped[SKIP_BAD_VALUE] += 1
        return None

    def _timestamp(self, obj: dict[str, Any]) -> datetime | None:
        raw = obj.get(TIMESTAMP_KEY)
        if raw is None:
            return None
        ts: datetime | None = None
        if isinstance(raw, str):
            text = raw.strip()
            ts = parse_rfc3339(text)
            if ts is None:
                ts = parse_epoch_seconds(text)
        if ts is None:
            self.bad_timestamps += 1
        return ts

"""Where a trial's metrics come from, per Katib collector kind, as the wrapper sees them.

The wrapper always logs the trial's merged stdout/stderr to ``trial.log``. What it
parses depends on the kind (Katib's ``metricsCollectorSpec.collector.kind``):

* ``stdout`` (StdOut): the output itself, TEXT lines;
* ``file`` (File): a file the trial writes, followed while it runs and read to the end
  after it exits, TEXT or JSON lines (``source.fileSystemPath.format``);
* ``tfevent`` (TensorFlowEvent): every event file under a directory, followed likewise;
* ``push`` (Push) and ``none`` (None, Push's pre-v0.18 name): nothing; the trial calls
  ``katib.report_metrics`` itself;
* ``custom`` (Custom): nothing here either; the user's collector runs beside the trial
  and reports on its own (metrics_collector.custom_collector).

This module holds the parsing side of the first three kinds and the text that says,
when the objective never showed up, why: that text ends up in the trial's condition.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from metrics_collector.file_follower import FileFollower, FollowStatus
from metrics_collector.parsers import LineParser, ParsedMetric

#: Default polling intervals (seconds): a file is cheap to poll, a directory walk less so.
FILE_POLL_INTERVAL = 0.1
TFEVENT_POLL_INTERVAL = 0.5
#: How much of a line the reasons quote.
QUOTE_CHARS = 120


class SourceKind(StrEnum):
    """The wrapper's ``--source-kind``; KATIB_KINDS maps Katib's names onto it."""

    STDOUT = "stdout"
    FILE = "file"
    TFEVENT = "tfevent"
    PUSH = "push"
    NONE = "none"
    CUSTOM = "custom"


#: Katib's collector kinds (metricsCollectorSpec.collector.kind) -> the wrapper's.
KATIB_KINDS: dict[str, SourceKind] = {
    "StdOut": SourceKind.STDOUT,
    "File": SourceKind.FILE,
    "TensorFlowEvent": SourceKind.TFEVENT,
    "Push": SourceKind.PUSH,
    "None": SourceKind.NONE,
    "Custom": SourceKind.CUSTOM,
}

#: Kinds whose metrics the wrapper parses and reports itself.
COLLECTING_KINDS = frozenset({SourceKind.STDOUT, SourceKind.FILE, SourceKind.TFEVENT})


def _quote(line: bytes) -> str:
    text = line[: QUOTE_CHARS * 4].decode("utf-8", errors="replace")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text[:QUOTE_CHARS] + ("..." if len(text) > QUOTE_CHARS else ""))


class LineConsumer:
    """Parses lines with a LineParser and keeps what a MetricsUnavailable reason needs:
    how many lines mentioned the objective without giving it a value, and the first one.
    """

    def __init__(self, parser: LineParser, objective: str) -> None:
        self.parser = parser
        self.objective = objective
        self._objective_b = objective.encode("utf-8")
        self.unmatched_mentions = 0
        self.first_unmatched: bytes | None = None

    def parse(self, lines: Sequence[bytes], now: datetime | None = None) -> list[ParsedMetric]:
        """Metrics of ``lines``; a line without a leading timestamp gets ``now``."""
        if not lines:
            return []
        now = now or datetime.now(UTC)
        out: list[ParsedMetric] = []
        for line in lines:
            found = self.parser.parse_bytes(line, now)
            if found:
                out.extend(found)
            if self._objective_b in line and not any(m.name == self.objective for m in found):
                self.unmatched_mentions += 1
                if self.first_unmatched is None:
                    self.first_unmatched = line[: QUOTE_CHARS * 4]
        return out

    def mentions(self) -> str:
        """'' or '; N line(s) mention X without a value ..., e.g. <line>'."""
        if not self.unmatched_mentions:
            return ""
        text = (
            f"{self.unmatched_mentions} line(s) mention {self.objective} without a value "
            "the parser accepts"
        )
        if self.first_unmatched is not None:
            text += f", e.g. {_quote(self.first_unmatched)}"
        return text

    def parser_summary(self) -> str:
        """The parser's own skip counts (JSON lines), '' when it keeps none."""
        summary = getattr(self.parser, "summary", None)
        return str(summary()) if callable(summary) else ""


class MetricSource(Protocol):
    """A source the wrapper polls while the trial runs and finishes after it exits."""

    interval: float

    def poll(self) -> list[ParsedMetric]: ...

    def finish(self) -> list[ParsedMetric]: ...

    def missing_reason(self) -> str: ...

    def describe(self) -> str: ...


class FileSource:
    """Katib's File kind: a metrics file, TEXT or JSON lines."""

    def __init__(
        self, path: str | os.PathLike[str], consumer: LineConsumer, interval: float | None = None
    ) -> None:
        self.path = Path(path)
        self.consumer = consumer
        self.interval = FILE_POLL_INTERVAL if interval is None else max(0.01, interval)
        self.follower = FileFollower(self.path, want=consumer.parser.wanted)

    def poll(self) -> list[ParsedMetric]:
        return self.consumer.parse(self.follower.poll())

    def finish(self) -> list[ParsedMetric]:
        return self.consumer.parse(self.follower.finish())

    def missing_reason(self) -> str:
        """Why the objective never showed up in the file."""
        f = self.follower
        if f.status in (FollowStatus.MISSING, FollowStatus.UNREADABLE):
            return f.reason
        parts = [
            f"metrics file {self.path} ({f.stats.bytes_read} bytes read) has no value for "
            f"{self.consumer.objective}"
        ]
        for extra in (self.consumer.parser_summary(), self.consumer.mentions()):
            if extra:
                parts.append(extra)
        return "; ".join(parts)

    def describe(self) -> str:
        f = self.follower
        s = f.stats
        text = (
            f"metrics file {self.path}: {f.status}, {s.bytes_read} bytes, {s.lines} metric "
            f"line candidate(s), {s.truncations} truncation(s), {s.replacements} "
            f"replacement(s), {f.long_lines} cut line(s)"
        )
        skipped = self.consumer.parser_summary()
        return f"{text}; skipped: {skipped}" if skipped else text


class TfEventSource:
    """Katib's TensorFlowEvent kind: every event file under a directory."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        metric_names: Sequence[str],
        interval: float | None = None,
    ) -> None:
        # numpy and the event protos are imported only by trials that need them
        from metrics_collector.tfevent import TfEventFollower

        self.directory = Path(directory)
        self.objective = metric_names[0]
        self.interval = TFEVENT_POLL_INTERVAL if interval is None else max(0.01, interval)
        self.follower = TfEventFollower(self.directory, metric_names)

    def poll(self) -> list[ParsedMetric]:
        return self.follower.poll()

    def finish(self) -> list[ParsedMetric]:
        return self.follower.finish()

    def missing_reason(self) -> str:
        reason = self.follower.explain_missing(self.objective)
        skipped = _counts(self.follower.skipped)
        return f"{reason}; skipped: {skipped}" if skipped else reason

    def describe(self) -> str:
        f = self.follower
        text = (
            f"event directory {self.directory}: {f.status}, {len(f.files)} file(s), "
            f"{f.records} record(s), {f.scalars} scalar(s)"
        )
        skipped = _counts(f.skipped)
        return f"{text}; skipped: {skipped}" if skipped else text


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in counter.most_common())

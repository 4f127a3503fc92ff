"""The files a collector leaves in a trial directory, shared with the controller.

Kept free of gRPC and subprocess imports so the controller can read results cheaply.
``result.json`` is written atomically (temp file + os.replace), so a reader never
sees half a file; its absence means the collector has not finished (or died hard).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"
UNREPORTED_FILE = "unreported.jsonl"
TRIAL_LOG = "trial.log"
COLLECTOR_LOG = "collector.log"
COLLECTOR_PID = "collector.pid"
TRIAL_PID = "trial.pid"


def utc_now_iso() -> str:
    """ISO 8601 UTC with 'Z', microsecond precision: the format of started_at/finished_at."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class TrialResult:
    """How a trial's command ended, as seen by its metrics collector.

    ``signal`` is the signal that killed the command; if the collector was asked to
    stop (SIGTERM/SIGINT) and the command then exited on its own, it is the signal the
    collector received, so a stopped trial is never mistaken for a completed one.
    ``early_stopped`` says that the collector itself stopped the command because every
    early-stopping rule held (``signal``/``exit_code`` then tell how the command ended);
    ``early_stopped_reason`` gives the rules' account.

    ``reason`` says why the objective got no finite value from this collector (None
    when it got one): the file was never created, JSON lines were skipped, which event
    tags there were, ... The controller puts it in the MetricsUnavailable condition.
    ``metric_counts`` is the number of reports per metric (their DB step numbers run
    1..n in this order); ``collector_kind`` the wrapper's --source-kind.
    """

    exit_code: int | None = None
    signal: int | None = None
    objective_seen: bool = False
    metrics_count: int = 0
    unreported: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    early_stopped: bool = False
    early_stopped_reason: str | None = None
    reason: str | None = None
    metric_counts: dict[str, int] = field(default_factory=dict)
    collector_kind: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the on-disk key order."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        """Build from a decoded file, ignoring unknown keys (newer writers)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a reader sees the old file, no file, or the whole new one."""
        target = Path(path)
        # Unique per thread too: a server stops a trial from a request thread while its
        # reconciler may record the same trial's end from another.
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> TrialResult | None:
        """None if the file is missing; a corrupt file gives a result carrying the error."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            return cls(error=f"cannot read {path}: {exc}")
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return cls.from_dict(data)
        except (ValueError, TypeError) as exc:
            return cls(error=f"corrupt result file {path}: {exc}")


def unreported_record(metric_name: str, value: str, time_stamp: str) -> str:
    """One line of unreported.jsonl (without the newline)."""
    return json.dumps(
        {"metric_name": metric_name, "value": value, "time_stamp": time_stamp},
        ensure_ascii=False,
    )


def read_unreported(path: str | os.PathLike[str]) -> Iterator[dict[str, str]]:
    """Yield the records of an unreported.jsonl, skipping a torn last line."""
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and {"metric_name", "value", "time_stamp"} <= rec.keys():
                yield {k: str(rec[k]) for k in ("metric_name", "value", "time_stamp")}

"""Scalars out of TensorFlow event files without TensorFlow (Katib's TensorFlowEvent kind).

Katib's tfevent collector loads every file under a directory with TensorBoard's
EventAccumulator once the trial is over. This module reads the same files itself,
incrementally, so it can follow them while the trial runs:

* **TFRecord framing** with both checksums verified, corruption skipped and counted,
  and partial records at the tail retried: see metrics_collector.tfrecord.
* **Events**: parsed with the committed ``katib.tfevent`` stubs (a wire-compatible
  subset of TensorFlow's protos). Scalars come from ``simple_value`` (TF1, tensorboardX,
  PyTorch) and from one-element numeric tensors (TF2 ``tf.summary.scalar``, Keras),
  whether the value sits in ``tensor_content`` or in the typed ``*_val`` fields.
* **Tags to metrics**, as Katib does it (reference §5.1): for a metric ``m``, the last
  path segment of ``m`` must be a *prefix* of the tag, and when ``m`` has a directory
  part, the event file's directory must end with it. So ``accuracy`` matches the tags
  ``accuracy`` and ``accuracy_top5`` anywhere, and ``train/accuracy`` matches the tag
  ``accuracy`` in ``.../train/events.out.tfevents...``. One extension: a tag equal to
  the whole metric name also matches (``add_scalar("train/loss")`` in one directory,
  the usual PyTorch layout, which Katib cannot collect).
* Values are text exactly like Katib's ``str(ndarray)`` of a scalar (numpy's shortest
  round-trip form: ``0.1`` for a float32 0.1, not ``0.10000000149011612``), except that
  a one-element tensor of shape ``[1]`` gives ``0.1`` where Katib stores ``[0.1]``.
  Timestamps come from ``wall_time`` (Katib formats it in local time; the instant is
  the same), and ``step`` is kept on ScalarEvent for diagnostics.

Only files whose name contains ``tfevents`` are read (TensorBoard's own rule; Katib
tries every file and logs a warning for the rest).
"""

from __future__ import annotations

import math
import os
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np

from katib.apis.tfevent import katib_tfevent_pb2 as pb
from katib.errors import InvalidArgumentError
from metrics_collector.file_follower import FollowStatus
from metrics_collector.parsers import ParsedMetric, split_metric_names
from metrics_collector.tfrecord import MAX_RECORD_BYTES, EventFileReader

MAX_BYTES_PER_POLL = 32 * 1024 * 1024
RESCAN_INTERVAL = 1.0
EVENT_FILE_MARK = "tfevents"
#: At most this many distinct tags are remembered for diagnostics.
MAX_TAGS_SEEN = 200

# Reasons counted in ``skipped`` besides tfrecord's (corruption, truncation).
UNDECODABLE = "record is not an Event"
NOT_SCALAR = "tensor with more than one element"
NOT_NUMERIC = "non-numeric tensor"

_F32 = struct.Struct("<f")


class ScalarEvent(NamedTuple):
    """One scalar as written: the tag, the value as text, the step and the wall time."""

    tag: str
    value: str
    step: int
    wall_time: float


def format_float32(x: float) -> str:
    """Text of a float32 exactly as Katib stores it, ``str(np.float32(x))``: the shortest
    form that reads back to the same float32 (``0.1``, not ``0.10000000149011612``)."""
    return str(np.float32(x))


def format_float64(x: float) -> str:
    """Text of a float64 as Katib stores it, ``str(np.float64(x))``."""
    return str(np.float64(x))


def _half(bits: int) -> float:
    return float(struct.unpack("<e", struct.pack("<H", bits & 0xFFFF))[0])


def _bfloat16(bits: int) -> float:
    return float(_F32.unpack(struct.pack("<I", (bits & 0xFFFF) << 16))[0])


# dtype -> (struct format of one element in tensor_content, typed field, kind)
_DTYPES: dict[int, tuple[str, str, str]] = {
    pb.DT_FLOAT: ("<f", "float_val", "f32"),
    pb.DT_DOUBLE: ("<d", "double_val", "f64"),
    pb.DT_HALF: ("<H", "half_val", "f16"),
    pb.DT_BFLOAT16: ("<H", "half_val", "bf16"),
    pb.DT_INT32: ("<i", "int_val", "int"),
    pb.DT_INT16: ("<h", "int_val", "int"),
    pb.DT_INT8: ("<b", "int_val", "int"),
    pb.DT_UINT8: ("<B", "int_val", "int"),
    pb.DT_UINT16: ("<H", "int_val", "int"),
    pb.DT_INT64: ("<q", "int64_val", "int"),
}


def tensor_scalar(tensor: pb.TensorProto) -> tuple[str | None, str]:
    """(value text, "") for a one-element numeric tensor, else (None, reason skipped)."""
    spec = _DTYPES.get(tensor.dtype)
    if spec is None:
        return None, NOT_NUMERIC
    fmt, field, kind = spec
    shape = tensor.tensor_shape
    if not shape.unknown_rank and math.prod(d.size for d in shape.dim) != 1:
        return None, NOT_SCALAR
    raw: float | int
    if tensor.tensor_content:
        if len(tensor.tensor_content) != struct.calcsize(fmt):
            return None, NOT_SCALAR
        raw = struct.unpack(fmt, tensor.tensor_content)[0]
    else:
        values = getattr(tensor, field)
        if len(values) > 1:
            return None, NOT_SCALAR
        raw = values[0] if values else 0  # TensorFlow reads a value-less tensor as zeros
    if kind == "f32":
        return format_float32(float(raw)), ""
    if kind == "f64":
        return format_float64(float(raw)), ""
    if kind == "f16":
        return format_float32(_half(int(raw))), ""
    if kind == "bf16":
        return format_float32(_bfloat16(int(raw))), ""
    return str(int(raw)), ""


def decode_scalars(record: bytes, skipped: Counter[str] | None = None) -> list[ScalarEvent]:
    """The scalars in one Event record; anything else in it is ignored."""
    try:
        event = pb.Event.FromString(record)
    except Exception:  # the C parser's DecodeError, or anything odd it raises on garbage
        if skipped is not None:
            skipped[UNDECODABLE] += 1
        return []
    if not event.HasField("summary"):
        return []
    out: list[ScalarEvent] = []
    for value in event.summary.value:
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            text = format_float32(value.simple_value)
        elif kind == "tensor":
            maybe, reason = tensor_scalar(value.tensor)
            if maybe is None:
                if skipped is not None:
                    skipped[reason] += 1
                continue
            text = maybe
        else:
            continue  # image, histogram, audio, or metadata only
        out.append(ScalarEvent(value.tag, text, event.step, event.wall_time))
    return out


class TagMatcher:
    """Which requested metrics a tag in a given directory feeds (Katib's rule, see above)."""

    def __init__(self, metric_names: Iterable[str]) -> None:
        self.metric_names = tuple(split_metric_names(list(metric_names)))
        self._rules = [
            (m, m.split("/")[-1], os.path.dirname(m) if "/" in m else "") for m in self.metric_names
        ]
        self._cache: dict[tuple[str, str], tuple[str, ...]] = {}

    def match(self, tag: str, file_dir: str) -> tuple[str, ...]:
        """Metric names for ``tag`` read from an event file in directory ``file_dir``."""
        key = (tag, file_dir)
        hit = self._cache.get(key)
        if hit is None:
            hit = tuple(
                name
                for name, last, parent in self._rules
                if (tag.startswith(last) and file_dir.endswith(parent)) or tag == name
            )
            if len(self._cache) < 10_000:
                self._cache[key] = hit
        return hit


def _timestamp(wall_time: float) -> datetime:
    try:
        return datetime.fromtimestamp(wall_time, UTC)
    except (ValueError, OverflowError, OSError):
        return datetime.now(UTC)


class TfEventFollower:
    """Follows every event file under a directory: ``poll()`` while the trial runs,
    ``finish()`` after. Files may appear late and in subdirectories (Keras writes
    ``train/`` and ``validation/``; tensorboardX's ``add_hparams`` a timestamped one).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        metric_names: Iterable[str],
        *,
        rescan_interval: float = RESCAN_INTERVAL,
        max_record_bytes: int = MAX_RECORD_BYTES,
        max_bytes_per_poll: int = MAX_BYTES_PER_POLL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = os.fspath(directory)
        self.matcher = TagMatcher(metric_names)
        if not self.matcher.metric_names:
            raise InvalidArgumentError("at least one metric name is required")
        self.status = FollowStatus.WAITING
        self.reason = ""
        self.skipped: Counter[str] = Counter()
        self.records = 0
        self.scalars = 0
        #: tag -> directories it was seen in (scalars only), for "why no metric" messages
        self.tags_seen: dict[str, set[str]] = {}
        self._readers: dict[str, EventFileReader] = {}
        self._rescan = rescan_interval
        self._max_record = max_record_bytes
        self._budget = max_bytes_per_poll
        self._clock = clock
        self._scanned_at: float | None = None

    @property
    def files(self) -> list[str]:
        """Event files found so far."""
        return sorted(self._readers)

    def poll(self) -> list[ParsedMetric]:
        """Metrics from records completed since the last call."""
        if self.status in (FollowStatus.FINISHED, FollowStatus.MISSING):
            return []
        now = self._clock()
        if self._scanned_at is None or now - self._scanned_at >= self._rescan:
            self._scan()
            self._scanned_at = now
        out: list[ParsedMetric] = []
        budget = self._budget
        for path in sorted(self._readers):
            if budget <= 0:
                break
            reader = self._readers[path]
            before = reader.offset
            out.extend(self._metrics(path, reader.read(budget)))
            budget -= reader.offset - before
        return out

    def finish(self) -> list[ParsedMetric]:
        """Everything left in every file; sets the final status (MISSING: no event file)."""
        if self.status in (FollowStatus.FINISHED, FollowStatus.MISSING):
            return []
        self._scan()
        out: list[ParsedMetric] = []
        for path in sorted(self._readers):
            out.extend(self._metrics(path, self._readers[path].finish()))
        if self._readers:
            self.status = FollowStatus.FINISHED
        elif not os.path.isdir(self.directory):
            self.status = FollowStatus.MISSING
            self.reason = f"event directory {self.directory} was never created"
        else:
            self.status = FollowStatus.MISSING
            self.reason = (
                f"no TensorFlow event file (name containing {EVENT_FILE_MARK!r}) "
                f"under {self.directory}"
            )
        return out

    def close(self) -> None:
        """Release every file descriptor (finish() does this)."""
        for reader in self._readers.values():
            reader.close()

    def explain_missing(self, metric: str) -> str:
        """Why ``metric`` got no value: what scalar tags there were instead."""
        if self.status == FollowStatus.MISSING:
            return self.reason
        if not self.tags_seen:
            return f"no scalar summaries in the event files under {self.directory}"
        seen = ", ".join(
            f"{tag} (in {', '.join(sorted(os.path.relpath(d, self.directory) for d in dirs))})"
            for tag, dirs in sorted(self.tags_seen.items())[:20]
        )
        return f"no scalar tag matched metric {metric!r}; scalar tags seen: {seen}"

    def _scan(self) -> None:
        for root, dirs, files in os.walk(self.directory):
            dirs.sort()
            for name in files:
                if EVENT_FILE_MARK not in name:
                    continue
                path = os.path.join(root, name)
                if path not in self._readers:
                    self._readers[path] = EventFileReader(
                        path, max_record_bytes=self._max_record, skipped=self.skipped
                    )
                    self.status = FollowStatus.FOLLOWING

    def _metrics(self, path: str, records: list[bytes]) -> list[ParsedMetric]:
        out: list[ParsedMetric] = []
        if not records:
            return out
        file_dir = os.path.dirname(path)
        self.records += len(records)
        for record in records:
            for scalar in decode_scalars(record, self.skipped):
                self.scalars += 1
                dirs = self.tags_seen.get(scalar.tag)
                if dirs is None and len(self.tags_seen) < MAX_TAGS_SEEN:
                    self.tags_seen[scalar.tag] = dirs = set()
                if dirs is not None:
                    dirs.add(file_dir)
                names = self.matcher.match(scalar.tag, file_dir)
                if names:
                    ts = _timestamp(scalar.wall_time)
                    out.extend(ParsedMetric(name, scalar.value, ts) for name in names)
        return out

"""TensorFlow event files without TensorFlow: TFRecord framing, CRC32C, scalars, tag mapping.

Event files are written by a real writer library (tensorboardX), including TF2-style
tensor scalars built with tensorboardX's own protos, so the committed katib.tfevent
stubs are checked against an independent implementation of the wire format.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import google_crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from katib.apis.tfevent import katib_tfevent_pb2 as pb
from metrics_collector.file_follower import FollowStatus
from metrics_collector.tfevent import (
    NOT_NUMERIC,
    NOT_SCALAR,
    UNDECODABLE,
    TagMatcher,
    TfEventFollower,
    decode_scalars,
    format_float32,
)
from metrics_collector.tfrecord import (
    BAD_DATA_CRC,
    BAD_HEADER,
    OVERSIZED,
    TRUNCATED,
    EventFileReader,
    TFRecordParser,
    crc32c,
    crc32c_python,
    frame_record,
    masked_crc32c,
)

tbx = pytest.importorskip("tensorboardX")
from tensorboardX.event_file_writer import EventsWriter  # noqa: E402
from tensorboardX.proto import (  # noqa: E402
    event_pb2,
    summary_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from tensorboardX.record_writer import RecordWriter  # noqa: E402
from tensorboardX.record_writer import masked_crc32c as tbx_masked_crc32c  # noqa: E402

WALL = 1_700_000_000.25


def f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


# -- CRC32C and framing ----------------------------------------------------------------


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c_python(b"123456789") == 0xE3069283
    assert crc32c_python(b"") == 0


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_crc32c_python_fallback_matches_c_and_tensorboardx(data: bytes) -> None:
    assert crc32c_python(data) == google_crc32c.value(data) == crc32c(data)
    assert masked_crc32c(data) == tbx_masked_crc32c(data)


def test_frame_record_matches_tensorboardx_record_writer(tmp_path: Path) -> None:
    payloads = [b"", b"x", b"hello world" * 100]
    w = RecordWriter(str(tmp_path / "r"))
    for p in payloads:
        w.write(p)
    w.close()
    assert (tmp_path / "r").read_bytes() == b"".join(frame_record(p) for p in payloads)


records_st = st.lists(st.binary(max_size=200), max_size=8)


@settings(max_examples=150, deadline=None)
@given(records_st, st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_fuzz_records_round_trip_through_any_chunking(
    records: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(frame_record(r) for r in records)
    bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    parser = TFRecordParser()
    got: list[bytes] = []
    for a, b in itertools.pairwise(bounds):
        got += parser.feed(stream[a:b])
    assert parser.pending == 0
    assert parser.finish() == []
    assert got == records
    assert not parser.skipped and parser.garbage_bytes == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_fuzz_arbitrary_bytes_never_raise(data: bytes, step: int) -> None:
    parser = TFRecordParser(max_record_bytes=1000)
    got: list[bytes] = []
    for i in range(0, len(data), step):
        got += parser.feed(data[i : i + step])
    got += parser.finish()
    assert parser.pending == 0
    for record in got:
        decode_scalars(record, Counter())
    decode_scalars(data, Counter())


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=100), min_size=2, max_size=6),
    st.data(),
)
def test_fuzz_one_corrupt_byte_loses_only_its_record(
    records: list[bytes], data: st.DataObject
) -> None:
    frames = [frame_record(r) for r in records]
    k = data.draw(st.integers(min_value=0, max_value=len(frames) - 1))
    pos = data.draw(st.integers(min_value=0, max_value=len(frames[k]) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    bad = bytearray(frames[k])
    bad[pos] ^= flip
    stream = b"".join(frames[:k]) + bytes(bad) + b"".join(frames[k + 1 :])
    parser = TFRecordParser()
    got = parser.feed(stream)
    got += parser.finish()
    assert got == records[:k] + records[k + 1 :]
    assert sum(parser.skipped.values()) == 1
    assert set(parser.skipped) <= {BAD_HEADER, BAD_DATA_CRC}


def test_garbage_between_records_is_skipped_and_counted_once() -> None:
    parser = TFRecordParser()
    got = parser.feed(frame_record(b"a") + b"\x00garbage!" * 10 + frame_record(b"b"))
    assert got == [b"a", b"b"]
    assert parser.skipped == {BAD_HEADER: 1}
    assert parser.garbage_bytes == 90


def test_incomplete_tail_is_waited_for_then_counted_at_the_end() -> None:
    frame = frame_record(b"payload" * 10)
    parser = TFRecordParser()
    assert parser.feed(frame[:5]) == []  # inside the header
    assert parser.feed(frame[5:30]) == []  # inside the data
    assert parser.feed(frame[30:-1]) == []  # inside the footer
    assert not parser.skipped  # a writer mid-record is not corruption
    assert parser.feed(frame[-1:] + frame[:3]) == [b"payload" * 10]
    assert parser.finish() == []
    assert parser.skipped == {TRUNCATED: 1}


def test_payload_that_looks_like_a_header_does_not_derail_the_search() -> None:
    # An 8-byte payload followed by its checksum has exactly the shape of a header.
    eight = frame_record(b"\0" * 8)
    bad = bytearray(eight)
    bad[0] ^= 1
    parser = TFRecordParser()
    assert parser.feed(bytes(bad) + frame_record(b"x")) == [b"x"]
    assert parser.skipped == {BAD_HEADER: 1}
    tail = bytearray(frame_record(b"\0" * 8))
    tail[0] ^= 1  # the look-alike header at the end claims data that never comes
    parser = TFRecordParser()
    assert parser.feed(frame_record(b"a") + bytes(tail)) == [b"a"]
    assert parser.finish() == []
    assert parser.skipped == {BAD_HEADER: 1}


def test_oversized_record_is_skipped_without_buffering() -> None:
    big = frame_record(b"z" * 5000)
    parser = TFRecordParser(max_record_bytes=1000)
    got = parser.feed(big[:100])
    assert parser.pending == 0  # not held: dropped as it streams by
    got += parser.feed(big[100:3000])
    got += parser.feed(big[3000:] + frame_record(b"next"))
    assert got == [b"next"]
    assert parser.skipped == {OVERSIZED: 1}


# -- scalars -----------------------------------------------------------------------------


def tf2_value(tag: str, tensor: tensor_pb2.TensorProto, plugin: str = "scalars") -> object:
    meta = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin)
    )
    return summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=meta)


def shape(*dims: int) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )


def tensor(dtype: int, *dims: int, **fields: object) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape(*dims), **fields)


def event_bytes(step: int, *values: object, wall_time: float = WALL) -> bytes:
    ev = event_pb2.Event(
        wall_time=wall_time, step=step, summary=summary_pb2.Summary(value=list(values))
    )
    return bytes(ev.SerializeToString())


def test_tensorboardx_add_scalar_simple_values(tmp_path: Path) -> None:
    w = tbx.SummaryWriter(str(tmp_path))
    for step, loss in enumerate([0.1, 1 / 3, 2.5e-7, 1e10, float("nan")]):
        w.add_scalar("loss", loss, step, walltime=WALL + step)
    w.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    reader = EventFileReader(str(path))
    scalars = [s for r in reader.finish() for s in decode_scalars(r)]
    assert [(s.tag, s.value, s.step, s.wall_time) for s in scalars] == [
        ("loss", "0.1", 0, WALL),
        ("loss", "0.33333334", 1, WALL + 1),
        ("loss", "2.5e-07", 2, WALL + 2),
        ("loss", "1e+10", 3, WALL + 3),
        ("loss", "nan", 4, WALL + 4),
    ]
    assert not reader.skipped


F16_ONE_THIRD = struct.unpack("<H", struct.pack("<e", 1 / 3))[0]


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (tensor(types_pb2.DT_FLOAT, float_val=[0.25]), "0.25"),
        (tensor(types_pb2.DT_FLOAT, tensor_content=struct.pack("<f", 0.1)), "0.1"),
        (tensor(types_pb2.DT_FLOAT, 1, float_val=[0.5]), "0.5"),  # shape [1]
        (tensor(types_pb2.DT_FLOAT, 1, 1, tensor_content=struct.pack("<f", 2)), "2.0"),
        (tensor(types_pb2.DT_DOUBLE, double_val=[0.1]), "0.1"),
        (
            tensor(types_pb2.DT_DOUBLE, tensor_content=struct.pack("<d", 1 / 3)),
            "0.3333333333333333",
        ),
        (tensor(types_pb2.DT_DOUBLE, double_val=[1e16]), "1e+16"),
        (tensor(types_pb2.DT_HALF, half_val=[F16_ONE_THIRD]), "0.33325195"),
        (tensor(types_pb2.DT_HALF, tensor_content=struct.pack("<e", 1.5)), "1.5"),
        (tensor(types_pb2.DT_BFLOAT16, half_val=[0x3FC0]), "1.5"),
        (tensor(types_pb2.DT_INT64, int64_val=[-(2**40)]), str(-(2**40))),
        (tensor(types_pb2.DT_INT32, tensor_content=struct.pack("<i", 7)), "7"),
        (tensor(types_pb2.DT_INT32, int_val=[3]), "3"),
        (tensor(types_pb2.DT_FLOAT), "0.0"),  # no value at all: TensorFlow reads zeros
    ],
)
def test_tf2_tensor_scalars(t: tensor_pb2.TensorProto, expected: str) -> None:
    skipped: Counter[str] = Counter()
    (s,) = decode_scalars(event_bytes(3, tf2_value("epoch_loss", t)), skipped)
    assert (s.tag, s.value, s.step, s.wall_time) == ("epoch_loss", expected, 3, WALL)
    assert not skipped


@pytest.mark.parametrize(
    ("t", "reason"),
    [
        (tensor(types_pb2.DT_FLOAT, 3, float_val=[1, 2, 3]), NOT_SCALAR),  # e.g. a histogram
        (tensor(types_pb2.DT_FLOAT, 0), NOT_SCALAR),
        (tensor(types_pb2.DT_FLOAT, float_val=[1, 2]), NOT_SCALAR),
        (tensor(types_pb2.DT_FLOAT, tensor_content=b"\0" * 8), NOT_SCALAR),
        (tensor(types_pb2.DT_STRING, string_val=[b"some text"]), NOT_NUMERIC),
        (tensor(types_pb2.DT_BOOL, bool_val=[True]), NOT_NUMERIC),
    ],
)
def test_tensors_that_are_not_numeric_scalars_are_skipped(
    t: tensor_pb2.TensorProto, reason: str
) -> None:
    skipped: Counter[str] = Counter()
    assert decode_scalars(event_bytes(1, tf2_value("x", t)), skipped) == []
    assert skipped == {reason: 1}


def test_non_scalar_values_and_non_summary_events_are_ignored() -> None:
    image = summary_pb2.Summary.Value(tag="img", image=summary_pb2.Summary.Image(height=1, width=1))
    histo = summary_pb2.Summary.Value(tag="h", histo=summary_pb2.HistogramProto(min=1))
    scalar = summary_pb2.Summary.Value(tag="loss", simple_value=0.5)
    skipped: Counter[str] = Counter()
    found = decode_scalars(event_bytes(1, image, histo, scalar), skipped)
    assert [(s.tag, s.value) for s in found] == [("loss", "0.5")]
    version = event_pb2.Event(wall_time=WALL, file_version="brain.Event:2").SerializeToString()
    assert decode_scalars(version, skipped) == []
    assert decode_scalars(b"\xff\xff\xff", skipped) == []
    assert skipped == {UNDECODABLE: 1}


def test_our_stubs_and_tensorboardx_agree_on_the_wire() -> None:
    ours = pb.Event(
        wall_time=WALL,
        step=9,
        summary=pb.Summary(
            value=[
                pb.Summary.Value(
                    tag="acc",
                    tensor=pb.TensorProto(dtype=pb.DT_DOUBLE, double_val=[0.75]),
                    metadata=pb.SummaryMetadata(
                        plugin_data=pb.SummaryMetadata.PluginData(plugin_name="scalars"),
                        data_class=pb.DATA_CLASS_SCALAR,
                    ),
                )
            ]
        ),
    )
    theirs = event_pb2.Event.FromString(ours.SerializeToString())
    assert theirs.step == 9 and theirs.wall_time == WALL
    (v,) = theirs.summary.value
    assert (v.tag, v.tensor.dtype, list(v.tensor.double_val)) == ("acc", 2, [0.75])
    assert v.metadata.plugin_data.plugin_name == "scalars"


def test_values_are_text_as_katib_stores_them() -> None:
    # Katib: str(tf.make_ndarray(tensor_proto)) of a scalar, i.e. numpy's str().
    assert format_float32(f32(0.1)) == "0.1"
    assert format_float32(1e10) == "1e+10"
    assert format_float32(f32(1e-5)) == "1e-05"
    assert format_float32(f32(123456.7)) == "123456.7"
    assert format_float32(math.inf) == "inf"


@settings(max_examples=200, deadline=None)
@given(st.floats(width=32))
def test_fuzz_format_float32_round_trips_and_is_short(x: float) -> None:
    text = format_float32(x)
    if math.isnan(x):
        assert text == "nan"
        return
    assert f32(float(text)) == x
    mantissa = text.split("e")[0].replace("-", "").replace(".", "").strip("0")
    assert len(mantissa) <= 9


# -- tag mapping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "tag", "file_dir", "matches"),
    [
        ("accuracy", "accuracy", "/logs", True),
        ("accuracy", "accuracy_top5", "/logs", True),  # Katib: the tag is a prefix match
        ("accuracy", "epoch_accuracy", "/logs/train", False),
        ("accuracy", "train/accuracy", "/logs", False),
        ("train/accuracy", "accuracy", "/logs/train", True),
        ("train/accuracy", "accuracy", "/logs/validation", False),
        ("train/accuracy", "accuracy", "/logs/pretrain", True),  # Katib: a string suffix
        ("train/accuracy", "train/accuracy", "/logs", True),  # our extension: whole tag
        ("run1/train/epoch_loss", "epoch_loss", "/logs/run1/train", True),
        ("run1/train/epoch_loss", "epoch_loss", "/logs/run2/train", False),
    ],
)
def test_tag_matching_follows_katib(metric: str, tag: str, file_dir: str, matches: bool) -> None:
    assert TagMatcher([metric]).match(tag, file_dir) == ((metric,) if matches else ())


def test_one_tag_can_feed_several_metrics() -> None:
    m = TagMatcher(["loss", "train/loss", "acc"])
    assert m.match("loss", "/x/train") == ("loss", "train/loss")
    assert m.match("loss", "/x/train") == ("loss", "train/loss")  # cached


# -- following a directory ----------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_events(path: Path, *events: bytes) -> None:
    with open(path, "ab") as fh:
        for e in events:
            fh.write(frame_record(e))


def simple(tag: str, value: float, step: int, wall_time: float = WALL) -> bytes:
    return event_bytes(
        step, summary_pb2.Summary.Value(tag=tag, simple_value=value), wall_time=wall_time
    )


def test_keras_layout_train_and_validation_directories(tmp_path: Path) -> None:
    for sub, base in (("train", 0.5), ("validation", 0.4)):
        (tmp_path / sub).mkdir()
        w = EventsWriter(str(tmp_path / sub / "events"))
        for epoch in range(3):
            t = tensor(types_pb2.DT_FLOAT, float_val=[base + epoch / 10])
            w.write_event(
                event_pb2.Event(
                    wall_time=WALL + epoch,
                    step=epoch,
                    summary=summary_pb2.Summary(value=[tf2_value("epoch_accuracy", t)]),
                )
            )
        w.close()
    f = TfEventFollower(tmp_path, ["validation/epoch_accuracy", "train/epoch_accuracy"])
    found = f.finish()
    assert sorted((m.name, m.value) for m in found) == [
        ("train/epoch_accuracy", "0.5"),
        ("train/epoch_accuracy", "0.6"),
        ("train/epoch_accuracy", "0.7"),
        ("validation/epoch_accuracy", "0.4"),
        ("validation/epoch_accuracy", "0.5"),
        ("validation/epoch_accuracy", "0.6"),
    ]
    assert {m.timestamp for m in found} == {datetime.fromtimestamp(WALL + i, UTC) for i in range(3)}
    assert f.status == FollowStatus.FINISHED
    assert not f.skipped


def test_files_and_subdirectories_that_appear_late(tmp_path: Path) -> None:
    clock = FakeClock()
    f = TfEventFollower(tmp_path / "logs", ["loss", "hparam/acc"], clock=clock)
    assert f.poll() == []  # no directory yet
    (tmp_path / "logs").mkdir()
    write_events(tmp_path / "logs" / "events.out.tfevents.1.host", simple("loss", 0.5, 1))
    assert f.poll() == []  # not rescanned yet
    clock.now = 1.0
    assert [(m.name, m.value) for m in f.poll()] == [("loss", "0.5")]
    assert f.status == FollowStatus.FOLLOWING
    write_events(tmp_path / "logs" / "events.out.tfevents.1.host", simple("loss", 0.25, 2))
    assert [(m.name, m.value) for m in f.poll()] == [("loss", "0.25")]  # known file: read
    hp = tmp_path / "logs" / "1700000000.123"
    hp.mkdir()
    write_events(hp / "events.out.tfevents.2.host", simple("hparam/acc", 0.75, 0))
    (tmp_path / "logs" / "notes.txt").write_text("not an event file")
    assert [(m.name, m.value) for m in f.finish()] == [("hparam/acc", "0.75")]
    assert f.files == [
        str(hp / "events.out.tfevents.2.host"),
        str(tmp_path / "logs" / "events.out.tfevents.1.host"),
    ]
    assert f.records == 3 and f.scalars == 3


def test_a_record_being_written_is_retried_not_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    frame = frame_record(simple("loss", 0.5, 1))
    f = TfEventFollower(tmp_path, ["loss"], rescan_interval=0)
    for i in range(len(frame) - 1):  # the writer's bytes arrive one at a time
        with open(path, "ab") as fh:
            fh.write(frame[i : i + 1])
        assert f.poll() == []
    with open(path, "ab") as fh:
        fh.write(frame[-1:] + frame[:7])  # the last byte, and half of a next header
    assert [m.value for m in f.poll()] == ["0.5"]
    assert not f.skipped
    assert f.finish() == []
    assert f.skipped == {TRUNCATED: 1}  # the writer died mid-record


def test_corrupt_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    good = frame_record(simple("loss", 1.0, 1))
    bad_crc = bytearray(frame_record(simple("loss", 2.0, 2)))
    bad_crc[-1] ^= 0xFF
    (tmp_path / "events.out.tfevents.a").write_bytes(
        good + bytes(bad_crc) + os.urandom(100) + frame_record(simple("loss", 3.0, 3))
    )
    (tmp_path / "events.out.tfevents.b").write_bytes(b"this is not a TFRecord file at all")
    f = TfEventFollower(tmp_path, ["loss"])
    assert [m.value for m in f.finish()] == ["1.0", "3.0"]
    assert f.skipped[BAD_DATA_CRC] == 1
    assert f.skipped[BAD_HEADER] >= 1  # the random bytes (and file b: garbage to its end)


def test_missing_directory_and_no_event_files_give_reasons(tmp_path: Path) -> None:
    gone = TfEventFollower(tmp_path / "nope", ["loss"])
    assert gone.finish() == []
    assert gone.status == FollowStatus.MISSING
    assert gone.reason == f"event directory {tmp_path / 'nope'} was never created"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "checkpoint").write_text("x")
    empty = TfEventFollower(tmp_path / "empty", ["loss"])
    empty.finish()
    assert empty.status == FollowStatus.MISSING
    assert "no TensorFlow event file (name containing 'tfevents')" in empty.reason
    assert empty.explain_missing("loss") == empty.reason


def test_explain_missing_lists_the_tags_seen(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    write_events(tmp_path / "train" / "events.out.tfevents.1", simple("epoch_loss", 0.5, 1))
    f = TfEventFollower(tmp_path, ["loss"])
    assert f.finish() == []
    assert f.explain_missing("loss") == (
        "no scalar tag matched metric 'loss'; scalar tags seen: epoch_loss (in train)"
    )


def test_bad_wall_time_falls_back_to_now(tmp_path: Path) -> None:
    write_events(tmp_path / "events.out.tfevents.1", simple("loss", 0.5, 1, wall_time=math.nan))
    before = datetime.now(UTC)
    (m,) = TfEventFollower(tmp_path, ["loss"]).finish()
    assert before <= m.timestamp <= datetime.now(UTC)


def test_poll_budget_spreads_a_big_backlog_over_polls(tmp_path: Path) -> None:
    write_events(tmp_path / "events.out.tfevents.1", *(simple("loss", i, i) for i in range(2000)))
    f = TfEventFollower(tmp_path, ["loss"], max_bytes_per_poll=1)
    first = f.poll()  # one read chunk at most
    rest = f.finish()
    assert first and len(first) + len(rest) == 2000
    assert [m.value for m in first + rest] == [f"{i}.0" for i in range(2000)]

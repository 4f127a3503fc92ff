"""Following a metrics file: late creation, partial lines, truncation, rotation, huge lines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics_collector.file_follower import FileFollower, FollowStatus, LineSplitter
from metrics_collector.parsers import TextParser


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


# -- LineSplitter --------------------------------------------------------------------


def test_splitter_strips_crlf_and_holds_the_partial_line() -> None:
    s = LineSplitter()
    assert s.feed(b"a=1\r\nb=") == [b"a=1"]
    assert s.pending == 2
    assert s.feed(b"2\r\n\r\nc") == [b"b=2", b""]
    assert s.finish() == [b"c"]
    assert s.finish() == []


def test_splitter_bounds_a_huge_line_and_counts_it() -> None:
    s = LineSplitter(max_line=100, max_pending=1000)
    out: list[bytes] = []
    for _ in range(50):
        out += s.feed(b"x" * 999)
        assert s.pending <= 1000
    out += s.feed(b"tail\nloss=1\n")
    assert out == [b"x" * 100, b"loss=1"]
    assert s.long_lines == 1


def test_splitter_cuts_complete_long_lines_too() -> None:
    s = LineSplitter(max_line=4)
    assert s.feed(b"123456789\nab\n") == [b"1234", b"ab"]
    assert s.long_lines == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_splitter_reassembles_any_chunking(chunks: list[bytes]) -> None:
    s = LineSplitter(max_line=10_000, max_pending=10_000)
    got: list[bytes] = []
    for chunk in chunks:
        got += s.feed(chunk)
    got += s.finish()
    whole = b"".join(chunks)
    expected = whole.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    assert got == [line[:-1] if line.endswith(b"\r") else line for line in expected]


# -- FileFollower ----------------------------------------------------------------------


def test_a_file_that_never_appears_is_reported(tmp_path: Path) -> None:
    f = FileFollower(tmp_path / "metrics.log")
    assert f.poll() == []
    assert f.status == FollowStatus.WAITING
    assert f.finish() == []
    assert f.status == FollowStatus.MISSING
    assert f.reason == f"metrics file {tmp_path / 'metrics.log'} was never created"
    assert f.poll() == [] and f.finish() == []


def test_a_directory_at_the_path_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "metrics.log").mkdir()
    f = FileFollower(tmp_path / "metrics.log")
    assert f.poll() == []
    f.finish()
    assert f.status == FollowStatus.UNREADABLE
    assert "Is a directory" in f.reason


def test_file_created_late_and_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    f = FileFollower(path)
    assert f.poll() == []
    path.write_bytes(b"epoch 1\nloss=0.")
    assert f.poll() == [b"epoch 1"]
    assert f.status == FollowStatus.FOLLOWING
    assert f.poll() == []
    append(path, b"5\nloss=0.4")
    assert f.poll() == [b"loss=0.5"]
    assert f.finish() == [b"loss=0.4"]  # the writer ended without a newline
    assert f.status == FollowStatus.FINISHED
    assert f.reason == ""
    assert f.stats.lines == 3
    assert f.stats.bytes_read == len(b"epoch 1\nloss=0.5\nloss=0.4")


def test_copytruncate_restarts_at_zero(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    path.write_bytes(b"loss=1\nloss=2\nloss=")
    f = FileFollower(path)
    assert f.poll() == [b"loss=1", b"loss=2"]
    os.truncate(path, 0)  # logrotate copytruncate; an O_APPEND writer goes on at 0
    append(path, b"3\nloss=4\n")
    assert f.poll() == [b"loss=3", b"loss=4"]  # the partial line continues after the cut
    assert f.stats.truncations == 1
    assert f.finish() == []


def test_truncation_with_a_non_append_writer_skips_the_nul_hole(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    with open(path, "wb", buffering=0) as writer:  # no O_APPEND: keeps its offset
        writer.write(b"loss=1\n" * 1000)
        f = FileFollower(path)
        assert len(f.poll()) == 1000
        os.truncate(path, 0)
        assert f.poll() == []  # seen empty: read again from 0
        writer.write(b"loss=2\n")  # lands at offset 7000, after a hole of NULs
        assert f.poll() == [b"loss=2"]
    assert f.stats.truncations == 1
    assert f.stats.nul_bytes_skipped == 7000


def test_truncation_missed_between_polls_still_reads_what_the_writer_adds(
    tmp_path: Path,
) -> None:
    path = tmp_path / "metrics.log"
    with open(path, "wb", buffering=0) as writer:
        writer.write(b"loss=1\n" * 1000)
        f = FileFollower(path)
        assert len(f.poll()) == 1000
        os.truncate(path, 0)
        writer.write(b"loss=2\n")  # size 7007 >= offset 7000: the cut is not visible
        assert f.poll() == [b"loss=2"]
    assert f.stats.truncations == 0


def test_rotation_by_rename_finishes_the_old_file_first(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    old = open(path, "ab", buffering=0)  # noqa: SIM115 - the writer outlives the rename
    try:
        old.write(b"loss=1\nloss=")
        f = FileFollower(path)
        assert f.poll() == [b"loss=1"]
        path.rename(tmp_path / "metrics.log.1")
        assert f.poll() == []  # nothing at the path yet: keep reading the old file
        old.write(b"2\nacc=")  # the writer still has the old file open
        path.write_bytes(b"loss=3\n")
        assert f.poll() == [b"loss=2", b"acc=", b"loss=3"]  # old tail taken as a line
        assert f.stats.replacements == 1
        append(path, b"loss=4")
        assert f.finish() == [b"loss=4"]
    finally:
        old.close()


def test_deleted_and_recreated_file_is_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    path.write_bytes(b"loss=1\n")
    f = FileFollower(path)
    assert f.poll() == [b"loss=1"]
    path.unlink()
    path.write_bytes(b"loss=2\n")
    assert f.poll() == [b"loss=2"]
    assert f.finish() == []


def test_deleted_file_is_still_read_to_its_end(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    with open(path, "ab", buffering=0) as writer:
        writer.write(b"loss=1\n")
        f = FileFollower(path)
        assert f.poll() == [b"loss=1"]
        path.unlink()
        writer.write(b"loss=2\nloss=3")
        assert f.poll() == [b"loss=2"]
    assert f.finish() == [b"loss=3"]
    assert f.status == FollowStatus.FINISHED


def test_huge_line_is_cut_and_memory_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    f = FileFollower(path, max_line_bytes=64, max_pending_bytes=4096, read_chunk=1024)
    path.write_bytes(b"loss=9" + b"9" * 3_000_000)
    assert f.poll() == [b"loss=9" + b"9" * 58]  # the head, once the pending limit is hit
    append(path, b"9" * 100 + b"\nloss=1\r\n")
    assert f.poll() == [b"loss=1"]
    assert f.long_lines == 1
    parser = TextParser(["loss"])
    assert [m.value for m in parser.parse_bytes(b"loss=9" + b"9" * 58)] == ["9" * 59]


def test_invalid_utf8_reaches_the_parser_as_bytes(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    path.write_bytes(b"\xff\xfe loss=0.5 \xc3\n")
    f = FileFollower(path)
    (line,) = f.poll()
    assert line == b"\xff\xfe loss=0.5 \xc3"
    assert [m.value for m in TextParser(["loss"]).parse_bytes(line)] == ["0.5"]


def test_want_vetoes_blocks_without_metrics(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    path.write_bytes(b"noise\n" * 100 + b"loss=1\n")
    f = FileFollower(path, want=TextParser(["loss"]).wanted, read_chunk=64)
    lines = f.poll()
    assert b"loss=1" in lines
    assert len(lines) < 20  # whole blocks of noise were never split into lines


def test_poll_reads_a_bounded_amount_finish_reads_everything(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    path.write_bytes(b"loss=1\n" * 10_000)  # 70,000 bytes
    f = FileFollower(path, read_chunk=1000, max_bytes_per_poll=10_000)
    first = f.poll()
    assert 1000 < len(first) <= 1430
    rest = f.finish()
    assert len(first) + len(rest) == 10_000


def test_follow_polls_until_the_trial_ends_then_finishes(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    f = FileFollower(path)
    steps = iter([b"loss=1\n", b"", b"loss=2\nloss=3"])
    sleeps: list[float] = []

    def running() -> bool:
        data = next(steps, None)
        if data is None:
            return False
        append(path, data)
        return True

    batches = list(f.follow(running, interval=0.05, sleep=sleeps.append))
    assert batches == [[b"loss=1"], [b"loss=2"], [b"loss=3"]]
    assert sleeps == [0.05, 0.05, 0.05]
    assert f.status == FollowStatus.FINISHED


def test_close_releases_the_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    path.write_bytes(b"a\n")
    f = FileFollower(path)
    f.poll()
    fds = len(os.listdir("/proc/self/fd"))
    f.close()
    assert len(os.listdir("/proc/self/fd")) == fds - 1


@pytest.mark.parametrize("nul_only", [True, False])
def test_truncation_to_a_shorter_file_with_content(tmp_path: Path, nul_only: bool) -> None:
    path = tmp_path / "metrics.log"
    path.write_bytes(b"loss=1\n" * 10)
    f = FileFollower(path)
    assert len(f.poll()) == 10
    path.write_bytes(b"\0\0\0" if nul_only else b"loss=2\n")  # same inode, shorter
    assert f.poll() == ([] if nul_only else [b"loss=2"])
    assert f.stats.truncations == 1

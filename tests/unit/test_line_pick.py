"""LineAssembler's pick: only lines that hold a metric name reach the parser."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from metrics_collector.wrapper import LineAssembler, lines_containing

NAMES = (b"loss", b"acc")


def naive(block: bytes, names: tuple[bytes, ...]) -> list[bytes]:
    return [line for line in block.split(b"\n") if any(n in line for n in names)]


def test_lines_containing_examples() -> None:
    block = b"noise\nloss=1 acc=2\nx\nval_loss=3\n\nacc"
    assert lines_containing(block, NAMES) == [b"loss=1 acc=2", b"val_loss=3", b"acc"]
    assert lines_containing(b"", NAMES) == []
    assert lines_containing(b"lossloss\nloss", (b"loss", b"")) == [b"lossloss", b"loss"]


@given(
    st.lists(
        st.sampled_from([b"loss", b"acc", b"\n", b"x", b"=", b"0.5", b"lo", b"ss", b"\r"]),
        max_size=40,
    )
)
def test_lines_containing_matches_splitting(parts: list[bytes]) -> None:
    block = b"".join(parts)
    assert lines_containing(block, NAMES) == naive(block, NAMES)


@given(
    st.lists(st.sampled_from([b"loss=1\n", b"noise\n", b"lo", b"ss=2\r\n", b"acc"]), max_size=30),
    st.integers(min_value=1, max_value=7),
)
def test_pick_gives_the_metric_lines_of_any_chunking(parts: list[bytes], size: int) -> None:
    data = b"".join(parts)
    picked = LineAssembler(pick=NAMES)
    plain = LineAssembler()
    got: list[bytes] = []
    want: list[bytes] = []
    for i in range(0, len(data), size):
        got += picked.feed(data[i : i + size])
        want += plain.feed(data[i : i + size])
    got += picked.finish()
    want += plain.finish()
    assert [line for line in got if any(n in line for n in NAMES)] == [
        line for line in want if any(n in line for n in NAMES)
    ]

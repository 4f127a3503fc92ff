"""Follow a metrics file the trial writes (Katib's File collector), while it runs and after.

Katib reads the file once, after the main process exits. Following it while the trial
runs lets metrics reach the DBManager early (for early stopping and the UI), and the
final ``finish()`` still reads everything to the end, so the result is the same.

Polling (``poll()`` every 50-100 ms: one ``stat``, one ``fstat`` and a ``pread`` that
usually returns nothing) is enough and portable; inotify would add complexity for
no measurable gain. What a log file can do while it is followed, and what happens:

* never created: ``finish()`` sets status MISSING with a reason the trial can carry
  (MetricsUnavailable); a path that exists but cannot be opened gives UNREADABLE;
* created late: polls before it exists are cheap no-ops;
* truncated in place (logrotate ``copytruncate``): reading restarts at offset 0, and
  the NUL bytes a non-``O_APPEND`` writer leaves at the start are skipped;
* replaced (rotated by rename, or deleted and recreated: a new inode at the path):
  the old file is read to its end, its last partial line is taken as a line, then the
  new file is read from its start;
* last line without a newline: held back while the trial runs, taken by ``finish()``;
* huge lines: a line longer than ``max_line_bytes`` is cut (only the head is parsed,
  as for stdout) and memory stays bounded by ``max_pending_bytes``;
* CRLF: a trailing CR is dropped; invalid UTF-8 stays bytes (the parsers replace it).

Not detectable by polling: a file truncated and refilled past the old offset between
two polls (the refilled head is skipped), as with ``tail -F``.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from metrics_collector.parsers import PARSE_HEAD_BYTES

#: A partial line longer than this is cut (head kept) and the rest skipped to its newline.
MAX_PENDING_BYTES = 1024 * 1024
READ_CHUNK = 256 * 1024
#: poll() reads at most this much, so one poll never stalls the collector's loop for long.
MAX_BYTES_PER_POLL = 16 * 1024 * 1024
POLL_INTERVAL = 0.1


class LineSplitter:
    """Splits a byte stream into lines with a bounded buffer (the wrapper's LineAssembler
    contract, plus a count of cut lines).

    Lines come out without the newline and a trailing CR, cut to ``max_line`` bytes.
    A partial line that grows past ``max_pending`` is emitted (head only) and the rest
    is skipped up to the next newline.
    """

    def __init__(
        self, max_line: int = PARSE_HEAD_BYTES, max_pending: int = MAX_PENDING_BYTES
    ) -> None:
        self.max_line = max_line
        self.max_pending = max(max_line, max_pending)
        self.long_lines = 0
        self._pending = bytearray()
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes of the current partial line held back."""
        return len(self._pending)

    def feed(self, data: bytes, want: Callable[[bytes], bool] | None = None) -> list[bytes]:
        """Lines completed by ``data``; ``want`` may veto a block of whole lines cheaply."""
        out: list[bytes] = []
        start = 0
        if self._discarding:
            nl = data.find(b"\n")
            if nl < 0:
                return out
            self._discarding = False
            start = nl + 1
        last = data.rfind(b"\n")
        if last >= start:
            if self._pending:
                first = data.find(b"\n", start)
                self._pending += data[start:first]
                out.append(bytes(self._pending))
                self._pending.clear()
                start = first + 1
            if last >= start:
                block = data[start:last]
                if want is None or want(block):
                    out.extend(block.split(b"\n"))
            start = last + 1
        if start < len(data):
            self._pending += data[start:]
            if len(self._pending) > self.max_pending:
                out.append(bytes(self._pending[: self.max_line + 1]))
                self._pending.clear()
                self._discarding = True
        return [self._clean(line) for line in out]

    def finish(self) -> list[bytes]:
        """The last line when the stream ended without a newline (a cut line's tail: none)."""
        line = bytes(self._pending)
        self._pending.clear()
        discarding, self._discarding = self._discarding, False
        if discarding or not line:
            return []
        return [self._clean(line)]

    def _clean(self, line: bytes) -> bytes:
        if len(line) > self.max_line:
            self.long_lines += 1
            return line[: self.max_line]
        return line[:-1] if line.endswith(b"\r") else line


class FollowStatus(StrEnum):
    """Where a follower stands; MISSING and UNREADABLE come with a reason."""

    WAITING = "waiting"  # the path does not exist (yet)
    FOLLOWING = "following"
    FINISHED = "finished"  # read to the end after the trial ended
    MISSING = "missing"  # finish() and the file never appeared
    UNREADABLE = "unreadable"  # finish() and the path could never be opened


@dataclass
class FollowStats:
    """Counters, for the collector log and for tests."""

    bytes_read: int = 0
    lines: int = 0
    truncations: int = 0
    replacements: int = 0
    nul_bytes_skipped: int = 0


class FileFollower:
    """Follows one file by path: ``poll()`` while the trial runs, ``finish()`` after."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        want: Callable[[bytes], bool] | None = None,
        max_line_bytes: int = PARSE_HEAD_BYTES,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        read_chunk: int = READ_CHUNK,
        max_bytes_per_poll: int = MAX_BYTES_PER_POLL,
    ) -> None:
        self.path = Path(path)
        self.status = FollowStatus.WAITING
        self.reason = ""
        self.stats = FollowStats()
        self._want = want
        self._max_line = max_line_bytes
        self._max_pending = max_pending_bytes
        self._chunk = read_chunk
        self._budget = max_bytes_per_poll
        self._splitter = LineSplitter(max_line_bytes, max_pending_bytes)
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._pos = 0
        self._skip_nuls = False
        self._open_error: str | None = None
        self._ever_opened = False

    @property
    def long_lines(self) -> int:
        """Lines cut to ``max_line_bytes``."""
        return self._splitter.long_lines

    def poll(self) -> list[bytes]:
        """Complete lines written since the last call (at most ``max_bytes_per_poll``)."""
        if self.status in (FollowStatus.FINISHED, FollowStatus.MISSING, FollowStatus.UNREADABLE):
            return []
        out: list[bytes] = []
        if self._fd is None:
            if not self._open():
                return out
        else:
            self._check_replaced(out)
        if self._fd is not None:
            out.extend(self._read(self._budget))
        self.stats.lines += len(out)
        return out

    def finish(self) -> list[bytes]:
        """Everything left, including a last line without a newline; sets the final status."""
        if self.status in (FollowStatus.FINISHED, FollowStatus.MISSING, FollowStatus.UNREADABLE):
            return []
        out: list[bytes] = []
        if self._fd is None:
            self._open()
        else:
            self._check_replaced(out)
        if self._fd is not None:
            out.extend(self._read(None))
        out.extend(self._splitter.finish())
        self.stats.lines += len(out)
        self.close()
        if self._ever_opened:
            self.status = FollowStatus.FINISHED
        elif self._open_error is not None:
            self.status = FollowStatus.UNREADABLE
            self.reason = f"metrics file {self.path} could not be read: {self._open_error}"
        else:
            self.status = FollowStatus.MISSING
            self.reason = f"metrics file {self.path} was never created"
        return out

    def follow(
        self,
        running: Callable[[], bool],
        interval: float = POLL_INTERVAL,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[list[bytes]]:
        """Batches of lines while ``running()`` is true, then the rest (via finish())."""
        while running():
            lines = self.poll()
            if lines:
                yield lines
            sleep(interval)
        lines = self.finish()
        if lines:
            yield lines

    def close(self) -> None:
        """Release the file descriptor (finish() does this)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- internals -------------------------------------------------------------

    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return False
        except OSError as exc:
            self._open_error = exc.strerror or str(exc)
            return False
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):  # opens fine on Linux; reading is what fails
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        except OSError as exc:
            os.close(fd)
            self._open_error = exc.strerror or str(exc)
            return False
        self._fd = fd
        self._ident = (st.st_dev, st.st_ino)
        self._pos = 0
        self._skip_nuls = False
        self._ever_opened = True
        self.status = FollowStatus.FOLLOWING
        return True

    def _check_replaced(self, out: list[bytes]) -> None:
        """A new inode at the path: finish the old file, then switch to the new one."""
        try:
            st = os.stat(self.path)
        except OSError:
            return  # removed or renamed away, nothing new yet: keep reading the old one
        if (st.st_dev, st.st_ino) == self._ident:
            return
        out.extend(self._read(None))
        out.extend(self._splitter.finish())
        self.close()
        self.stats.replacements += 1
        self._open()

    def _read(self, budget: int | None) -> list[bytes]:
        fd = self._fd
        assert fd is not None
        out: list[bytes] = []
        try:
            size = os.fstat(fd).st_size
        except OSError:
            return out
        if size < self._pos:
            # copytruncate: the writer goes on at offset 0 (or at its old offset, leaving
            # a run of NULs); a pending partial line continues in the new data.
            self.stats.truncations += 1
            self._pos = 0
            self._skip_nuls = True
        taken = 0
        while budget is None or taken < budget:
            try:
                data = os.pread(fd, self._chunk, self._pos)
            except OSError as exc:
                self._open_error = exc.strerror or str(exc)
                break
            if not data:
                break
            self._pos += len(data)
            taken += len(data)
            self.stats.bytes_read += len(data)
            if self._skip_nuls:
                kept = data.lstrip(b"\0")
                self.stats.nul_bytes_skipped += len(data) - len(kept)
                if not kept:
                    continue
                self._skip_nuls = False
                data = kept
            out.extend(self._splitter.feed(data, self._want))
        return out

"""What a function trial leaves on disk, so that a restarted pool can tell how it ended.

A trial directory (``<root>/<namespace>/<trial>``) holds `result.json` (empty: the
function may have started; the outcome record once it ended and any observations it
made were stored; older versions wrote a `launched` marker instead of the empty file)
and `trial.log` (its stdout and stderr). Directories without either are trials that
never started.

Making files costs far more than writing to open ones on some disks (on ext4 without
a journal, allocating an inode soon after many were freed can take milliseconds). So
a worker does not make them per trial. It keeps two files of its own in
``<root>/.spares/<pid>/`` (`WorkerFiles`): `out`, which fds 1 and 2 point at during
a trial (truncated before each), and `journal`, one JSON line per launch and per
outcome. The trial's directory is made only when the trial has output to keep (its
`out` is linked in as `trial.log`, and a new `out` is made), or once it has run for
`LIVE_AFTER_SECONDS`, so that its log can be followed while it runs. A trial that
prints nothing and ends quickly therefore makes no file at all; its outcome goes to
the controller, which stores it.

The journal matters only when the pool's process dies before the controller has
stored a trial's outcome: the next pool on the same root (`recover`) turns a dead
worker's journal into the directories above. A pool that retires a worker of its own
knows from memory which trials are not stored yet and writes only those
(katib.executors.worker_pool).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

RESULT = "result.json"
LOG = "trial.log"
MARKER = "launched"  # the empty result.json of older versions
OUT = "out"
JOURNAL = "journal"
#: A trial running this long gets its directory and a live trial.log.
LIVE_AFTER_SECONDS = 0.5


def create(path: str, data: bytes = b"", *, exclusive: bool = False) -> None:
    """Write a whole file (`exclusive`: only if it does not exist; no error if it does)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        if exclusive:
            return
        raise
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_result(directory: str, text: str, tmp: str) -> None:
    """result.json, atomically (a temporary renamed over it), making the directory."""
    path = os.path.join(directory, tmp)
    try:
        create(path, text.encode())
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        create(path, text.encode())
    os.replace(path, os.path.join(directory, RESULT))


def mark_launched(directory: str) -> None:
    """The trial's directory with an empty result.json (kept if it has one)."""
    os.makedirs(directory, exist_ok=True)
    create(os.path.join(directory, RESULT), exclusive=True)


def keep_output(out: str, directory: str) -> bool:
    """Link a worker's `out` into the trial's directory as trial.log (unless it has
    one); False when there was nothing to link."""
    try:
        os.link(out, os.path.join(directory, LOG))
    except FileExistsError:
        return True
    except FileNotFoundError:
        return False
    return True


class WorkerFiles:
    """A worker's `out` and `journal`, and the trial they currently serve."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.out_path = os.path.join(path, OUT)
        self.out_fd = os.open(self.out_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._journal = os.open(
            os.path.join(path, JOURNAL), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )
        self._lock = threading.Lock()
        self._current: str | None = None
        self._started = 0.0
        self._shown = False
        self.kept = False  # the last trial has a directory

    def begin(self, directory: str) -> None:
        """Journal the launch and empty `out` (before the function runs)."""
        self._note({"launched": directory})
        os.ftruncate(self.out_fd, 0)
        with self._lock:
            self._current, self._started, self._shown = directory, time.monotonic(), False

    def end(self) -> str | None:
        """After the call: the trial's log path if it printed anything (then linked
        into its directory, and `out` replaced), else None. `kept` says whether the
        trial has a directory now."""
        with self._lock:
            directory, self._current = self._current, None
            self.kept = False
            if directory is None:
                return None
            printed = os.fstat(self.out_fd).st_size > 0
            if not (printed or self._shown):
                return None
            self.kept = True
            if not self._shown:
                self._show(directory)
            # `out` is the trial's log now: the next trial writes to a new file.
            os.close(self.out_fd)
            os.unlink(self.out_path)
            self.out_fd = os.open(self.out_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            return os.path.join(directory, LOG) if printed else None

    def result(self, directory: str, record: dict[str, object]) -> None:
        """Journal a trial's final outcome record, and write it into its result.json if
        it has a directory (that file is empty until then: made before the call)."""
        self._note({"result": directory, "record": record})
        if self.kept:
            create(os.path.join(directory, RESULT), json.dumps(record).encode())

    def show_if_long(self) -> None:
        """Give a trial that has run LIVE_AFTER_SECONDS its directory and live log."""
        with self._lock:
            if (
                self._current is not None
                and not self._shown
                and time.monotonic() - self._started >= LIVE_AFTER_SECONDS
            ):
                self._show(self._current)

    def watch(self) -> None:
        """Call show_if_long a few times a second, on a daemon thread."""

        def loop() -> None:
            while True:
                time.sleep(LIVE_AFTER_SECONDS / 2)
                with contextlib.suppress(OSError):
                    self.show_if_long()

        threading.Thread(target=loop, name="katib-live-log", daemon=True).start()

    def _show(self, directory: str) -> None:
        mark_launched(directory)
        keep_output(self.out_path, directory)
        self._shown = True

    def _note(self, entry: dict[str, object]) -> None:
        _write_all(self._journal, (json.dumps(entry) + "\n").encode())


def last_launched(worker_dir: Path) -> str | None:
    """The directory of the trial a worker began last (its journal's last launch)."""
    try:
        with open(worker_dir / JOURNAL, "rb") as journal:
            size = journal.seek(0, os.SEEK_END)
            journal.seek(max(0, size - 65536))
            tail = journal.read().splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("launched"), str):
            return str(entry["launched"])
    return None


def recover(worker_dir: Path, tmp: str) -> None:
    """Turn a dead worker's journal into trial directories (see the module docstring).

    Launched trials without an outcome get an empty result.json (LOST on restart) and
    the last of them, which was running when the worker died, its `out` as trial.log.
    Outcomes are written as result.json (replacing an empty one).
    """
    launched: list[str] = []
    results: dict[str, str] = {}
    try:
        lines = (worker_dir / JOURNAL).read_bytes().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by the crash
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("launched"), str):
            launched.append(entry["launched"])
        elif isinstance(entry.get("result"), str) and isinstance(entry.get("record"), dict):
            results[entry["result"]] = json.dumps(entry["record"])
    for directory, text in results.items():
        write_result(directory, text, tmp)
    for directory in launched:
        if directory not in results:
            mark_launched(directory)
    if launched and launched[-1] not in results:  # `out` holds that trial's output
        out = worker_dir / OUT
        with contextlib.suppress(OSError):
            if out.stat().st_size > 0:
                keep_output(str(out), launched[-1])

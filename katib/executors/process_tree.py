"""Who is still running for a local trial: its collector and its process group (Linux /proc).

A pid alone does not name a process for long: pids are reused. A process is named
here by its pid and its start time (clock ticks since boot, /proc/<pid>/stat field
22), which the executor records the moment it spawns the collector. That identity
holds from fork on, unlike the command line, which is empty or still the parent's
until the child's exec has finished (so a check on it races a freshly launched
collector, which is how `stop` used to miss one).

The collector leads the trial's process group (the executor starts it in a new
session and the trial command joins its group), so when the collector is gone, the
survivors are the group's members that started after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0]), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].decode("ascii", "replace").split()


def have_proc() -> bool:
    return os.path.isdir("/proc/self")


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (ticks since boot), or None if it is gone or unknown."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])


def is_alive(pid: int, ticks: int | None) -> bool:
    """Is the process that started at ``ticks`` as ``pid`` still there (and not a zombie)?

    Without /proc (or without a recorded start time) it can only check that the pid exists.
    """
    if ticks is not None and have_proc():
        fields = _stat_fields(pid)
        return fields is not None and fields[0] != "Z" and int(fields[19]) == ticks
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int, not_before: int | None = None) -> list[int]:
    """Live (non-zombie) processes of group ``pgid`` started at or after ``not_before``."""
    members: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    me = os.getpid()
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        fields = _stat_fields(int(entry))
        if fields is None or len(fields) < 20 or fields[0] == "Z" or int(fields[2]) != pgid:
            continue
        if not_before is not None and int(fields[19]) < not_before:
            continue
        members.append(int(entry))
    return members


def kill_group(pgid: int, not_before: int | None, sig: int = signal.SIGKILL) -> list[int]:
    """Signal group ``pgid`` if it still has members started at or after ``not_before``.

    With /proc the members are checked first (a group id outlives its leader, but a
    reused one would have older members); without it the group is signalled as is.
    Returns the pids that were members.
    """
    if have_proc():
        members = group_members(pgid, not_before)
        if not members:
            return []
    else:
        members = [pgid]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    return members


def wait_gone(pgid: int, not_before: int | None, timeout: float) -> bool:
    """Wait until the group has no live member started after ``not_before``."""
    deadline = time.monotonic() + timeout
    while True:
        if not have_proc() or not group_members(pgid, not_before):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)

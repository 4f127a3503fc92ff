"""Controller identities: a live owner is never taken for dead; a gone or zombie one is."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from katib.controller.runtime import owner_identity, owner_is_dead

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def _ticks(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def test_own_identity_is_alive() -> None:
    assert not owner_is_dead(owner_identity())


def test_other_hosts_and_garbage_are_never_judged_dead() -> None:
    assert not owner_is_dead(f"not-{socket.gethostname()}:1:1")
    assert not owner_is_dead("no-separators")


def test_zombie_and_reaped_owners_are_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    owner = f"{socket.gethostname()}:{child.pid}:{_ticks(child.pid)}"
    assert not owner_is_dead(owner)
    deadline = time.monotonic() + 10
    # Not reaped yet: the process is a zombie, which must count as dead.
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert owner_is_dead(owner)
    child.wait()
    assert owner_is_dead(owner)


def test_reused_pid_is_dead() -> None:
    pid = os.getpid()
    assert owner_is_dead(f"{socket.gethostname()}:{pid}:{int(_ticks(pid)) + 1}")

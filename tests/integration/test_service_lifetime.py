"""A suggestion service started with --exit-with-parent does not outlive its starter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_service_exits_when_its_parent_is_killed() -> None:
    starter = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-m', 'suggestion_services', '--algorithm',"
        " 'random', '--port', '0', '--exit-with-parent'], stdout=subprocess.PIPE)\n"
        "p.stdout.readline()\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    service_pid = int(parent.stdout.readline())
    assert _alive(service_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 15
    while _alive(service_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(service_pid)
    if alive:
        os.kill(service_pid, signal.SIGKILL)
    assert not alive, "the service outlived the process that started it"

"""Run a trial command with private directories bind-mounted over shared paths (Linux).

``python -m metrics_collector.isolation --bind SRC DST [--bind ...] -- CMD ARG...``

In Katib every trial pod gets an emptyDir at the directory of
``metricsCollectorSpec.source.fileSystemPath.path`` (e.g. ``/katib`` for
``/katib/mnist.log``), so trials that write the same absolute path never meet. Locally,
this shim gives the trial the same view: it enters a new mount namespace, makes every
mount private (so nothing leaks back to the host), bind-mounts the trial's own
directory SRC at DST and execs CMD, which keeps this process's pid, process group and
signals. The collector reads SRC directly from outside the namespace.

A re-exec shim rather than a ``preexec_fn``: the collector runs threads (gRPC, the
heartbeat), and running Python between fork and exec in a threaded process can deadlock.

As root only the mount namespace is needed; otherwise a user namespace comes with it,
mapping our uid and gid to themselves, where the kernel allows unprivileged ones.
If the namespace or a mount cannot be made, the shim does NOT run the command shared
(that would mix trials' metrics): it prints why and exits ``EXIT_ISOLATION_FAILED``.

``--probe SRC DST`` checks that all of this works here, without running anything.
Python 3.11 has no os.unshare, hence ctypes on libc's unshare(2) and mount(2).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
#: Exit code when the private view could not be set up (the command did not run).
EXIT_ISOLATION_FAILED = 125
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
PROBE_MARKER = ".katib-isolation-probe"
_PREFIX = "katib-isolation"


class IsolationError(OSError):
    """The private mount namespace or a bind mount could not be set up."""


def _libc() -> ctypes.CDLL:
    if not sys.platform.startswith("linux"):
        raise IsolationError(f"mount namespaces need Linux (this is {sys.platform})")
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _fail(what: str) -> IsolationError:
    err = ctypes.get_errno()
    return IsolationError(err, f"{what}: {os.strerror(err)}")


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(text)


def enter_private_mount_namespace() -> None:
    """Move this process into a new mount namespace whose mounts do not propagate back."""
    libc = _libc()
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        if libc.unshare(CLONE_NEWNS) != 0:
            raise _fail("unshare(CLONE_NEWNS)")
    else:
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            raise _fail("unshare(CLONE_NEWUSER|CLONE_NEWNS) (unprivileged user namespaces)")
        try:
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{uid} {uid} 1")
            _write("/proc/self/gid_map", f"{gid} {gid} 1")
        except OSError as exc:
            raise IsolationError(
                exc.errno, f"cannot map uid/gid in the user namespace: {exc}"
            ) from exc
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise _fail("making / a private mount")


def bind_mount(source: str, target: str) -> None:
    """Bind ``source`` (a directory) at ``target`` (an existing directory) in this namespace."""
    libc = _libc()
    if not os.path.isdir(source):
        raise IsolationError(2, f"bind source {source} is not a directory")
    if not os.path.isdir(target):
        raise IsolationError(2, f"mount point {target} does not exist or is not a directory")
    if libc.mount(os.fsencode(source), os.fsencode(target), None, MS_BIND | MS_REC, None) != 0:
        raise _fail(f"bind mount {source} at {target}")


def shim_argv(binds: Sequence[tuple[str | Path, str | Path]], command: Sequence[str]) -> list[str]:
    """The argv that runs ``command`` with each (private dir, shared path) bound."""
    argv = [sys.executable, "-m", "metrics_collector.isolation"]
    for source, target in binds:
        argv += ["--bind", str(source), str(target)]
    return [*argv, "--", *command]


def probe(source: Path, target: Path) -> str | None:
    """In this process: None if a private bind of ``source`` at ``target`` works, else why.

    Changes this process's mount namespace: run it in a child (``--probe``).
    """
    try:
        enter_private_mount_namespace()
        bind_mount(str(source), str(target))
    except OSError as exc:
        return str(exc)
    if not (target / PROBE_MARKER).exists():
        return f"bind mount of {source} at {target} is not visible"
    return None


def _exec(command: list[str]) -> int:
    """Replace this process with the command; on failure say so like the collector would."""
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        print(f"{_PREFIX}: command not found: {command[0]}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except OSError as exc:
        print(f"{_PREFIX}: cannot run {command[0]}: {exc}", file=sys.stderr)
        return EXIT_NOT_EXECUTABLE
    return EXIT_NOT_EXECUTABLE  # not reached: execvp does not return


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m metrics_collector.isolation",
        description="Run CMD with private directories bind-mounted in a mount namespace.",
    )
    parser.add_argument(
        "--bind", nargs=2, action="append", default=[], metavar=("SRC", "DST"), dest="binds"
    )
    parser.add_argument("--probe", nargs=2, metavar=("SRC", "DST"), default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    if ns.probe is not None:
        reason = probe(Path(ns.probe[0]), Path(ns.probe[1]))
        if reason is not None:
            print(reason, file=sys.stderr)
            return 1
        return 0
    command = list(ns.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.error("missing command after --")
    try:
        enter_private_mount_namespace()
        for source, target in ns.binds:
            bind_mount(source, target)
    except OSError as exc:
        print(f"{_PREFIX}: cannot give the trial its private paths: {exc}", file=sys.stderr)
        return EXIT_ISOLATION_FAILED
    return _exec(command)


if __name__ == "__main__":
    sys.exit(main())

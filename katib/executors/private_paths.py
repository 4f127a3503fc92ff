"""Private metrics paths for local trials: Katib's per-pod emptyDir, with mount namespaces.

Katib mounts an emptyDir at the directory of ``source.fileSystemPath.path`` (the path
itself for a Directory), so parallel trials writing ``/katib/mnist.log`` never meet.
Locally, each trial gets ``<trial dir>/metrics-volume/<that directory>`` (the copy
katib.executors.collector_args already maps the path to) bind-mounted at the directory,
in a mount namespace of its own (metrics_collector.isolation), so even a program with
the path written into its code writes its own file. The collector reads the trial's
directory directly.

Where that cannot be done (not Linux, no permission for namespaces, the directory cannot
be created, or mounting over it would hide the program, the interpreter or the trial
directories), a notice says so once and those trials run one at a time, with the path
as written: an exclusive lock per directory, held by each trial's collector, defers the
next launch (LaunchDeferredError) and ``parallel_limit`` tells the controller to create
one trial at a time. What the previous trial left at the path is set aside first, so a
trial never reads another's metrics.

The bookkeeping is shared by every executor of this user on this machine (the paths
are the machine's, whatever data directory a controller uses) and survives controller
restarts; it lives in ``<tmp>/katib-private-paths-<uid>`` (``registry_dir``):
``<key>.lock`` is held shared by the collectors of isolated trials and exclusively by
the one non-isolated trial; ``<key>.json`` lists the directories created on the host,
removed (if empty) once no trial holds the lock; ``guard.lock`` orders creation against
removal. The probe and what was set aside stay in ``<executor root>/.private-paths``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import posixpath
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from katib.api.defaults import DEFAULT_FILE_PATH, DEFAULT_TF_EVENT_DIR
from katib.api.models import CollectorKind, FileSystemKind, MetricsCollectorSpec
from katib.executors.base import LaunchDeferredError
from katib.executors.collector_args import METRICS_VOLUME

log = logging.getLogger(__name__)

#: "0"/"false"/"no" turns private mounts off (every such trial then runs alone).
PRIVATE_MOUNTS_ENV = "KATIB_PRIVATE_MOUNTS"
STATE_DIR = ".private-paths"
PROBE_TIMEOUT = 30.0


def registry_dir(fallback: Path) -> Path:
    """This user's machine-wide lock directory, or ``fallback`` if it is not safely ours."""
    path = Path(tempfile.gettempdir()) / f"katib-private-paths-{os.geteuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
    except OSError:
        return fallback
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        return fallback  # not a directory we own (a symlink, or another user's)
    return path


@dataclass(frozen=True)
class MetricsPath:
    """An absolute metrics path from the spec, and the directory a pod would mount."""

    path: str
    is_dir: bool

    @property
    def mount_point(self) -> str:
        return self.path if self.is_dir else posixpath.dirname(self.path)

    @property
    def key(self) -> str:
        return hashlib.sha256(self.mount_point.encode()).hexdigest()[:16]

    def private_dir(self, trial_dir: Path) -> Path:
        """Where the trial's copy of the mounted directory lives (collector_args' layout)."""
        return trial_dir / METRICS_VOLUME / self.mount_point.lstrip("/")


def metrics_path_of(spec: MetricsCollectorSpec | None) -> MetricsPath | None:
    """The absolute path the trial writes for its collector, or None (stdout, push, relative)."""
    kind = str(spec.collector.kind) if spec and spec.collector and spec.collector.kind else ""
    fsp = spec.source.file_system_path if spec and spec.source else None
    path = fsp.path if fsp is not None and fsp.path else None
    is_dir = fsp is not None and str(fsp.kind or "") == FileSystemKind.DIRECTORY.value
    if kind == CollectorKind.FILE.value:
        path = path or DEFAULT_FILE_PATH
    elif kind == CollectorKind.TENSORFLOW_EVENT.value:
        path, is_dir = path or DEFAULT_TF_EVENT_DIR, True
    elif kind != CollectorKind.CUSTOM.value:
        return None
    if not path or not posixpath.isabs(path):
        return None
    return MetricsPath(posixpath.normpath(path), is_dir)


@dataclass(frozen=True)
class Decision:
    isolated: bool
    reason: str = ""


@dataclass
class Lease:
    """What one launch holds: lock fds to hand to the collector, and the binds to make."""

    fds: tuple[int, ...] = ()
    binds: list[tuple[Path, str]] = field(default_factory=list)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The trial's argv, run through the isolation shim when there is something to bind."""
        if not self.binds:
            return list(argv)
        from metrics_collector.isolation import shim_argv

        return shim_argv(self.binds, argv)

    def close(self) -> None:
        """Our copies of the fds (the collector keeps its own)."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = ()


def _disabled_by_env() -> bool:
    return os.environ.get(PRIVATE_MOUNTS_ENV, "").strip().lower() in ("0", "false", "no", "off")


def _within(path: Path, ancestor: str) -> bool:
    """Is ``path`` ``ancestor`` or below it (lexically and after resolving links)?"""
    for candidate in {str(path), os.path.realpath(path)}:
        if candidate == ancestor or candidate.startswith(ancestor.rstrip("/") + "/"):
            return True
    return False


class PrivatePaths:
    """Decides, per mounted directory, between private mounts and one-at-a-time trials."""

    def __init__(
        self,
        root: Path,
        notice: Callable[[str], None],
        enabled: bool | None = None,
        probe: Callable[[], str | None] | None = None,
        registry: Path | None = None,
    ) -> None:
        """``enabled``: None probes (KATIB_PRIVATE_MOUNTS=0 turns it off), False never
        isolates. ``probe`` replaces the child-process probe (None: mounts work);
        ``registry`` the machine-wide lock directory."""
        self.root = Path(root)
        self.local = self.root / STATE_DIR
        self.state = registry or registry_dir(self.local)
        self._notice = notice
        self._enabled = enabled
        self._probe: str | bool | None = False  # False: not probed yet; None: works
        self._run = probe or self._run_probe
        self._decisions: dict[str, Decision] = {}

    # --- deciding ---------------------------------------------------------------------
    def _probe_reason(self) -> str | None:
        """None when private bind mounts work here (probed once, in a child process)."""
        if self._probe is not False:
            return self._probe if isinstance(self._probe, str) else None
        if self._enabled is False or (self._enabled is None and _disabled_by_env()):
            reason: str | None = f"private mounts are turned off ({PRIVATE_MOUNTS_ENV})"
        elif not sys.platform.startswith("linux"):
            reason = f"mount namespaces need Linux (this is {sys.platform})"
        else:
            reason = self._run()
        self._probe = reason
        return reason

    def _run_probe(self) -> str | None:
        self.local.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.local, prefix="probe-") as tmp:
            source, target = Path(tmp) / "src", Path(tmp) / "dst"
            source.mkdir()
            target.mkdir()
            from metrics_collector.isolation import PROBE_MARKER

            (source / PROBE_MARKER).touch()
            argv = [sys.executable, "-m", "metrics_collector.isolation", "--probe"]
            try:
                done = subprocess.run(
                    [*argv, str(source), str(target)],
                    capture_output=True,
                    text=True,
                    timeout=PROBE_TIMEOUT,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"cannot run the isolation probe: {exc}"
            if done.returncode != 0:
                return done.stderr.strip() or f"isolation probe exited {done.returncode}"
        return None

    def unavailable(self) -> str | None:
        """Why private mounts cannot be used here at all (None: they can)."""
        return self._probe_reason()

    def decide(self, target: MetricsPath, guards: Iterable[Path] = ()) -> Decision:
        """Can trials get a private ``target.mount_point``? Cached; a 'no' is said once."""
        guards = list(guards)
        cached = self._decisions.get(target.mount_point)
        if cached is not None and (not cached.isolated or not guards):
            return cached
        reason = self._probe_reason() or self._hides(target, guards)
        if reason is None and cached is None:
            reason = self._creatable(target)
        decision = Decision(isolated=reason is None, reason=reason or "")
        if not decision.isolated:
            self._refuse(target, decision)
        else:
            self._decisions[target.mount_point] = decision
        return decision

    def _refuse(self, target: MetricsPath, decision: Decision) -> None:
        self._decisions[target.mount_point] = decision
        self._notice(
            f"local executor: trials cannot get a private {target.mount_point} for the "
            f"metrics path {target.path} ({decision.reason}); trials that write it run one "
            "at a time so that none reads another's metrics"
        )

    def _hides(self, target: MetricsPath, guards: Iterable[Path]) -> str | None:
        mount = target.mount_point
        if mount == "/":
            return "a metrics file directly under / would need a mount over the whole root"
        essential = [
            self.root,
            Path(sys.prefix),
            Path(sys.base_prefix),
            Path(sys.executable).parent,
            Path.home(),
            Path.cwd(),
            *guards,
        ]
        for path in essential:
            if _within(path, mount):
                return f"a mount over {mount} would hide {path}, which the trial needs"
        return None

    @staticmethod
    def _creatable(target: MetricsPath) -> str | None:
        mount = Path(target.mount_point)
        if mount.exists():
            return None if mount.is_dir() else f"{mount} exists and is not a directory"
        parent = mount.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            return f"{mount} cannot be created: {parent} is not a directory"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"{mount} does not exist and {parent} is not writable to create it"
        return None

    def parallel_limit(
        self, spec: MetricsCollectorSpec | None, guards: Iterable[Path]
    ) -> int | None:
        """1 when the experiment's trials share a metrics path that cannot be made private."""
        target = metrics_path_of(spec)
        if target is None:
            return None
        return None if self.decide(target, guards).isolated else 1

    # --- launching --------------------------------------------------------------------
    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        self.state.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state / "guard.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _record(self, target: MetricsPath) -> Path:
        return self.state / f"{target.key}.json"

    def _ensure_mount_point(self, target: MetricsPath) -> None:
        """Create the mount point on the host if needed, remembering what we created."""
        mount = Path(target.mount_point)
        if mount.is_dir():
            return
        missing: list[Path] = []
        probe = mount
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        mount.mkdir(parents=True)
        record = self._record(target)
        created: list[str] = []
        with contextlib.suppress(OSError, ValueError):
            created = list(json.loads(record.read_text())["created"])
        created += [str(p) for p in reversed(missing) if str(p) not in created]
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"mount_point": target.mount_point, "created": created}))
        os.replace(tmp, record)

    def acquire(self, target: MetricsPath, trial_dir: Path, trial_name: str) -> Lease:
        """Take the path for one launch: a shared lock and a bind, or the exclusive lock.

        LaunchDeferredError when the trial must wait for the one using the shared path.
        """
        decision = self.decide(target)
        fd = os.open(self.state_lock(target), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if decision.isolated:
                with self._guard():
                    try:
                        self._ensure_mount_point(target)
                    except OSError as exc:
                        self._refuse(target, Decision(False, f"cannot create it: {exc}"))
                        raise LaunchDeferredError(
                            f"{target.mount_point} cannot be created; trial {trial_name} will "
                            "run without a private copy of it"
                        ) from exc
                    self._lock(fd, fcntl.LOCK_SH, target, trial_name)
                source = target.private_dir(trial_dir)
                source.mkdir(parents=True, exist_ok=True)
                return Lease(fds=(fd,), binds=[(source, target.mount_point)])
            self._lock(fd, fcntl.LOCK_EX, target, trial_name)
            self._set_aside(target, trial_name)
            return Lease(fds=(fd,))
        except BaseException:
            os.close(fd)
            raise

    def state_lock(self, target: MetricsPath) -> Path:
        self.state.mkdir(parents=True, exist_ok=True)
        return self.state / f"{target.key}.lock"

    @staticmethod
    def _lock(fd: int, mode: int, target: MetricsPath, trial_name: str) -> None:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LaunchDeferredError(
                f"trial {trial_name} waits: another trial is using {target.path}"
            ) from None

    def _set_aside(self, target: MetricsPath, trial_name: str) -> None:
        """Move what an earlier trial left at the shared path out of the new trial's way."""
        path = Path(target.path)
        if not path.exists() or (path.is_dir() and not any(path.iterdir())):
            return
        stamp = time.strftime("%Y%m%dT%H%M%S")
        dest = self.local / "set-aside" / f"{stamp}-{trial_name}" / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(dest))
        if target.is_dir:
            path.mkdir(parents=True, exist_ok=True)
        log.info("moved %s (left by an earlier trial) to %s before %s", path, dest, trial_name)

    # --- cleaning up -------------------------------------------------------------------
    def release(self) -> bool:
        """Remove the mount points made on the host, once no trial here uses any path.

        All or nothing across mount points, because one may lie inside another's
        created parent (``/katib/out`` and ``/katib``): removing a directory that is a
        mount point in a running trial's namespace would detach its private view.
        True when nothing is left to remove.
        """
        if not self.state.is_dir() or not any(self.state.glob("*.json")):
            return True
        with self._guard():
            held: list[int] = []
            try:
                for lock in self.state.glob("*.lock"):
                    if lock.name == "guard.lock":
                        continue
                    fd = os.open(lock, os.O_RDWR)
                    held.append(fd)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        return False  # a trial still runs; the last one to end cleans up
                return self._remove_created()
            finally:
                for fd in held:
                    os.close(fd)

    def _remove_created(self) -> bool:
        records: dict[Path, list[str]] = {}
        for record in self.state.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                records[record] = [str(p) for p in json.loads(record.read_text())["created"]]
        kept: set[str] = set()
        for path in sorted({p for paths in records.values() for p in paths}, key=len, reverse=True):
            try:
                os.rmdir(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.info("keeping %s: %s", path, exc)  # something was written there
                kept.add(path)
        for record, paths in records.items():
            left = [p for p in paths if p in kept]
            if left:
                record.write_text(json.dumps({"created": left}))
            else:
                record.unlink(missing_ok=True)
        return not kept

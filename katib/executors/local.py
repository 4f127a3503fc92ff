"""Trials as local process groups, each wrapped by the metrics collector.

Launch is made idempotent with a lock that outlives the controller: the executor
takes an exclusive flock on `<trial dir>/launch.lock` and hands that open file to
the collector process it starts, so the lock is held exactly as long as the
collector lives, even if the controller is killed the instant after the spawn.
On restart the controller finds the trial in one of four states from files alone:

  result.json present                      -> FINISHED
  lock held by someone                     -> RUNNING (adopted)
  lock free, launched marker, no result    -> LOST (the collector died)
  lock free, nothing launched              -> NOT_STARTED (launch it)

While it runs, the collector rewrites `<trial dir>/heartbeat` (metrics_collector.
heartbeat); `poll` reports its time so the controller can tell a hung collector (lock
held, heartbeat frozen) from a slow one. The launched marker records the collector's
pid and start time (katib.executors.process_tree), so `stop` and `kill` signal it, and
whatever of its process group outlived it, without mistaking a reused pid for it.

A metrics path the trial writes at an absolute location (File, TensorFlowEvent) is
made private to the trial with a mount namespace where possible, or else such trials
run one at a time (katib.executors.private_paths).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from katib.api.models import Experiment, Trial
from katib.controller.templating import find_container
from katib.errors import ExecutorError
from katib.executors import process_tree
from katib.executors.base import (
    BaseExecutor,
    LaunchContext,
    TrialOutcome,
    TrialPhase,
    heartbeat_timeout,
)
from katib.executors.collector_args import collector_kind, container_env, plan_collector
from katib.executors.private_paths import (
    Decision,
    Lease,
    MetricsPath,
    PrivatePaths,
    metrics_path_of,
)
from katib.storage.base import MetricLogEntry
from metrics_collector.heartbeat import INTERVAL_ENV, interval_for, read_heartbeat
from metrics_collector.result import COLLECTOR_PID, RESULT_FILE, TrialResult, utc_now_iso

_PYTHON = re.compile(r"^python(3(\.\d+)?)?$")
STOP_GRACE_SECONDS = 5.0
_DETACHED: list[subprocess.Popen[bytes]] = []


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class LocalExecutor(BaseExecutor):
    """Runs the primary container's command, args and env on this machine."""

    name = "local"

    def __init__(
        self,
        root: Path,
        notice: Callable[[str], None] | None = None,
        *,
        remap_metrics_paths: bool = True,
        private_mounts: bool | None = None,
        heartbeat_interval: float | None = None,
        token: str | None = None,
    ) -> None:
        """``private_mounts``: None uses mount namespaces where they work (and
        KATIB_PRIVATE_MOUNTS=0 turns them off), False never. ``heartbeat_interval``
        defaults to a quarter of the controller's timeout (KATIB_HEARTBEAT_TIMEOUT), at
        most 5 s. ``token``: the server's token, given to trials as KATIB_TOKEN so
        their collector and ``katib.report_metrics`` can call DBManager."""
        self.root = Path(root)
        self.token = token
        self.heartbeat_interval = heartbeat_interval or interval_for(heartbeat_timeout())
        #: Give each trial its own copy of the metrics path (katib.executors.collector_args);
        #: False when trials get private mounts and the absolute path works as written.
        self.remap_metrics_paths = remap_metrics_paths
        self._notice = notice or (lambda message: None)
        self._noticed: set[str] = set()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._private = PrivatePaths(self.root, self._notice, enabled=private_mounts)
        self._released: set[str] = set()
        self._watched: dict[str, bool] = {}

    # --- paths -------------------------------------------------------------------
    def trial_dir(self, trial: Trial) -> Path:
        return self.root / trial.namespace / trial.name

    def log_path(self, trial: Trial) -> Path:
        return self.trial_dir(trial) / "trial.log"

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._noticed:
            self._noticed.add(key)
            self._notice(message)

    # --- launch ------------------------------------------------------------------
    def command_for(self, trial: Trial, context: LaunchContext) -> tuple[list[str], dict[str, str]]:
        """The argv and extra environment of the trial's primary container."""
        spec = trial.spec
        if spec.run_spec is None:
            raise ExecutorError(f"trial {trial.name} has no rendered run spec")
        name = spec.primary_container_name or ""
        container = find_container(spec.run_spec, name)
        if container is None:
            raise ExecutorError(f"primary container {name!r} not found in the trial's run spec")
        what = f"container {name!r}"
        return self._container_argv(container, what, context), container_env(container, what)

    def _container_argv(
        self, container: dict[str, Any], what: str, context: LaunchContext
    ) -> list[str]:
        """command + args, with python mapped to this interpreter and relative scripts
        resolved against the Experiment file's directory."""
        argv = [str(part) for part in (container.get("command") or [])]
        argv += [str(part) for part in (container.get("args") or [])]
        if not argv:
            raise ExecutorError(
                f"{what} has no command or args; the local executor cannot read "
                "an image's entrypoint, so give the command in the template"
            )
        if container.get("image"):
            self._say_once(
                "image",
                "local executor: container images are ignored; trials run with this machine's "
                f"programs (python is {sys.executable})",
            )
        if _PYTHON.match(argv[0]):
            argv[0] = sys.executable
        if context.experiment_dir is not None:
            for i, part in enumerate(argv[1:], start=1):
                if part.startswith("-") or os.path.isabs(part) or "=" in part:
                    continue
                candidate = context.experiment_dir / part
                if candidate.is_file():
                    argv[i] = str(candidate.resolve())
        return argv

    def launch(self, trial: Trial, context: LaunchContext) -> None:
        collector = context.experiment.spec.metrics_collector_spec
        collector_kind(collector)  # an unsupported kind fails before anything is created
        argv, env = self.command_for(trial, context)
        directory = self.trial_dir(trial)
        work = directory / "work"
        target, decision = self._private_decision(collector, argv, context)
        plan = plan_collector(
            collector,
            trial_dir=directory,
            work_dir=work,
            argv=argv,
            env=env,
            container_argv=lambda container, what: self._container_argv(container, what, context),
            remap=self.remap_metrics_paths if decision is None else decision.isolated,
        )
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / "launch.lock", os.O_RDWR | os.O_CREAT, 0o644)
        lease = Lease()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # its collector is alive: already launched
            if (directory / "result.json").exists() or (directory / "launched").exists():
                return
            objective = context.experiment.spec.objective
            names = [objective.objective_metric_name or ""] if objective else []
            names += list(objective.additional_metric_names or []) if objective else []
            collector_argv = [
                sys.executable,
                "-m",
                "metrics_collector",
                "--trial-name",
                trial.name,
                "--metric-names",
                ",".join(n for n in names if n),
                "--trial-dir",
                str(directory),
                "--db-manager-address",
                context.db_manager_address,
            ]
            if context.db_manager_address_file is not None:
                collector_argv += [
                    "--db-manager-address-file",
                    str(context.db_manager_address_file),
                ]
            collector_argv += plan.args
            collector_argv += self._stop_rule_args(trial, context)
            if target is not None:  # LaunchDeferredError while another trial has the path
                lease = self._private.acquire(target, directory, trial.name)
            collector_argv += ["--", *lease.wrap(plan.argv)]
            work.mkdir(exist_ok=True)
            for path in plan.dirs:
                try:
                    path.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ExecutorError(
                        f"cannot create the metrics directory {path}: {exc.strerror or exc}"
                    ) from None
            # What Katib gives a trial pod, plus DBManager for katib.report_metrics (Push).
            trial_env = {**os.environ, **plan.env, "KATIB_TRIAL_NAME": trial.name}
            trial_env["KATIB_DB_MANAGER_ADDRESS"] = context.db_manager_address
            if context.db_manager_address_file is not None:
                trial_env["KATIB_DB_MANAGER_ADDRESS_FILE"] = str(context.db_manager_address_file)
            trial_env[INTERVAL_ENV] = str(self.heartbeat_interval)
            if self.token:
                trial_env["KATIB_TOKEN"] = self.token
            with open(directory / "collector.out", "ab") as out:
                child = subprocess.Popen(
                    collector_argv,
                    cwd=work,
                    env=trial_env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    pass_fds=(fd, *lease.fds),
                    start_new_session=True,
                )
            self._children[trial.name] = child
            marker = directory / "launched.tmp"
            record: dict[str, Any] = {"pid": child.pid, "argv": plan.argv}
            # the start time names the collector even before its exec has finished
            record["start"] = process_tree.start_ticks(child.pid)
            record["heartbeat"] = self.heartbeat_interval
            if target is not None and lease.binds:
                record["private_path"] = [target.path, target.is_dir]
            marker.write_text(json.dumps(record))
            os.replace(marker, directory / "launched")
        finally:
            lease.close()
            os.close(fd)

    def _private_decision(
        self, collector: Any, argv: list[str], context: LaunchContext
    ) -> tuple[MetricsPath | None, Decision | None]:
        """The trial's absolute metrics path and whether it can be made private."""
        target = metrics_path_of(collector)
        if target is None:
            return None, None
        guards = [Path(a) for a in argv if os.path.isabs(a) and os.path.exists(a)]
        if context.experiment_dir is not None:
            guards.append(context.experiment_dir)
        return target, self._private.decide(target, guards)

    def max_parallel(self, experiment: Experiment) -> int | None:
        """1 for an experiment whose shared metrics path cannot be made private here."""
        return self._private.parallel_limit(experiment.spec.metrics_collector_spec, ())

    @staticmethod
    def _stop_rule_args(trial: Trial, context: LaunchContext) -> list[str]:
        """Katib's sidecar flags for the trial's early-stopping rules (none without rules)."""
        rules = trial.spec.early_stopping_rules or []
        if not rules:
            return []
        objective = context.experiment.spec.objective
        args = ["--objective-type", str(objective.type if objective else "") or "maximize"]
        for rule in rules:
            args += [
                "--stop-rule",
                f"{rule.name};{rule.value};{rule.comparison};{rule.start_step or 1}",
            ]
        if context.early_stopping_address:
            args += ["--early-stopping-address", context.early_stopping_address]
        return args

    # --- poll --------------------------------------------------------------------
    def poll(self, trial: Trial) -> TrialOutcome:
        outcome = self._poll_files(trial)
        directory = self.trial_dir(trial)
        if outcome.phase == TrialPhase.RUNNING:
            outcome.heartbeat = read_heartbeat(directory)
            outcome.watch_heartbeat = self._sends_heartbeats(trial)
        elif outcome.phase in (TrialPhase.FINISHED, TrialPhase.LOST):
            self._release_private_path(trial)
            if outcome.phase == TrialPhase.LOST:
                beat = read_heartbeat(directory)
                outcome.heartbeat = beat
                outcome.message += (
                    f"; its last heartbeat was at {_iso(beat)}"
                    if beat is not None
                    else "; it never sent a heartbeat"
                )
        return outcome

    def _sends_heartbeats(self, trial: Trial) -> bool:
        """Was the trial launched with a heartbeat (not by an older executor)?"""
        known = self._watched.get(trial.name)
        if known is None:
            record = self._launch_record(trial)
            if record is None:
                return False  # not yet recorded: ask again next time
            known = self._watched[trial.name] = bool(record.get("heartbeat"))
        return known

    def _release_private_path(self, trial: Trial) -> None:
        """The trial is over: remove the mount point we created, if no trial uses it now."""
        if trial.name in self._released:
            return
        self._released.add(trial.name)
        record = self._launch_record(trial) or {}
        private = record.get("private_path")
        if isinstance(private, list) and len(private) == 2:
            # result.json comes just before the collector exits and lets go of its lock
            directory = self.trial_dir(trial)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while self._lock_held(directory) and time.monotonic() < deadline:
                time.sleep(0.01)
            self._private.release()

    def _poll_files(self, trial: Trial) -> TrialOutcome:
        child = self._children.get(trial.name)
        if child is not None and child.poll() is not None:
            del self._children[trial.name]
        directory = self.trial_dir(trial)
        result = self._read_result(directory)
        if result is not None:
            return result
        if not directory.exists():
            return TrialOutcome(TrialPhase.NOT_STARTED)
        if self._lock_held(directory):
            return TrialOutcome(TrialPhase.RUNNING)
        result = self._read_result(directory)  # it may have finished in between
        if result is not None:
            return result
        if (directory / "launched").exists():
            return TrialOutcome(
                TrialPhase.LOST,
                message="the metrics collector exited without recording the trial's outcome",
            )
        return TrialOutcome(TrialPhase.NOT_STARTED)

    @staticmethod
    def _lock_held(directory: Path) -> bool:
        path = directory / "launch.lock"
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    @staticmethod
    def _read_result(directory: Path) -> TrialOutcome | None:
        path = directory / "result.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return TrialOutcome(
                TrialPhase.FINISHED, exit_code=None, message=f"unreadable result file: {exc}"
            )
        unreported: list[MetricLogEntry] = []
        spool_name = data.get("unreported")
        if spool_name:
            spool = directory / spool_name
            try:
                lines = spool.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:
                lines = []
            for line in lines:
                try:
                    item = json.loads(line)
                    unreported.append(
                        MetricLogEntry(
                            metric_name=str(item["metric_name"]),
                            value=str(item["value"]),
                            timestamp=_parse_time(str(item["time_stamp"])),
                        )
                    )
                except (ValueError, KeyError, TypeError):
                    continue
        message = data.get("error") or ""
        exit_code = data.get("exit_code")
        sig = data.get("signal")
        early_stopped = bool(data.get("early_stopped"))
        if message and exit_code == 0:
            # The command succeeded but its collector failed (e.g. a Custom collector's
            # non-zero exit): like a failed sidecar in Katib, the trial fails.
            message += " (the trial command itself exited 0)"
            exit_code = None
        if not message and early_stopped:
            message = f"early stopped: {data.get('early_stopped_reason') or 'rules held'}"
        elif not message and sig:
            message = f"trial process ended by signal {sig}"
        elif not message and exit_code not in (0, None):
            message = f"trial process exited with code {exit_code}"
        return TrialOutcome(
            TrialPhase.FINISHED,
            exit_code=exit_code,
            signal=sig,
            message=message,
            unreported=unreported,
            early_stopped=early_stopped,
            metrics_reason=str(data.get("reason") or ""),
        )

    def acknowledge(self, trial: Trial) -> None:
        spool = self.trial_dir(trial) / "unreported.jsonl"
        if spool.exists():
            os.replace(spool, spool.with_suffix(".ingested"))

    # --- stop --------------------------------------------------------------------
    def _launch_record(self, trial: Trial) -> dict[str, Any] | None:
        try:
            data = json.loads((self.trial_dir(trial) / "launched").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _collector(self, trial: Trial) -> tuple[int, int | None] | None:
        """(pid, start ticks) of the trial's collector while it runs, else None."""
        directory = self.trial_dir(trial)
        record = self._launch_record(trial) or {}
        ticks = record.get("start")
        try:
            pid = int(record["pid"]) if "pid" in record else None
            if pid is None:  # controller killed between spawn and marker: ask the collector
                pid = int((directory / COLLECTOR_PID).read_text())
        except (OSError, ValueError, TypeError):
            return None
        if ticks is None and not self._lock_held(directory):
            return None  # without a start time, trust a pid only while its lock is held
        if not process_tree.is_alive(pid, ticks):
            return None
        return pid, ticks

    def stop(self, trial: Trial) -> None:
        """SIGTERM the collector's group (it stops the trial and records the outcome),
        SIGKILL after the grace period; then kill whatever of the group outlived it."""
        self._end(trial, STOP_GRACE_SECONDS)

    def kill(self, trial: Trial) -> None:
        """SIGKILL the collector's whole group at once (it is gone or hung)."""
        self._end(trial, 0.0)

    def _end(self, trial: Trial, grace: float) -> None:
        directory = self.trial_dir(trial)
        found = self._collector(trial)
        signalled = False
        if found is not None:
            pid = found[0]
            try:
                os.killpg(pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
                signalled = True
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + (grace + 2 if grace > 0 else 2)
            while signalled and time.monotonic() < deadline and self._lock_held(directory):
                child = self._children.get(trial.name)
                if child is not None:
                    child.poll()
                time.sleep(0.02)
            if self._lock_held(directory):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        record = self._launch_record(trial) or {}
        ticks = record.get("start")
        if "pid" in record and (ticks is not None or signalled):
            # the trial's processes that outlived the collector (it was killed, or hung)
            pgid = int(record["pid"])
            if process_tree.kill_group(pgid, ticks):
                process_tree.wait_gone(pgid, ticks, STOP_GRACE_SECONDS)
        child = self._children.pop(trial.name, None)
        if child is not None:
            try:
                child.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _DETACHED.append(child)
        if signalled and not self._lock_held(directory):
            self._record_stopped(directory, grace)

    @staticmethod
    def _record_stopped(directory: Path, grace: float) -> None:
        """The collector we signalled ended without a result (killed before its handler
        was installed, or after the grace period): record the stop for it."""
        if (directory / RESULT_FILE).exists():
            return
        how = "stopped" if grace > 0 else "killed"
        TrialResult(
            signal=signal.SIGTERM if grace > 0 else signal.SIGKILL,
            error=f"the trial was {how}; its metrics collector ended without recording an outcome",
            finished_at=utc_now_iso(),
        ).write(directory / RESULT_FILE)

    def remove(self, trial: Trial) -> None:
        """Delete the trial's directory (logs and work files)."""
        shutil.rmtree(self.trial_dir(trial), ignore_errors=True)

    def close(self) -> None:
        # Trials outlive the executor (the next controller adopts them); keep their
        # handles alive so no Popen is collected while its process still runs.
        for child in self._children.values():
            if child.poll() is None:
                _DETACHED.append(child)
        self._children.clear()
        self._private.release()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

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

from katib.api.models import CollectorKind, Trial
from katib.controller.templating import find_container
from katib.errors import ExecutorError
from katib.executors.base import BaseExecutor, LaunchContext, TrialOutcome, TrialPhase
from katib.storage.base import MetricLogEntry

_PYTHON = re.compile(r"^python(3(\.\d+)?)?$")
_SUPPORTED_COLLECTORS = {CollectorKind.STDOUT, CollectorKind.PUSH, CollectorKind.NONE}
STOP_GRACE_SECONDS = 5.0
_DETACHED: list[subprocess.Popen[bytes]] = []


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class LocalExecutor(BaseExecutor):
    """Runs the primary container's command, args and env on this machine."""

    name = "local"

    def __init__(self, root: Path, notice: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self._notice = notice or (lambda message: None)
        self._noticed: set[str] = set()
        self._children: dict[str, subprocess.Popen[bytes]] = {}

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
        argv = [str(part) for part in (container.get("command") or [])]
        argv += [str(part) for part in (container.get("args") or [])]
        if not argv:
            raise ExecutorError(
                f"container {name!r} has no command or args; the local executor cannot read "
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
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            if not isinstance(item, dict) or "name" not in item:
                continue
            if "valueFrom" in item:
                raise ExecutorError(
                    f"env {item['name']} uses valueFrom, which the local executor cannot resolve"
                )
            env[str(item["name"])] = str(item.get("value", ""))
        return argv, env

    def launch(self, trial: Trial, context: LaunchContext) -> None:
        collector = context.experiment.spec.metrics_collector_spec
        kind = (
            CollectorKind(str(collector.collector.kind))
            if collector and collector.collector and collector.collector.kind
            else CollectorKind.STDOUT
        )
        if kind not in _SUPPORTED_COLLECTORS:
            raise ExecutorError(
                f"metrics collector kind {kind.value} is not supported by the local executor yet"
            )
        argv, env = self.command_for(trial, context)
        directory = self.trial_dir(trial)
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / "launch.lock", os.O_RDWR | os.O_CREAT, 0o644)
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
            source = collector.source if collector else None
            for regex in (source.filter.metrics_format or []) if source and source.filter else []:
                collector_argv += ["--filter", regex]
            collector_argv += self._stop_rule_args(trial, context)
            collector_argv += ["--", *argv]
            work = directory / "work"
            work.mkdir(exist_ok=True)
            with open(directory / "collector.out", "ab") as out:
                child = subprocess.Popen(
                    collector_argv,
                    cwd=work,
                    env={**os.environ, **env, "KATIB_TRIAL_NAME": trial.name},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    pass_fds=(fd,),
                    start_new_session=True,
                )
            self._children[trial.name] = child
            marker = directory / "launched.tmp"
            marker.write_text(json.dumps({"pid": child.pid, "argv": argv}))
            os.replace(marker, directory / "launched")
        finally:
            os.close(fd)

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
        )

    def acknowledge(self, trial: Trial) -> None:
        spool = self.trial_dir(trial) / "unreported.jsonl"
        if spool.exists():
            os.replace(spool, spool.with_suffix(".ingested"))

    # --- stop --------------------------------------------------------------------
    def _collector_pid(self, trial: Trial) -> int | None:
        directory = self.trial_dir(trial)
        try:
            pid = int(json.loads((directory / "launched").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        # pids are reused: only signal the process if it is still this trial's collector
        if b"metrics_collector" not in cmdline or trial.name.encode() not in cmdline:
            return None
        return pid

    def stop(self, trial: Trial) -> None:
        pid = self._collector_pid(trial)
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_GRACE_SECONDS + 2
        while time.monotonic() < deadline and self._lock_held(self.trial_dir(trial)):
            child = self._children.get(trial.name)
            if child is not None:
                child.poll()
            time.sleep(0.05)
        if self._lock_held(self.trial_dir(trial)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        child = self._children.pop(trial.name, None)
        if child is not None:
            try:
                child.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _DETACHED.append(child)

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

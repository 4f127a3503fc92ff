"""The embedded backend: no server; experiments live in the local data directory.

Reads and edits go straight to katib storage (the same database `katib run` and
`katib get` use). Each experiment is driven by its own detached runner process
(`python -m katib.sdk._backend_runner`, the `katib run` loop without a terminal),
rather than by a thread of the client, because:
- it survives the notebook kernel: restarting the kernel, or closing the notebook,
  does not stop an experiment halfway;
- it is restart-safe like `katib run`: the runner records who it is in
  `<data dir>/sdk/<namespace>/<name>.json`; a client that reads the experiment and
  finds it unfinished with its runner gone starts a new one, which adopts the
  running trials and resumes where the stored state left off;
- the controller's polling, gRPC servers and suggestion services do not compete with
  the user's own Python code for the kernel's GIL, and a crash in them cannot take the
  kernel down.
The cost is one process start per experiment (about a second), paid at creation,
where it also checks the algorithm settings with the suggestion service as Katib's
webhook does, so a bad setting is an error of `create_experiment`, not a Failed
experiment later.

`delete_experiment` SIGTERMs the runner (it stops between passes, leaving trials
alone), waits for it, then stops the unfinished trials, deletes the stored
experiment and removes the trials' directories, as `katib delete` does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from katib import errors
from katib.api.loading import load_experiment, load_experiment_dict
from katib.api.models import Experiment, ExperimentConditionType, Trial
from katib.api.validation import validate_update
from katib.controller import status
from katib.executors import process_tree
from katib.executors.local import LocalExecutor
from katib.sdk._backend import BaseBackend, ExperimentDocument, MetricLog, MetricValue
from katib.storage.engine import default_data_dir, resolve_url
from katib.storage.sql import SQLStorage

log = logging.getLogger(__name__)

CREATE_TIMEOUT_SECONDS = 120.0
"""How long create_experiment waits for its runner to accept the experiment."""
STOP_TIMEOUT_SECONDS = 15.0
RESPAWN_INTERVAL_SECONDS = 5.0
MAX_RESUMES = 3
"""A runner that keeps dying (e.g. a broken database) is restarted at most this often..."""
RESUME_WINDOW_SECONDS = 120.0
"""...within this window; then reads go on working and nothing more is started."""
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_RUNNERS: list[subprocess.Popen[bytes]] = []
"""Every runner this process started, whichever client started it: kept referenced (a
collected Popen of a live process warns) and reaped when it ends (a zombie would still
hold the experiment's ownership)."""


def owner_alive(owner: str) -> bool:
    """Is the controller `host:pid:ticks` alive? Unknown (another host) counts as alive;
    a zombie counts as dead, unlike katib.controller.runtime.owner_is_dead."""
    try:
        host, pid_text, ticks = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    return process_tree.is_alive(pid, int(ticks) if ticks.isdigit() else None)


def _rfc3339(moment: Any) -> str:
    text: str = moment.isoformat()
    return text.replace("+00:00", "Z")


class EmbeddedBackend(BaseBackend):
    """Experiments in `data_dir` (default $KATIB_DATA_DIR or ~/.katib), storage at `db_url`."""

    def __init__(
        self,
        default_namespace: str = "default",
        data_dir: str | Path | None = None,
        db_url: str | None = None,
        poll_interval: float = 0.1,
    ) -> None:
        super().__init__(default_namespace)
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db_url = resolve_url(db_url, self.data_dir)
        self.poll_interval = poll_interval
        self._storage: SQLStorage | None = None
        self._respawned: dict[tuple[str, str], float] = {}
        self._resumes: dict[tuple[str, str], list[float]] = {}

    @property
    def storage(self) -> SQLStorage:
        if self._storage is None:
            self._storage = SQLStorage(self.db_url)
        return self._storage

    def close(self) -> None:
        self._reap()
        if self._storage is not None:
            self._storage.close()
            self._storage = None

    # --- runners -------------------------------------------------------------------
    def state_file(self, name: str, namespace: str) -> Path:
        return self.data_dir / "sdk" / namespace / f"{name}.json"

    def runner_log(self, name: str, namespace: str) -> Path:
        return self.data_dir / "logs" / f"sdk-runner-{namespace}-{name}.log"

    def _read_state(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            state = json.loads(self.state_file(name, namespace).read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    @staticmethod
    def _reap() -> None:
        """Collect finished runners (a zombie would still look alive)."""
        _RUNNERS[:] = [child for child in _RUNNERS if child.poll() is None]

    def _runner_alive(self, state: dict[str, Any]) -> bool:
        self._reap()
        pid, ticks = state.get("pid"), state.get("ticks")
        return isinstance(pid, int) and process_tree.is_alive(pid, ticks)

    def _spawn(
        self,
        name: str,
        namespace: str,
        experiment_file: Path | None = None,
        experiment_dir: str | Path | None = None,
    ) -> subprocess.Popen[bytes]:
        log_path = self.runner_log(name, namespace)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "katib.sdk._backend_runner",
            "--data-dir",
            str(self.data_dir),
            "--namespace",
            namespace,
            "--name",
            name,
            "--state-file",
            str(self.state_file(name, namespace)),
            "--poll-interval",
            str(self.poll_interval),
        ]
        if experiment_file is not None:
            argv += ["--experiment-file", str(experiment_file)]
        if experiment_dir:
            argv += ["--experiment-dir", str(experiment_dir)]
        env = dict(os.environ, KATIB_DB=self.db_url)  # not in argv: it may hold a password
        with open(log_path, "ab") as log:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # survives the kernel and its Ctrl-C
                close_fds=True,
            )
        _RUNNERS.append(child)
        return child

    def _log_tail(self, name: str, namespace: str, lines: int = 15) -> str:
        try:
            text = self.runner_log(name, namespace).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait_accepted(self, name: str, namespace: str, child: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + CREATE_TIMEOUT_SECONDS
        while True:
            state = self._read_state(name, namespace)
            if state is not None and state.get("pid") == child.pid:
                if state.get("state") == "running":
                    return
                if state.get("state") == "error":
                    self.state_file(name, namespace).unlink(missing_ok=True)
                    error = state.get("error") or {}
                    cls = getattr(errors, str(error.get("type")), None)
                    if not (isinstance(cls, type) and issubclass(cls, errors.KatibError)):
                        cls = errors.InternalError
                    message = str(error.get("message", "the runner failed"))
                    if cls is errors.InvalidSpecError:
                        problems = [
                            errors.Problem(str(p.get("path")), str(p.get("message")), p.get("line"))
                            for p in error.get("problems") or []
                        ]
                        raise errors.InvalidSpecError(problems or [errors.Problem("", message)])
                    raise cls(message)
            if child.poll() is not None:
                self.state_file(name, namespace).unlink(missing_ok=True)
                raise errors.ExecutorError(
                    f"the runner of experiment {namespace}/{name} exited with code "
                    f"{child.returncode} before starting it; its log "
                    f"({self.runner_log(name, namespace)}) ends with:\n"
                    f"{self._log_tail(name, namespace)}"
                )
            if time.monotonic() > deadline:
                raise errors.DeadlineExceededError(
                    f"the runner of experiment {namespace}/{name} did not start it within "
                    f"{CREATE_TIMEOUT_SECONDS:.0f} s; see {self.runner_log(name, namespace)}"
                )
            time.sleep(0.05)

    def ensure_running(self, experiment: Experiment) -> bool:
        """Start a new runner for an unfinished experiment whose runner died.

        Only for experiments an SDK runner drove (a state file exists); another live
        controller (e.g. `katib run`) keeps its experiment. True when one was started.
        """
        if status.is_experiment_completed(experiment):
            return False
        name, namespace = experiment.name, experiment.namespace
        state = self._read_state(name, namespace)
        if state is None or state.get("state") != "running" or self._runner_alive(state):
            return False
        key = (namespace, name)
        if time.monotonic() - self._respawned.get(key, -1e9) < RESPAWN_INTERVAL_SECONDS:
            return False
        owner = self.storage.get_ownership(name, namespace).owner
        if owner and owner != state.get("owner") and owner_alive(owner):
            return False
        now = time.monotonic()
        recent = [t for t in self._resumes.get(key, []) if now - t < RESUME_WINDOW_SECONDS]
        if len(recent) >= MAX_RESUMES:
            if len(recent) == MAX_RESUMES:  # say it once
                log.warning(
                    "experiment %s/%s: its runner exited %d times in %.0f s; not starting "
                    "another (see %s)",
                    namespace,
                    name,
                    MAX_RESUMES,
                    RESUME_WINDOW_SECONDS,
                    self.runner_log(name, namespace),
                )
                recent.append(now)
                self._resumes[key] = recent
            return False
        self._resumes[key] = [*recent, now]
        self._respawned[key] = now
        self._spawn(name, namespace, experiment_dir=state.get("experimentDir"))
        return True

    def _stop_runner(self, name: str, namespace: str) -> None:
        state = self._read_state(name, namespace)
        if state is None or not self._runner_alive(state):
            return
        pid, ticks = int(state["pid"]), state.get("ticks")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while self._runner_alive(state) and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_tree.is_alive(pid, ticks):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for child in _RUNNERS:
            if child.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=5)
        self._reap()

    # --- experiments -------------------------------------------------------------------
    def _load(self, document: ExperimentDocument) -> Experiment:
        if isinstance(document.body, dict):
            return load_experiment_dict(document.body, source=document.source)
        return load_experiment(document.body, source=document.source)

    def create_experiment(self, document: ExperimentDocument) -> Experiment:
        experiment = self._load(document)
        meta = experiment.metadata
        meta.namespace = document.namespace or meta.namespace or self.default_namespace
        if not meta.name:
            suffix = "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
            meta.name = f"{meta.generate_name}{suffix}"
        name, namespace = experiment.name, experiment.namespace
        try:
            self.storage.get_experiment(name, namespace)
        except errors.NotFoundError:
            pass
        else:
            raise errors.AlreadyExistsError(
                f"A Katib Experiment with the name {namespace}/{name} already exists."
            )
        spec_dir = self.state_file(name, namespace).parent
        spec_dir.mkdir(parents=True, exist_ok=True)
        self.state_file(name, namespace).unlink(missing_ok=True)
        spec_file = spec_dir / f".{name}.{secrets.token_hex(4)}.create.json"
        spec_file.write_text(json.dumps(experiment.to_dict()))
        try:
            child = self._spawn(name, namespace, spec_file, document.directory or Path.cwd())
            self._wait_accepted(name, namespace, child)
        finally:
            spec_file.unlink(missing_ok=True)
        return self.storage.get_experiment(name, namespace)

    def _not_found(self, exc: errors.NotFoundError, namespace: str) -> errors.NotFoundError:
        names = [e.name for e in self.storage.list_experiments(namespace)]
        known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        hint = f" (experiments there: {known})" if names else " (it has no experiments)"
        return errors.NotFoundError(f"{exc}{hint}; data in {self.db_url_redacted}")

    @property
    def db_url_redacted(self) -> str:
        from katib.storage.engine import redact

        return redact(self.db_url)

    def get_experiment(self, name: str, namespace: str) -> Experiment:
        try:
            experiment = self.storage.get_experiment(name, namespace)
        except errors.NotFoundError as exc:
            raise self._not_found(exc, namespace) from None
        self.ensure_running(experiment)
        return experiment

    def list_experiments(self, namespace: str | None) -> list[Experiment]:
        return self.storage.list_experiments(namespace)

    def edit_experiment_budget(
        self,
        name: str,
        namespace: str,
        max_trial_count: int | None,
        parallel_trial_count: int | None,
        max_failed_trial_count: int | None,
    ) -> Experiment:
        old = self.get_experiment(name, namespace)
        new = old.model_copy(deep=True)
        if max_trial_count is not None:
            new.spec.max_trial_count = max_trial_count
        if parallel_trial_count is not None:
            new.spec.parallel_trial_count = parallel_trial_count
        if max_failed_trial_count is not None:
            new.spec.max_failed_trial_count = max_failed_trial_count
        trials = self.storage.list_trials(name, namespace)
        problems = validate_update(old, new, trials_count=len(trials))
        if problems:
            raise errors.InvalidSpecError(
                problems, source=f"cannot edit the budget of experiment {namespace}/{name}"
            )
        self.storage.update_experiment_spec(new)
        if status.is_experiment_completed(old) and old.status is not None:
            exp_status = old.status
            exp_status.conditions = [
                c for c in exp_status.conditions if c.type not in ("Succeeded", "Failed")
            ]
            status.mark_experiment(
                exp_status,
                ExperimentConditionType.RESTARTING,
                "ExperimentRestarting",
                "Experiment is restarted",
            )
            exp_status.completion_time = None
            self.storage.update_experiment_status(name, namespace, exp_status)
            state = self._read_state(name, namespace)
            if state is None or not self._runner_alive(state):
                self._respawned[(namespace, name)] = time.monotonic()
                self._spawn(name, namespace, experiment_dir=(state or {}).get("experimentDir"))
        return self.storage.get_experiment(name, namespace)

    def delete_experiment(self, name: str, namespace: str) -> None:
        self._respawned[(namespace, name)] = float("inf")  # no resume while deleting
        try:
            self.storage.get_experiment(name, namespace)
        except errors.NotFoundError as exc:
            self._respawned.pop((namespace, name), None)
            raise self._not_found(exc, namespace) from None
        self._stop_runner(name, namespace)
        trials = self.storage.list_trials(name, namespace)
        executor = LocalExecutor(self.data_dir / "trials")
        try:
            for trial in trials:
                if not trial.is_completed:
                    executor.stop(trial)
            self.storage.delete_experiment(name, namespace)
            for trial in trials:
                executor.remove(trial)
        finally:
            executor.close()
        self.state_file(name, namespace).unlink(missing_ok=True)
        self._respawned.pop((namespace, name), None)

    # --- trials ----------------------------------------------------------------------
    def list_trials(self, experiment_name: str, namespace: str) -> list[Trial]:
        self.get_experiment(experiment_name, namespace)
        return self.storage.list_trials(experiment_name, namespace)

    def get_trial(self, name: str, namespace: str) -> Trial:
        return self.storage.get_trial(name, namespace)

    def get_observation_log(
        self, trial_name: str, namespace: str, metric_name: str | None
    ) -> list[MetricLog]:
        self.storage.get_trial(trial_name, namespace)
        return [
            MetricLog(
                time_stamp=_rfc3339(entry.timestamp),
                metric=MetricValue(name=entry.metric_name, value=entry.value),
                step=entry.step,
            )
            for entry in self.storage.get_observation_log(trial_name, metric_name)
        ]

    def get_trial_logs(self, trial_name: str, namespace: str, tail: int | None) -> str:
        trial = self.storage.get_trial(trial_name, namespace)
        path = LocalExecutor(self.data_dir / "trials").log_path(trial)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            if not trial.is_completed:
                raise errors.NotFoundError(f"trial {trial_name} has no log yet ({path})") from None
            text = ""  # it ended without printing anything (a function trial keeps no file)
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-tail:]) if tail > 0 else ""
        return text

"""Embedded mode: storage, DBManager, suggestion services, executor and controller in one run.

The same servers as in server mode, wired on 127.0.0.1 with ephemeral ports:
DBManager runs in this process (the collectors of local trials report to it),
each algorithm's suggestion service runs as a child process.

The EarlyStopping service runs in this process too, started on first use: it is
cheap (no model, no heavy imports) and stateless, so a separate process would buy
no isolation, and in-process its SetTrialStatus can reach the controller directly
(Katib's service patches the Trial object; ours asks the controller, the single
writer of trials, to end the trial as EarlyStopped). Its rules are still fetched
over gRPC, like from Katib's service, and it reads observation logs over gRPC from
this process's DBManager.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from katib import errors
from katib.api.models import Experiment, ExperimentConditionType
from katib.controller import status
from katib.controller.early_stopping_client import EarlyStoppingClient
from katib.controller.reconcile import Controller, PassResult
from katib.controller.suggestion_client import SuggestionClient, SuggestionServiceProcess
from katib.executors import process_tree
from katib.executors.base import BaseExecutor, LaunchContext
from katib.executors.local import LocalExecutor
from katib.storage.base import BaseStorage
from katib.storage.dbmanager import serve_dbmanager
from katib.storage.engine import default_data_dir, resolve_url
from katib.storage.sql import SQLStorage

if TYPE_CHECKING:
    import grpc

    from katib.controller.service_pool import SuggestionServicePool
    from suggestion_services.server import EarlyStoppingServicer

log = logging.getLogger(__name__)

BUDGET_FIELDS = ("parallelTrialCount", "maxTrialCount", "maxFailedTrialCount")


def _process_start_ticks(pid: int) -> str | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def owner_identity() -> str:
    """host:pid:start-ticks, so a reused pid is not mistaken for a live owner."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start_ticks(pid)}"


def owner_is_dead(owner: str) -> bool:
    """True only when we can tell for sure (same host, process gone or pid reused)."""
    try:
        host, pid_text, ticks = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    try:
        started = int(ticks)
    except ValueError:
        return _process_start_ticks(pid) != ticks
    # A zombie (exited, not yet reaped by its parent) is dead too.
    return not process_tree.is_alive(pid, started)


@dataclass
class RunOptions:
    poll_interval: float = 0.05
    heartbeat_interval: float = 5.0


class Runtime:
    """What one `katib run` (or an embedded SDK client) needs, started and stopped together."""

    def __init__(
        self,
        data_dir: Path | None = None,
        db_url: str | None = None,
        executor: BaseExecutor | None = None,
        notice: Callable[[str], None] | None = None,
        *,
        db_manager_host: str = "127.0.0.1",
        db_manager_port: int = 0,
        token: str | None = None,
        prestart: Sequence[str] = (),
        service_pool: SuggestionServicePool | None = None,
    ) -> None:
        """`db_manager_host`/`db_manager_port`: where DBManager listens (port 0: any free
        one). `token`: when set, DBManager refuses calls without it, and local trials get
        it as KATIB_TOKEN for their collectors and `katib.report_metrics`.
        `service_pool`: where suggestion services come from and go back to on close
        (without one, this runtime starts its own and kills them on close)."""
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._services: dict[str, SuggestionServiceProcess] = {}
        self._service_pool = service_pool
        for algorithm in prestart:  # their start-up overlaps the rest of this one
            self.prestart_suggestion_service(algorithm)
        if executor is not None:
            executor.prestart()  # so does the executor's (warm workers)
        self.token = token
        try:
            self.storage: BaseStorage = SQLStorage(resolve_url(db_url, self.data_dir))
        except BaseException:
            self._close_started(executor)
            raise
        interceptors: list[grpc.ServerInterceptor] = []
        if token:
            from katib.server.grpc_auth import GrpcTokenInterceptor

            interceptors.append(GrpcTokenInterceptor(token))
        try:
            self._server, port = serve_dbmanager(
                self.storage, host=db_manager_host, port=db_manager_port,
                interceptors=interceptors,
            )
        except BaseException:
            self.storage.close()
            self._close_started(executor)
            raise
        self.db_manager_port = port
        # Trials on this machine dial loopback even when DBManager listens on all addresses.
        local_host = db_manager_host if db_manager_host not in ("0.0.0.0", "::", "") else (
            "127.0.0.1"
        )
        if ":" in local_host and not local_host.startswith("["):
            local_host = f"[{local_host}]"
        self.db_manager_address = f"{local_host}:{port}"
        self.address_file = self.data_dir / "dbmanager.addr"
        tmp = self.address_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(self.db_manager_address)
        os.replace(tmp, self.address_file)
        self.executor = executor or LocalExecutor(
            self.data_dir / "trials", notice=notice, token=token
        )
        self._experiment_dirs: dict[tuple[str, str], Path] = {}
        self._early_stopping: tuple[grpc.Server, EarlyStoppingServicer, EarlyStoppingClient] | None
        self._early_stopping = None
        self._early_stopping_lock = threading.Lock()
        self.owner = owner_identity()
        self.controller = Controller(
            self.storage,
            self.executor,
            self.suggestion_client,
            self.launch_context,
            early_stopping_client=self.early_stopping_client,
        )

    # --- wiring --------------------------------------------------------------------
    def suggestion_client(self, algorithm: str) -> SuggestionClient:
        return self._service(algorithm).client()

    def prestart_suggestion_service(self, algorithm: str) -> None:
        """Start the algorithm's service now, so it gets ready while the caller works."""
        self._service(algorithm).spawn()

    def _service(self, algorithm: str) -> SuggestionServiceProcess:
        service = self._services.get(algorithm)
        if service is None:
            logs = self.data_dir / "logs"
            logs.mkdir(exist_ok=True)
            log_path = str(logs / f"suggestion-{algorithm}.log")
            fresh = (
                self._service_pool.take(algorithm, log_path)
                if self._service_pool is not None
                else SuggestionServiceProcess(algorithm, log_path)
            )
            # setdefault: passes of several experiments may ask at once (server mode);
            # the process starts lazily in client(), so a losing `fresh` costs nothing.
            service = self._services.setdefault(algorithm, fresh)
        return service

    def publish_address(self) -> None:
        """(Re)write the DBManager address file with this runtime's address.

        Collectors re-read the file when their DBManager stops answering, so a server
        that adopts another's experiments calls this to take over their reporting.
        """
        tmp = self.address_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(self.db_manager_address)
        os.replace(tmp, self.address_file)

    def early_stopping_client(self, algorithm: str = "") -> EarlyStoppingClient:
        """A client of the in-process EarlyStopping service (started on first use).

        One service serves every early-stopping algorithm; the request names it.
        """
        with self._early_stopping_lock:
            if self._early_stopping is None:
                from suggestion_services.server import (
                    EarlyStoppingServicer,
                    serve_early_stopping,
                )

                servicer = EarlyStoppingServicer(on_trial_stopped=self.on_trial_stopped)
                server, port = serve_early_stopping("127.0.0.1", 0, servicer)
                client = EarlyStoppingClient(f"127.0.0.1:{port}")
                self._early_stopping = (server, servicer, client)
            return self._early_stopping[2]

    @property
    def early_stopping_address(self) -> str:
        """host:port of the EarlyStopping service (collectors call SetTrialStatus there)."""
        return self.early_stopping_client().address

    def on_trial_stopped(self, trial_name: str) -> None:
        """SetTrialStatus(trial_name): have the controller end the trial as EarlyStopped.

        NotFoundError for a trial this storage does not know; a completed trial is left
        as it is (the call is idempotent).
        """
        for namespace in sorted({e.namespace for e in self.storage.list_experiments()}):
            try:
                trial = self.storage.get_trial(trial_name, namespace)
            except errors.NotFoundError:
                continue
            if not trial.is_completed:
                self.controller.request_early_stop(trial_name)
            return
        raise errors.NotFoundError(f"trial {trial_name} not found")

    def launch_context(self, experiment: Experiment) -> LaunchContext:
        return LaunchContext(
            experiment=experiment,
            db_manager_address=self.db_manager_address,
            db_manager_address_file=self.address_file,
            experiment_dir=self._experiment_dirs.get((experiment.namespace, experiment.name)),
            early_stopping_address=(
                self.early_stopping_address if experiment.spec.early_stopping else None
            ),
        )

    # --- submitting ------------------------------------------------------------------
    def submit(self, experiment: Experiment, experiment_dir: Path | None = None) -> Experiment:
        """Store a new experiment, or resume the stored one of the same name.

        Resuming accepts budget edits (Katib's editable fields); any other change is
        a conflict, because trials already run belong to the stored spec.
        """
        key = (experiment.namespace, experiment.name)
        if experiment_dir is not None:
            self._experiment_dirs[key] = experiment_dir.resolve()
        try:
            stored = self.storage.get_experiment(experiment.name, experiment.namespace)
        except errors.NotFoundError:
            algorithm = experiment.spec.algorithm
            name = algorithm.algorithm_name or "" if algorithm else ""
            self.suggestion_client(name).validate(experiment)
            if experiment.spec.early_stopping is not None:
                self.early_stopping_client().validate(experiment.spec.early_stopping)
            self.storage.create_experiment(experiment)
            return self.storage.get_experiment(experiment.name, experiment.namespace)
        new_spec = experiment.spec.to_dict()
        old_spec = stored.spec.to_dict()
        changed = sorted(
            k for k in set(new_spec) | set(old_spec) if new_spec.get(k) != old_spec.get(k)
        )
        forbidden = [k for k in changed if k not in BUDGET_FIELDS]
        if forbidden:
            raise errors.AlreadyExistsError(
                f"experiment {experiment.namespace}/{experiment.name} already exists with a "
                f"different spec (changed: {', '.join('spec.' + k for k in forbidden)}); only "
                "spec.parallelTrialCount, spec.maxTrialCount and spec.maxFailedTrialCount are "
                f"editable. Delete it first: katib delete experiment {experiment.name}"
            )
        if changed:
            trials = self.storage.list_trials(experiment.name, experiment.namespace)
            max_trials = experiment.spec.max_trial_count
            if max_trials is not None and "maxTrialCount" in changed and max_trials <= len(trials):
                raise errors.InvalidArgumentError(
                    f"spec.maxTrialCount: must be greater than status.trials count ({len(trials)})"
                )
            stored.spec = experiment.spec
            self.storage.update_experiment_spec(stored)
            self._restart_if_budget_allows(stored, len(trials))
        return self.storage.get_experiment(experiment.name, experiment.namespace)

    def _restart_if_budget_allows(self, experiment: Experiment, trial_count: int) -> None:
        exp_status = experiment.status
        if exp_status is None or not status.is_experiment_completed(experiment):
            return
        succeeded = next(
            (
                c
                for c in exp_status.conditions
                if c.type == ExperimentConditionType.SUCCEEDED and c.status == "True"
            ),
            None,
        )
        max_trials = experiment.spec.max_trial_count
        if (
            succeeded is None
            or succeeded.reason != "ExperimentMaxTrialsReached"
            or max_trials is None
            or max_trials <= trial_count
        ):
            return
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
        self.storage.update_experiment_status(experiment.name, experiment.namespace, exp_status)

    # --- running -------------------------------------------------------------------
    def acquire(self, name: str, namespace: str) -> None:
        ownership = self.storage.get_ownership(name, namespace)
        dead = [ownership.owner] if ownership.owner and owner_is_dead(ownership.owner) else []
        if not self.storage.acquire_experiment(name, namespace, self.owner, steal_from=dead):
            raise errors.ConflictError(
                f"experiment {namespace}/{name} is being run by another controller "
                f"({ownership.owner}); wait for it or stop it first"
            )

    def reconcile_pass(self, name: str, namespace: str) -> PassResult:
        """One reconcile pass; an error no retry can fix fails the experiment.

        The suggestion service refusing the experiment ("Suggestion has failed", as
        Katib says) and a spec problem found while making a trial (a trial template's
        ConfigMap that does not exist, say) each say which it was. UnavailableError
        (and other storage errors) propagate: the caller retries.
        """
        try:
            return self.controller.reconcile(name, namespace)
        except errors.InvalidSpecError as exc:
            message = f"Experiment spec is invalid: {exc}"
        except errors.InvalidArgumentError as exc:
            message = f"Suggestion has failed: {exc}"
        self.controller.fail_experiment(name, namespace, message)
        return self.controller.reconcile(name, namespace)

    def run(
        self,
        name: str,
        namespace: str = "default",
        on_pass: Callable[[PassResult], None] | None = None,
        options: RunOptions | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Experiment:
        """Reconcile until the experiment completes (or `should_stop` says so)."""
        options = options or RunOptions()
        self.acquire(name, namespace)
        # Fenced writes (Controller.owner): should a server take the experiment over
        # while a pass is slow, this run gets ConflictError instead of adding trials.
        self.controller.owner = self.owner
        last_beat = time.monotonic()
        try:
            while True:
                try:
                    result = self.reconcile_pass(name, namespace)
                except errors.UnavailableError as exc:
                    log.warning("retrying after: %s", exc)
                    time.sleep(min(1.0, options.poll_interval * 5))
                    continue
                if on_pass is not None:
                    on_pass(result)
                if result.completed or (should_stop is not None and should_stop()):
                    return result.experiment
                if time.monotonic() - last_beat > options.heartbeat_interval:
                    self.acquire(name, namespace)
                    last_beat = time.monotonic()
                if not result.created and not result.finished:
                    time.sleep(options.poll_interval)
        finally:
            self.storage.release_experiment(name, namespace, self.owner)

    def _close_started(self, executor: BaseExecutor | None) -> None:
        """What __init__ started before failing (the runtime owns a given executor)."""
        self._close_services()
        if executor is not None:
            executor.close()

    def _close_services(self) -> None:
        for service in self._services.values():
            if self._service_pool is not None:
                self._service_pool.give_back(service)
            else:
                service.close()
        self._services.clear()

    def close(self) -> None:
        self._close_services()
        if self._early_stopping is not None:
            server, servicer, client = self._early_stopping
            client.close()
            server.stop(grace=1.0).wait(2.0)
            servicer.close()
            self._early_stopping = None
        self.executor.close()
        self._server.stop(grace=1.0).wait(2.0)
        self.storage.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""The reconcile loop: from stored state to the next action, one pass at a time.

Each pass starts from the experiment and its trials as stored (kept in memory
between passes and read again only when another writer has changed them, see
katib.controller.experiment_view), asks the executor where each unfinished trial
is, records outcomes, decides whether the experiment is done (Katib's order: goal,
failure budget, trial budget), and otherwise asks the suggestion service for as
many new trials as the parallel and total budgets allow. New trials are stored
(condition Created) before they are launched, and launching is idempotent, so a
pass may be cut off at any instant and simply run again.

A pass writes once, in one transaction: the outcomes it recorded (with the metrics
the executor spooled, acknowledged only after that commit), the new trials and the
experiment's status. That a trial has started may wait for the next write, or at
most LAZY_WRITE_SECONDS; a restart in between finds it Created and asks the
executor, which knows it is running.

Early stopping (Katib's flow, reference 1.4 and 4.3): when the experiment has
spec.earlyStopping, every batch of new trials carries the rules GetEarlyStoppingRules
returned just before it (stored in each Trial's spec.earlyStoppingRules and handed to
its collector). A trial whose collector stopped it for those rules, or that was named
in SetTrialStatus (`request_early_stop`), ends EarlyStopped with its observation;
it counts as completed, not failed, like in Katib.

Deliberate differences from Katib:
- trials still running when the experiment ends are stopped and marked Killed
  (Katib leaves them running, kubeflow/katib#2061);
- no more than maxTrialCount trials are ever created (Katib replaces
  MetricsUnavailable trials beyond the budget);
- a search space that runs out ends the experiment as Succeeded with reason
  ExperimentSuggestionEndReached (Katib never sets it);
- a reply with fewer assignments than asked for is accepted (Katib retries the
  request forever); the service is asked again once a trial has finished, which is
  how hyperband waits for a rung;
- a running trial whose collector stops sending heartbeats for longer than the
  heartbeat timeout (KATIB_HEARTBEAT_TIMEOUT, 30 s) is killed and marked Failed with
  reason TrialHeartbeatLost (Katib relies on the kubelet instead); a trial whose
  collector died without an outcome (LOST) has its surviving processes killed;
- an executor may limit how many trials of an experiment run at once
  (`max_parallel`, e.g. a metrics path that cannot be private), or defer a launch.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from katib import errors
from katib.api.models import (
    EXPERIMENT_LABEL,
    AlgorithmSetting,
    Condition,
    EarlyStoppingRule,
    Experiment,
    ExperimentConditionType,
    ExperimentStatus,
    ObjectMeta,
    ParameterAssignment,
    Trial,
    TrialConditionType,
    TrialSpec,
    TrialStatus,
)
from katib.controller import observation, status, time_budget
from katib.controller.early_stopping_client import EarlyStoppingClient
from katib.controller.experiment_view import ExperimentView
from katib.controller.faults import crash_point
from katib.controller.heartbeats import HeartbeatMonitor
from katib.controller.suggestion_client import SuggestionClient
from katib.controller.templating import render_run_spec
from katib.executors.base import (
    BaseExecutor,
    LaunchContext,
    LaunchDeferredError,
    TrialOutcome,
    TrialPhase,
    heartbeat_timeout,
)
from katib.storage.base import BaseStorage, MetricLogEntry
from katib.storage.tables import to_db_time

log = logging.getLogger(__name__)

#: How long the controller may hold back writing that trials have started.
LAZY_WRITE_SECONDS = 1.0
#: How long a view confirmed current (read, or written by this controller) is used
#: without asking storage for the revision again.
VIEW_TTL_SECONDS = 0.05

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' utilrand alphabet


def _numbered(
    stored: list[MetricLogEntry], spooled: list[MetricLogEntry]
) -> list[MetricLogEntry]:
    """`spooled` with the steps storage would give them after `stored` (so it need not ask)."""
    next_step: dict[str, int] = {}
    for e in stored:
        if e.step is not None:
            next_step[e.metric_name] = max(next_step.get(e.metric_name, 1), e.step + 1)
    out = []
    for e in spooled:
        step = e.step
        if step is None:
            step = next_step.get(e.metric_name, 1)
        next_step[e.metric_name] = max(next_step.get(e.metric_name, 1), step + 1)
        out.append(e if e.step == step else dataclasses.replace(e, step=step))
    return out


def new_trial_name(experiment_name: str) -> str:
    """`<experiment>-` and 8 random characters of _NAME_ALPHABET (one draw, not eight)."""
    number = secrets.randbelow(len(_NAME_ALPHABET) ** 8)
    suffix = []
    for _ in range(8):
        number, digit = divmod(number, len(_NAME_ALPHABET))
        suffix.append(_NAME_ALPHABET[digit])
    return f"{experiment_name}-" + "".join(suffix)


@dataclass
class PassResult:
    """What one reconcile pass saw and did."""

    experiment: Experiment
    trials: list[Trial]
    created: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return status.is_experiment_completed(self.experiment)


class Controller:
    """Drives experiments to completion against one storage and one executor."""

    def __init__(
        self,
        storage: BaseStorage,
        executor: BaseExecutor,
        suggestion_client: Callable[[str], SuggestionClient],
        context: Callable[[Experiment], LaunchContext],
        early_stopping_client: Callable[[str], EarlyStoppingClient] | None = None,
        heartbeat_timeout_seconds: float | None = None,
    ) -> None:
        """``heartbeat_timeout_seconds``: silence after which a running trial is lost
        (default KATIB_HEARTBEAT_TIMEOUT or 30 s; 0 never declares one lost)."""
        self.storage = storage
        self.executor = executor
        self._client_for = suggestion_client
        self._context = context
        self._early_stopping_for = early_stopping_client
        #: Fencing identity (set by a server's reconciler and by Runtime.run; None
        #: writes unfenced). When set, a pass creates trials and writes the experiment's
        #: status only while this owner holds the experiment's lease, checked by storage
        #: in the same transaction as the write; new trials are also planned on a trial
        #: count that storage re-counts in that transaction. So a pass that outlived its
        #: lease (process paused, database unreachable for a while) gets ConflictError
        #: instead of adding trials beside the new owner's: never a duplicate, never more
        #: than maxTrialCount. Trial status writes stay unfenced: they record what the
        #: executor reports, and two writers of one outcome write the same thing.
        self.owner: str | None = None
        self._exhausted: set[tuple[str, str]] = set()
        # Experiments whose last reply was short: ask again once a trial has finished.
        self._waiting: set[tuple[str, str]] = set()
        self._stop_requests: set[str] = set()
        self._stop_lock = threading.Lock()
        # Each experiment as this controller last left it (katib.controller.experiment_view).
        self._views: dict[tuple[str, str], ExperimentView] = {}
        #: How long a trial's start may wait to be written (with the next write, or then).
        self.lazy_write_seconds = LAZY_WRITE_SECONDS
        #: How long a view is trusted without reading the revision (VIEW_TTL_SECONDS).
        self.view_ttl_seconds = VIEW_TTL_SECONDS
        self._heartbeats = HeartbeatMonitor(
            heartbeat_timeout()
            if heartbeat_timeout_seconds is None
            else max(0.0, heartbeat_timeout_seconds)
        )

    def forget_experiment(self, name: str, namespace: str) -> None:
        """Drop what this controller remembers of an experiment between passes.

        Called when ownership is (re)gained: another controller may have run it
        meanwhile, so an old 'search space exhausted' or 'waiting' note may be stale.
        """
        self._exhausted.discard((namespace, name))
        self._waiting.discard((namespace, name))
        self._views.pop((namespace, name), None)

    # --- early stopping ----------------------------------------------------------------
    def request_early_stop(self, trial_name: str) -> None:
        """SetTrialStatus arrived for `trial_name`: the next pass ends it as EarlyStopped.

        Thread-safe (called from the EarlyStopping server's threads); only the reconcile
        pass writes the trial, so there is a single writer. A running trial is stopped.
        """
        with self._stop_lock:
            self._stop_requests.add(trial_name)

    def _stop_requested(self, trial_name: str, consume: bool = False) -> bool:
        with self._stop_lock:
            if trial_name not in self._stop_requests:
                return False
            if consume:
                self._stop_requests.discard(trial_name)
            return True

    def _early_stopping_rules(
        self, experiment: Experiment, trials: Sequence[Trial]
    ) -> list[EarlyStoppingRule]:
        """Rules for the next batch (none without spec.earlyStopping or a client)."""
        spec = experiment.spec.early_stopping
        if spec is None or self._early_stopping_for is None:
            return []
        client = self._early_stopping_for(spec.algorithm_name or "")
        address = self._context(experiment).db_manager_address
        return client.get_rules(experiment, trials, address)

    # --- trials --------------------------------------------------------------------
    def _launch(self, view: ExperimentView, trial: Trial) -> None:
        try:
            self.executor.launch(trial, self._context(view.experiment))
            crash_point("after_launch")
        except LaunchDeferredError as exc:
            log.debug("%s: launch deferred: %s", trial.name, exc)
            return  # stays Created; launched on a later pass
        except errors.ExecutorError as exc:
            status.mark_trial(
                trial,
                TrialConditionType.FAILED,
                "TrialFailed",
                f"Trial has failed. Job message: {exc}",
            )
        else:
            status.mark_trial(trial, TrialConditionType.RUNNING, "TrialRunning", "Trial is running")
            view.changed(trial, lazy=True)
            return
        view.changed(trial)

    def _heartbeat_lost(self, trial: Trial, outcome: TrialOutcome) -> bool:
        """Has a running trial's heartbeat stopped for too long? Then kill what is left.

        On True, ``outcome.message`` says what was seen (for the Failed condition).
        """
        if not outcome.watch_heartbeat:
            return False
        lost = self._heartbeats.observe(trial.name, outcome.heartbeat)
        if lost is None:
            return False
        log.warning("%s: %s", trial.name, lost.message())
        self.executor.kill(trial)
        self._heartbeats.forget(trial.name)
        outcome.message = lost.message()
        return True

    def _finish(
        self,
        view: ExperimentView,
        trial: Trial,
        outcome: TrialOutcome,
        early_stopped: bool = False,
        lost_reason: str = "TrialLost",
    ) -> None:
        experiment = view.experiment
        names = list(observation.strategies_of(experiment))
        entries = (
            [] if outcome.unreported_is_whole else self.storage.get_observation_log(trial.name)
        )
        if outcome.unreported:
            # Stored with this pass's write and acknowledged after it (see _write).
            spooled = _numbered(entries, list(outcome.unreported))
            view.ingest(trial, spooled)
            # The log as storage will return it once `spooled` is appended.
            entries = sorted(entries + spooled, key=lambda e: to_db_time(e.timestamp))
        trial.status.observation = observation.build_observation(entries, names)
        stopped = outcome.early_stopped or early_stopped
        has_value = observation.objective_value(experiment, trial) is not None
        if outcome.phase == TrialPhase.LOST:
            status.mark_trial(
                trial,
                TrialConditionType.FAILED,
                lost_reason,
                f"Trial has failed: {outcome.message}",
            )
        elif stopped and has_value:
            status.mark_trial(
                trial,
                TrialConditionType.EARLY_STOPPED,
                "TrialEarlyStopped",
                "Trial is early stopped",
            )
        elif not stopped and not outcome.succeeded:
            message = "Trial has failed"
            if outcome.message:
                message += f". Job message: {outcome.message}"
            status.mark_trial(trial, TrialConditionType.FAILED, "TrialFailed", message)
        elif has_value:
            status.mark_trial(
                trial, TrialConditionType.SUCCEEDED, "TrialSucceeded", "Trial has succeeded"
            )
        else:
            # Katib appends MetricsUnavailable over EarlyStopped when the objective is
            # missing; an early-stopped trial goes straight to it here.
            objective = experiment.spec.objective
            metric = objective.objective_metric_name if objective else ""
            seen = any(e.metric_name == metric for e in entries)
            detail = (
                f"objective metric {metric} had no finite value"
                if seen
                else f"objective metric {metric} was not reported"
            )
            if outcome.metrics_reason:
                detail += f": {outcome.metrics_reason}"
            if stopped:
                detail = f"the trial was early stopped and its {detail}"
            status.mark_trial(
                trial,
                TrialConditionType.METRICS_UNAVAILABLE,
                "MetricsUnavailable",
                f"Metrics are not available: {detail}",
            )
        crash_point("before_finish")
        view.changed(trial)

    def _build_trial(
        self,
        experiment: Experiment,
        name: str,
        assignments: dict[str, str],
        labels: dict[str, str],
        rules: Sequence[EarlyStoppingRule] = (),
    ) -> Trial:
        template = experiment.spec.trial_template
        assert template is not None
        both = bool(template.success_condition and template.failure_condition)
        trial = Trial(
            metadata=ObjectMeta(
                name=name,
                namespace=experiment.namespace,
                labels={
                    **(experiment.metadata.labels or {}),
                    EXPERIMENT_LABEL: experiment.name,
                    **labels,
                },
            ),
            spec=TrialSpec(
                objective=experiment.spec.objective,
                parameter_assignments=[
                    ParameterAssignment(name=k, value=v) for k, v in assignments.items()
                ],
                early_stopping_rules=[r.model_copy() for r in rules] or None,
                run_spec=render_run_spec(experiment, name, assignments),
                retain_run=template.retain,
                metrics_collector=experiment.spec.metrics_collector_spec,
                primary_pod_labels=template.primary_pod_labels,
                primary_container_name=template.primary_container_name,
                success_condition=template.success_condition if both else None,
                failure_condition=template.failure_condition if both else None,
            ),
            status=TrialStatus(start_time=status.now_rfc3339()),
        )
        status.mark_trial(trial, TrialConditionType.CREATED, "TrialCreated", "Trial is created")
        return trial

    def _create_trials(
        self, view: ExperimentView, count: int, exp_status: ExperimentStatus
    ) -> list[Trial]:
        """Ask for `count` suggestions and store them as trials, with the pending changes.

        With fencing on, storage re-checks in the insert's transaction that the
        experiment still has the trials the plan was made on (`view.history`).
        """
        experiment = view.experiment
        key = (experiment.namespace, experiment.name)
        history = view.history
        algorithm = experiment.spec.algorithm
        client = self._client_for(algorithm.algorithm_name or "" if algorithm else "")
        settings = [(s.name, s.value) for s in exp_status.algorithm_settings or []]
        # Before GetSuggestions (Katib asks after): a failure here then costs no suggestions.
        rules = self._early_stopping_rules(experiment, history)
        try:
            reply = client.get_suggestions(
                experiment,
                history,
                count,
                len(history) + count,
                settings,
                records=view.records(),
                # What this pass has recorded is stored while the algorithm works.
                while_waiting=lambda: self._write(view, exp_status=exp_status),
            )
        except errors.SearchSpaceExhaustedError as exc:
            self._exhausted.add(key)
            log.info("%s/%s: %s", *key, exc)
            return []
        settings_changed = False
        if reply.settings:
            merged = dict(settings)
            merged.update(reply.settings)
            settings_changed = merged != dict(settings)
            exp_status.algorithm_settings = [
                AlgorithmSetting(name=k, value=v) for k, v in merged.items()
            ]
        if len(reply.assignments) < count:
            # All the algorithm has for this history (hyperband waiting for a rung, a
            # finite space nearly used up). Only a finished trial can change its answer;
            # with nothing running, nothing will, so the search is over.
            if reply.assignments or view.open_trials():
                self._waiting.add(key)
            else:
                self._exhausted.add(key)
        new: list[Trial] = []
        for assignments, name, labels in zip(
            reply.assignments, reply.trial_names, reply.labels, strict=True
        ):
            new.append(
                self._build_trial(
                    experiment,
                    name or new_trial_name(experiment.name),
                    assignments,
                    labels,
                    rules,
                )
            )
        if new:
            planned_on = len(history)
            view.add(new)
            # The new trials go with the algorithm's new settings (none without the
            # other); the counts in the status may wait for the next write.
            self._write(
                view,
                new=new,
                exp_status=exp_status if settings_changed else None,
                force_status=True,
                expected_count=planned_on,
            )
            crash_point("after_create_trials")
        return new

    def _write(
        self,
        view: ExperimentView,
        *,
        new: Sequence[Trial] = (),
        exp_status: ExperimentStatus | None = None,
        force_status: bool = False,
        expected_count: int | None = None,
    ) -> None:
        """Store the view's pending changes, `new` trials and the status in one transaction.

        The status goes when `force_status` or `view.status_due` says so, if it changed.
        """
        batch, acknowledge = view.take()
        batch.new_trials = list(new)
        document: dict[str, Any] = {}
        if exp_status is not None and (
            force_status or view.status_due(exp_status, self.lazy_write_seconds)
        ):
            exp_status.current_optimal_trial = view.optimal()
            view.aggregate(exp_status)
            document = exp_status.to_dict()
            if document != view.saved_status:
                batch.status = exp_status
        if not batch:
            return
        experiment = view.experiment
        revision = self.storage.write_batch(
            experiment.name,
            experiment.namespace,
            batch,
            owner=self.owner,
            expected_count=expected_count if self.owner is not None and new else None,
        )
        # Another writer came in between: what is stored is no longer just the view.
        view.revision = revision if revision == view.revision + 1 else -1
        view.checked_at = time.monotonic()
        if batch.status is not None:
            view.status_saved(batch.status, document)
        if acknowledge:
            crash_point("after_ingest")
            # A crash here stores the spool twice on restart; the duplicates cannot
            # change min, max or latest.
            for trial in acknowledge:
                self.executor.acknowledge(trial)

    # --- the pass --------------------------------------------------------------------
    def _view(self, name: str, namespace: str) -> ExperimentView:
        """The experiment as last left, or freshly read if anyone else wrote since."""
        key = (namespace, name)
        view = self._views.get(key)
        now = time.monotonic()
        if (
            view is not None
            and view.revision >= 0
            and now - view.checked_at < self.view_ttl_seconds
        ):
            # Confirmed moments ago; a write in between is still caught by the next
            # revision this controller writes or reads, and fenced writes refuse a
            # lost lease in any case.
            return view
        revision = self.storage.experiment_revision(name, namespace)
        if view is not None and view.revision == revision:
            view.checked_at = now
        else:
            # A write landing between these reads leaves `revision` behind the data
            # read: the next pass sees a newer revision and reads again.
            experiment = self.storage.get_experiment(name, namespace)
            history = self.storage.list_trials(name, namespace)
            view = self._views[key] = ExperimentView(revision, experiment, history)
        return view

    def reconcile(self, name: str, namespace: str = "default") -> PassResult:
        try:
            return self._reconcile(self._view(name, namespace))
        except BaseException:
            # Changes made in memory may not have been stored: start the next pass afresh.
            self._views.pop((namespace, name), None)
            raise

    def _reconcile(self, view: ExperimentView) -> PassResult:
        experiment = view.experiment
        name, namespace = experiment.name, experiment.namespace
        result = PassResult(experiment=experiment, trials=view.trials)
        if status.is_experiment_completed(experiment):
            self._views.pop((namespace, name), None)
            result.trials = list(view.trials)
            return result
        exp_status = experiment.status or ExperimentStatus()
        if not exp_status.conditions:
            status.mark_experiment(
                exp_status,
                ExperimentConditionType.CREATED,
                "ExperimentCreated",
                "Experiment is created",
            )
            exp_status.start_time = status.now_rfc3339()
        out_of_time = time_budget.out_of_time(experiment, exp_status)

        self._forget_stop_requests_of_completed(view)
        for trial in view.open_trials():
            outcome = self.executor.poll(trial)
            requested = self._stop_requested(trial.name)
            if requested and outcome.phase == TrialPhase.RUNNING:
                self.executor.stop(trial)
                outcome = self.executor.poll(trial)
            if requested and outcome.phase == TrialPhase.NOT_STARTED:
                self._stop_requested(trial.name, consume=True)
                status.mark_trial(
                    trial,
                    TrialConditionType.EARLY_STOPPED,
                    "TrialEarlyStopped",
                    "Trial is early stopped",
                )
                view.changed(trial)
                result.finished.append(trial.name)
            elif outcome.phase == TrialPhase.NOT_STARTED:
                if not out_of_time:
                    self._launch(view, trial)
            elif outcome.phase == TrialPhase.RUNNING and self._heartbeat_lost(trial, outcome):
                result.finished.append(trial.name)
                self._finish(
                    view,
                    trial,
                    TrialOutcome(TrialPhase.LOST, message=outcome.message),
                    lost_reason="TrialHeartbeatLost",
                )
            elif outcome.phase == TrialPhase.RUNNING:
                if trial.condition == TrialConditionType.CREATED:
                    status.mark_trial(
                        trial, TrialConditionType.RUNNING, "TrialRunning", "Trial is running"
                    )
                    view.changed(trial, lazy=True)
            else:
                self._heartbeats.forget(trial.name)
                if outcome.phase == TrialPhase.LOST:
                    self.executor.kill(trial)  # what outlived its collector
                self._finish(
                    view,
                    trial,
                    outcome,
                    early_stopped=self._stop_requested(trial.name, consume=True),
                )
                result.finished.append(trial.name)

        if not self._decide(view, exp_status):
            counts = view.counts()
            spec = experiment.spec
            parallel = spec.parallel_trial_count or 3
            limit = self.executor.max_parallel(experiment)
            if limit is not None:
                parallel = min(parallel, limit)
            active = counts["pending"] + counts["running"]
            add = parallel - active
            if spec.max_trial_count is not None:
                add = min(add, spec.max_trial_count - len(view.trials))
            key = (namespace, name)
            if result.finished or active == 0:
                self._waiting.discard(key)
            if (
                add > 0
                and key not in self._exhausted
                and key not in self._waiting
                and not out_of_time
            ):
                new = self._create_trials(view, add, exp_status)
                for trial in new:
                    self._launch(view, trial)
                result.created = [t.name for t in new]
            self._decide(view, exp_status)

        experiment.status = exp_status
        completed = status.is_experiment_completed(experiment)
        lazy = self.lazy_write_seconds
        if completed or view.due(lazy) or view.status_due(exp_status, lazy):
            self._write(view, exp_status=exp_status, force_status=completed)
        # Unwritten now, if anything: trial starts and the counts, which go with the next
        # write or within LAZY_WRITE_SECONDS (one transaction per trial when trials are
        # short). A restart in between finds such trials Created; the executor says
        # where they are.
        exp_status.current_optimal_trial = view.optimal()
        view.aggregate(exp_status)
        result.trials = list(view.trials)
        return result

    def _forget_stop_requests_of_completed(self, view: ExperimentView) -> None:
        with self._stop_lock:
            if not self._stop_requests:
                return
            for name in list(self._stop_requests):
                if view.is_completed(name):
                    self._stop_requests.discard(name)

    def _decide(self, view: ExperimentView, exp_status: ExperimentStatus) -> bool:
        """Set the experiment's condition; True when it has reached an end."""
        experiment = view.experiment
        trials = view.trials
        counts = view.counts()
        spec = experiment.spec
        done: tuple[ExperimentConditionType, str, str] | None = None
        if trials:
            best = view.optimal()
            failed = counts["failed"] + counts["metrics_unavailable"]
            completed = (
                counts["succeeded"]
                + counts["failed"]
                + counts["killed"]
                + counts["early_stopped"]
                + counts["metrics_unavailable"]
            )
            if observation.goal_reached(experiment, best):
                done = (
                    ExperimentConditionType.SUCCEEDED,
                    "ExperimentGoalReached",
                    "Experiment has succeeded because Objective goal has reached",
                )
            elif (
                spec.max_failed_trial_count is not None
                and failed
                and failed >= spec.max_failed_trial_count
            ):
                done = (
                    ExperimentConditionType.FAILED,
                    "ExperimentFailed",
                    "Experiment has failed because max failed count has reached",
                )
            elif spec.max_trial_count is not None and completed >= spec.max_trial_count:
                done = (
                    ExperimentConditionType.SUCCEEDED,
                    "ExperimentMaxTrialsReached",
                    "Experiment has succeeded because max trial count has reached",
                )
            elif (experiment.namespace, experiment.name) in self._exhausted and counts[
                "pending"
            ] + counts["running"] == 0:
                done = (
                    ExperimentConditionType.SUCCEEDED,
                    "ExperimentSuggestionEndReached",
                    "Experiment has succeeded because suggestion service has reached the "
                    "end: every point of the search space has been tried",
                )
        elif (experiment.namespace, experiment.name) in self._exhausted:
            done = (
                ExperimentConditionType.SUCCEEDED,
                "ExperimentSuggestionEndReached",
                "Experiment has succeeded because suggestion service has reached the end",
            )
        budget = time_budget.time_budget(experiment)
        if (
            done is None
            and budget is not None
            and time_budget.out_of_time(experiment, exp_status)
            and (budget[1] == "kill" or counts["running"] == 0)
        ):
            won = counts["succeeded"] + counts["early_stopped"] > 0
            done = (
                ExperimentConditionType.SUCCEEDED if won else ExperimentConditionType.FAILED,
                time_budget.TIMEOUT_REASON,
                time_budget.timeout_message(experiment, won),
            )
        if done is None:
            if trials and not status.has_condition(exp_status.conditions, "Running"):
                status.mark_experiment(
                    exp_status,
                    ExperimentConditionType.RUNNING,
                    "ExperimentRunning",
                    "Experiment is running",
                )
            return False
        for trial in view.open_trials():
            self.executor.stop(trial)
            status.mark_trial(
                trial,
                TrialConditionType.KILLED,
                "TrialKilled",
                f"Trial was stopped because the experiment ended ({done[1]})",
            )
            view.changed(trial)
        view.aggregate(exp_status)
        status.mark_experiment(exp_status, done[0], done[1], done[2])
        return True

    def fail_experiment(self, name: str, namespace: str, message: str) -> None:
        """Record a failure that no pass can recover from (e.g. invalid algorithm settings)."""
        experiment = self.storage.get_experiment(name, namespace)
        exp_status = experiment.status or ExperimentStatus(conditions=[])
        if not exp_status.conditions:
            exp_status.conditions = [
                Condition(
                    type="Created", reason="ExperimentCreated", message="Experiment is created"
                )
            ]
        status.mark_experiment(
            exp_status, ExperimentConditionType.FAILED, "ExperimentFailed", message
        )
        self._views.pop((namespace, name), None)
        self.storage.update_experiment_status(name, namespace, exp_status)

"""The reconcile loop: from stored state to the next action, one pass at a time.

Each pass reads the experiment and its trials from storage, asks the executor
where each unfinished trial is, records outcomes, decides whether the experiment
is done (Katib's order: goal, failure budget, trial budget), and otherwise asks
the suggestion service for as many new trials as the parallel and total budgets
allow. New trials are stored (condition Created) before they are launched, and
launching is idempotent, so a pass may be cut off at any instant and simply run
again.

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

import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
from katib.storage.base import BaseStorage

log = logging.getLogger(__name__)

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' utilrand alphabet


def new_trial_name(experiment_name: str) -> str:
    return f"{experiment_name}-" + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(8))


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
    def _launch(self, experiment: Experiment, trial: Trial) -> None:
        try:
            self.executor.launch(trial, self._context(experiment))
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
        self.storage.update_trial_status(trial)

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
        experiment: Experiment,
        trial: Trial,
        outcome: TrialOutcome,
        early_stopped: bool = False,
        lost_reason: str = "TrialLost",
    ) -> None:
        if outcome.unreported:
            self.storage.report_observation_log(trial.name, outcome.unreported)
            crash_point("after_ingest")
            # A crash between these two lines stores the spool twice on restart; the
            # duplicates cannot change min, max or latest.
            self.executor.acknowledge(trial)
        names = list(observation.strategies_of(experiment))
        entries = self.storage.get_observation_log(trial.name)
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
        self.storage.update_trial_status(trial)

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
        self,
        experiment: Experiment,
        trials: Sequence[Trial],
        count: int,
        exp_status: ExperimentStatus,
    ) -> list[Trial]:
        """Ask for `count` suggestions and store them as trials.

        `trials` must be every stored trial of the experiment: with fencing on, its
        length is the count storage re-checks in the insert's transaction.
        """
        key = (experiment.namespace, experiment.name)
        algorithm = experiment.spec.algorithm
        client = self._client_for(algorithm.algorithm_name or "" if algorithm else "")
        settings = [(s.name, s.value) for s in exp_status.algorithm_settings or []]
        # Before GetSuggestions (Katib asks after): a failure here then costs no suggestions.
        rules = self._early_stopping_rules(experiment, trials)
        try:
            reply = client.get_suggestions(experiment, trials, count, len(trials) + count, settings)
        except errors.SearchSpaceExhaustedError as exc:
            self._exhausted.add(key)
            log.info("%s/%s: %s", *key, exc)
            return []
        if reply.settings:
            merged = dict(settings)
            merged.update(reply.settings)
            exp_status.algorithm_settings = [
                AlgorithmSetting(name=k, value=v) for k, v in merged.items()
            ]
        if len(reply.assignments) < count:
            # All the algorithm has for this history (hyperband waiting for a rung, a
            # finite space nearly used up). Only a finished trial can change its answer;
            # with nothing running, nothing will, so the search is over.
            if reply.assignments or any(not t.is_completed for t in trials):
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
            self.storage.create_trials(
                experiment.name,
                experiment.namespace,
                new,
                owner=self.owner,
                expected_count=len(trials) if self.owner is not None else None,
            )
            crash_point("after_create_trials")
        return new

    # --- the pass --------------------------------------------------------------------
    def reconcile(self, name: str, namespace: str = "default") -> PassResult:
        experiment = self.storage.get_experiment(name, namespace)
        history = self.storage.list_trials(name, namespace)
        # Warm-start trials are the algorithm's history only (katib.controller.time_budget).
        trials = [t for t in history if not time_budget.is_warm_start(t)]
        result = PassResult(experiment=experiment, trials=trials)
        if status.is_experiment_completed(experiment):
            return result
        stored_status = experiment.status.to_dict() if experiment.status else None
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

        for trial in trials:
            if trial.is_completed:
                self._stop_requested(trial.name, consume=True)
                continue
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
                self.storage.update_trial_status(trial)
                result.finished.append(trial.name)
            elif outcome.phase == TrialPhase.NOT_STARTED:
                if not out_of_time:
                    self._launch(experiment, trial)
            elif outcome.phase == TrialPhase.RUNNING and self._heartbeat_lost(trial, outcome):
                result.finished.append(trial.name)
                self._finish(
                    experiment,
                    trial,
                    TrialOutcome(TrialPhase.LOST, message=outcome.message),
                    lost_reason="TrialHeartbeatLost",
                )
            elif outcome.phase == TrialPhase.RUNNING:
                if trial.condition == TrialConditionType.CREATED:
                    status.mark_trial(
                        trial, TrialConditionType.RUNNING, "TrialRunning", "Trial is running"
                    )
                    self.storage.update_trial_status(trial)
            else:
                self._heartbeats.forget(trial.name)
                if outcome.phase == TrialPhase.LOST:
                    self.executor.kill(trial)  # what outlived its collector
                self._finish(
                    experiment,
                    trial,
                    outcome,
                    early_stopped=self._stop_requested(trial.name, consume=True),
                )
                result.finished.append(trial.name)

        if not self._decide(experiment, exp_status, trials):
            counts = status.aggregate(exp_status, trials)
            spec = experiment.spec
            parallel = spec.parallel_trial_count or 3
            limit = self.executor.max_parallel(experiment)
            if limit is not None:
                parallel = min(parallel, limit)
            active = counts["pending"] + counts["running"]
            add = parallel - active
            if spec.max_trial_count is not None:
                add = min(add, spec.max_trial_count - len(trials))
            key = (namespace, name)
            if result.finished or active == 0:
                self._waiting.discard(key)
            if (
                add > 0
                and key not in self._exhausted
                and key not in self._waiting
                and not out_of_time
            ):
                new = self._create_trials(experiment, history, add, exp_status)
                for trial in new:
                    self._launch(experiment, trial)
                trials.extend(new)
                result.created = [t.name for t in new]
            self._decide(experiment, exp_status, trials)

        exp_status.current_optimal_trial = observation.optimal_trial(experiment, trials)
        status.aggregate(exp_status, trials)
        if experiment.status is None or exp_status.to_dict() != stored_status:
            self.storage.update_experiment_status(name, namespace, exp_status, owner=self.owner)
        experiment.status = exp_status
        return result

    def _decide(
        self, experiment: Experiment, exp_status: ExperimentStatus, trials: list[Trial]
    ) -> bool:
        """Set the experiment's condition; True when it has reached an end."""
        counts = status.aggregate(exp_status, trials)
        spec = experiment.spec
        done: tuple[ExperimentConditionType, str, str] | None = None
        if trials:
            best = observation.optimal_trial(experiment, trials)
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
        for trial in trials:
            if not trial.is_completed:
                self.executor.stop(trial)
                status.mark_trial(
                    trial,
                    TrialConditionType.KILLED,
                    "TrialKilled",
                    f"Trial was stopped because the experiment ended ({done[1]})",
                )
                self.storage.update_trial_status(trial)
        status.aggregate(exp_status, trials)
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
        self.storage.update_experiment_status(name, namespace, exp_status)

"""What launch, poll and stop do with a trial's Kubernetes resource (no `kubernetes` import).

`TrialLifecycle` is the Kubernetes executor's side of the executor contract
(katib.executors.base): it decides which resource to create, when a trial has ended,
what to record before deleting, how to stop a retained trial, and when a trial is LOST.
The API calls it needs are the abstract methods below, which
katib.executors.kubernetes.KubernetesExecutor makes with the official client, so this
module stays free of the client (only that module imports it).
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Mapping
from typing import Any

from katib.api.models import Experiment, Trial
from katib.controller import templating
from katib.errors import ExecutorError, InvalidArgumentError, UnavailableError
from katib.executors.base import BaseExecutor, LaunchContext, TrialOutcome, TrialPhase
from katib.executors.kubernetes_outcome import (
    classify,
    outcome_from_pods,
    outcome_to_dict,
    stopped_mark,
    trial_conditions,
    verdict,
)
from katib.executors.kubernetes_resources import (
    EXPERIMENT_LABEL,
    TRIAL_LABEL,
    KubernetesApiError,
    KubernetesUnavailableError,
    ResourceKind,
    stop_patch,
)
from katib.executors.kubernetes_watch import ResourceWatcher, WatchStream

log = logging.getLogger(__name__)


class TrialLifecycle(BaseExecutor):
    """The executor contract over a few API calls (the abstract methods).

    Every piece of state is on the cluster: the resource, its pods, the outcome record
    ``<trial>-outcome`` and the "stopped" mark of a retained resource. In memory there
    are only the watch caches and which trials this instance launched (for LOST).
    """

    db_manager_address: str | None
    collector: str
    collector_image: str
    token_secret: str | None
    image_pull_policy: str | None
    watch_enabled: bool
    watch_backoff: float

    def __init__(self, *, watch: bool) -> None:
        self.watch_enabled = watch
        self.watch_backoff = 0.2
        self._watchers: dict[tuple[ResourceKind, str], ResourceWatcher] = {}
        self._launched: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    # --- the API calls (KubernetesExecutor makes them with the official client) -------
    @abc.abstractmethod
    def resolve(self, api_version: str, kind: str) -> ResourceKind:
        """The kind as the cluster serves it; ExecutorError when it does not."""

    @abc.abstractmethod
    def read_template_configmap(self, name: str, namespace: str) -> dict[str, str]:
        """A trial template ConfigMap's data; InvalidSpecError when it is absent."""

    @abc.abstractmethod
    def _list(
        self, kind: ResourceKind, namespace: str, selector: str
    ) -> tuple[list[dict[str, Any]], str]:
        """(objects matching the label selector, the list's resourceVersion)."""

    @abc.abstractmethod
    def _get(self, kind: ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""

    @abc.abstractmethod
    def _create(self, kind: ResourceKind, namespace: str, body: dict[str, Any]) -> bool:
        """False when an object of that name already exists."""

    @abc.abstractmethod
    def _patch(self, kind: ResourceKind, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A merge patch."""

    @abc.abstractmethod
    def _delete(self, kind: ResourceKind, namespace: str, name: str) -> None:
        """Delete (a missing object is fine)."""

    @abc.abstractmethod
    def _watch_stream(self, kind: ResourceKind, namespace: str, version: str) -> WatchStream:
        """A watch of the trial resources of `kind` in `namespace` from `version` on."""

    @abc.abstractmethod
    def _primary_pods(self, trial: Trial) -> list[dict[str, Any]]:
        """The trial's pods that run its primary container."""

    @abc.abstractmethod
    def _pod_log(self, trial: Trial, pod: str, tail_lines: int | None = None) -> str:
        """The primary container's log of one pod (its last lines if asked)."""

    @abc.abstractmethod
    def _delete_pods(self, trial: Trial) -> None:
        """Delete the trial's pods (stopping a retained trial)."""

    @abc.abstractmethod
    def _record(self, trial: Trial, outcome: TrialOutcome) -> None:
        """Keep the outcome in the trial's outcome record (idempotent)."""

    @abc.abstractmethod
    def _recorded(self, namespace: str, name: str) -> TrialOutcome | None:
        """The outcome kept in the trial's outcome record, or None."""

    @abc.abstractmethod
    def _delete_records(self, namespace: str, selector: str) -> None:
        """Delete the outcome records matching the label selector."""

    @abc.abstractmethod
    def _delete_record(self, trial: Trial) -> None:
        """Delete the trial's outcome record (a missing one is fine)."""

    def _experiment_kind(self, experiment: Experiment) -> ResourceKind:
        """The kind of the experiment's trial resources, from its template (a ConfigMap or
        Go template is rendered with sample values to see its kind)."""
        template = experiment.spec.trial_template
        spec = (template.trial_spec if template is not None else None) or {}
        if not spec and template is not None and (template.config_map or template.go_template):
            samples = templating.sample_assignments(experiment)
            spec = templating.render_run_spec(
                experiment,
                f"{experiment.name}-sample",
                samples,
                fetch_configmap=self.read_template_configmap,
            )
        return self.resolve(
            str(spec.get("apiVersion") or "batch/v1"), str(spec.get("kind") or "Job")
        )

    # --- what a trial is -----------------------------------------------------------
    def _kind_of(self, trial: Trial) -> ResourceKind:
        run_spec = trial.spec.run_spec or {}
        api_version, kind = run_spec.get("apiVersion"), run_spec.get("kind")
        if not api_version or not kind:
            raise ExecutorError(
                f"trial {trial.name} has no rendered run spec with apiVersion and kind"
            )
        return self.resolve(str(api_version), str(kind))

    def _kind_or_none(self, trial: Trial) -> ResourceKind | None:
        """The trial's kind, or None when it cannot be known (no run spec, a kind the
        cluster does not serve); refusals and outages of the API still raise."""
        try:
            return self._kind_of(trial)
        except (KubernetesApiError, UnavailableError):
            raise
        except ExecutorError as exc:
            log.info("%s: %s", trial.name, exc)
            return None

    # --- launch --------------------------------------------------------------------
    def launch(self, trial: Trial, context: LaunchContext) -> None:
        from katib.executors.kubernetes_manifest import build_trial_manifest

        experiment = context.experiment
        if trial.namespace != experiment.namespace:
            raise ExecutorError(
                f"trial {trial.name} is in namespace {trial.namespace!r}, not in its experiment's "
                f"namespace {experiment.namespace!r}; trials run only in the experiment's namespace"
            )
        kind = self._kind_of(trial)
        trial_conditions(trial, kind)  # an unusable kind fails before anything is created
        namespace, name = trial.namespace, trial.name
        if self._recorded(namespace, name) is not None:
            return  # finished and cleaned up: never run again
        try:
            manifest = build_trial_manifest(
                experiment,
                trial,
                db_manager_address=self.db_manager_address or context.db_manager_address,
                collector=self.collector,
                collector_image=self.collector_image,
                token_secret=self.token_secret,
                early_stopping_address=context.early_stopping_address,
                image_pull_policy=self.image_pull_policy,
            )
        except InvalidArgumentError as exc:  # the trial fails with the reason, not the run
            raise ExecutorError(f"trial {name}: cannot build its {kind.kind}: {exc}") from None
        meta = manifest.setdefault("metadata", {})
        if meta.get("namespace", namespace) != namespace or meta.get("name", name) != name:
            raise ExecutorError(
                f"trial {name}: the rendered {kind.kind} is "
                f"{meta.get('namespace')}/{meta.get('name')}, not {namespace}/{name}"
            )
        meta.update(name=name, namespace=namespace)
        if not self._create(kind, namespace, manifest):
            existing = self._get(kind, namespace, name)
            owner = ((existing or {}).get("metadata", {}).get("labels") or {}).get(TRIAL_LABEL)
            if existing is None:
                raise KubernetesUnavailableError(
                    f"{kind.kind} {namespace}/{name}: the API answered 409 AlreadyExists but "
                    "the object cannot be read; launching again will tell"
                )
            if owner != name:
                raise ExecutorError(
                    f"{kind.kind} {namespace}/{name} already exists and does not belong to trial "
                    f"{name} (label {TRIAL_LABEL}={owner!r}); delete it or rename the experiment"
                )
        with self._lock:
            self._launched.add((namespace, name))
        self._watcher(kind, namespace)

    # --- poll ----------------------------------------------------------------------
    def _watcher(self, kind: ResourceKind, namespace: str) -> ResourceWatcher | None:
        if not self.watch_enabled:
            return None
        with self._lock:
            watcher = self._watchers.get((kind, namespace))
            if watcher is None:
                watcher = ResourceWatcher(
                    f"{kind.plural} in {namespace}",
                    lambda: self._list(kind, namespace, TRIAL_LABEL),
                    lambda version: self._watch_stream(kind, namespace, version),
                    self.watch_backoff,
                )
                self._watchers[(kind, namespace)] = watcher
                watcher.start()
            return watcher

    def _forget(self, kind: ResourceKind, namespace: str, name: str) -> None:
        """We just changed the object: read it afresh until the watch catches up."""
        with self._lock:
            watcher = self._watchers.get((kind, namespace))
        if watcher is not None:
            watcher.forget(name)

    def _read(self, kind: ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        watcher = self._watcher(kind, namespace)
        if watcher is not None and watcher.synced.is_set():
            cached = watcher.get(name)
            if cached is not None:
                return cached
        return self._get(kind, namespace, name)

    def poll(self, trial: Trial) -> TrialOutcome:
        kind = self._kind_or_none(trial)
        namespace, name = trial.namespace, trial.name
        if kind is None:  # launch will say why it cannot create it
            if self._was_launched(trial):
                return TrialOutcome(
                    TrialPhase.LOST,
                    message=f"trial {name}: the cluster no longer serves its resource kind",
                )
            return TrialOutcome(TrialPhase.NOT_STARTED)
        obj = self._read(kind, namespace, name)
        if obj is not None and not (obj.get("metadata") or {}).get("deletionTimestamp"):
            stopped = stopped_mark(obj)
            if stopped is not None:
                return stopped
            decided = verdict(trial, kind, obj)
            if decided is None:
                return TrialOutcome(TrialPhase.RUNNING)
            outcome = self._outcome(trial, obj, decided)
            if not trial.spec.retain_run:
                self._record(trial, outcome)
                self._delete(kind, namespace, name)
                self._forget(kind, namespace, name)
            return outcome
        recorded = self._recorded(namespace, name)
        if recorded is not None:
            return recorded
        what = f"{kind.kind} {namespace}/{name}"
        if obj is not None:
            return TrialOutcome(
                TrialPhase.LOST,
                message=f"{what} is being deleted by someone else before it finished",
            )
        if self._was_launched(trial):
            return TrialOutcome(
                TrialPhase.LOST,
                message=f"{what} vanished before it finished (deleted outside katib?)",
            )
        return TrialOutcome(TrialPhase.NOT_STARTED)

    def _was_launched(self, trial: Trial) -> bool:
        with self._lock:
            if (trial.namespace, trial.name) in self._launched:
                return True
        status = trial.status
        conditions = status.conditions if status is not None else []
        return any(str(c.type) == "Running" for c in conditions or [])

    def _outcome(self, trial: Trial, obj: Mapping[str, Any], decided: str) -> TrialOutcome:
        """The ended trial's outcome from its resource and its primary pod."""

        def log_tail(pod: str) -> str:
            return self._pod_log(trial, pod, tail_lines=5)

        return outcome_from_pods(trial, obj, decided, self._primary_pods(trial), log_tail)

    # --- stop ----------------------------------------------------------------------
    def stop(self, trial: Trial) -> None:
        """Record a stopped outcome, then delete the resource (retain: stop its pods)."""
        kind = self._kind_or_none(trial)
        if kind is None:
            return  # nothing of that kind can exist
        namespace, name = trial.namespace, trial.name
        obj = self._get(kind, namespace, name)
        if obj is None or stopped_mark(obj) is not None:
            return
        decided = verdict(trial, kind, obj)
        if decided is not None:
            outcome = self._outcome(trial, obj, decided)
        else:
            outcome = TrialOutcome(
                TrialPhase.FINISHED,
                signal=15,
                message=f"{kind.kind} {namespace}/{name} was stopped",
            )
        if trial.spec.retain_run:
            if decided is not None:
                return  # it ended on its own: nothing to stop, and retained as it is
            patch, stops_pods = stop_patch(kind, outcome_to_dict(outcome))
            self._patch(kind, namespace, name, patch)
            self._forget(kind, namespace, name)
            if not stops_pods:
                self._delete_pods(trial)
            return
        self._record(trial, outcome)
        self._delete(kind, namespace, name)
        self._forget(kind, namespace, name)

    # --- beyond the contract -----------------------------------------------------------
    def find_trials(self, experiment: Experiment) -> dict[str, str]:
        """Trial resources of `experiment` on the cluster: name -> Running/Succeeded/Failed.

        From labels alone, so a restarted controller (or an operator) sees what runs.
        """
        kind = self._experiment_kind(experiment)
        items, _ = self._list(kind, experiment.namespace, f"{EXPERIMENT_LABEL}={experiment.name}")
        return {
            (item.get("metadata") or {}).get("name", ""): classify(experiment, kind, item)
            for item in items
        }

    def remove_experiment(self, experiment: Experiment) -> int:
        """Delete every trial resource and outcome record of `experiment` (found by its
        label); returns how many resources were deleted. For deleting an experiment."""
        kind = self._experiment_kind(experiment)
        selector = f"{EXPERIMENT_LABEL}={experiment.name}"
        items, _ = self._list(kind, experiment.namespace, selector)
        for item in items:
            self._delete(kind, experiment.namespace, str(item["metadata"]["name"]))
        self._delete_records(experiment.namespace, selector)
        return len(items)

    def read_log(self, trial: Trial, tail_lines: int | None = None) -> str:
        """The primary container's log from the primary pod ("" when there is no pod)."""
        pods = self._primary_pods(trial)
        if not pods:
            return ""
        return self._pod_log(trial, pods[0]["metadata"]["name"], tail_lines)

    def remove(self, trial: Trial) -> None:
        """Delete the trial's resource (even a retained one) and its outcome record."""
        self._delete(self._kind_of(trial), trial.namespace, trial.name)
        self._delete_record(trial)

    def watch_relists(self) -> int:
        """How many times the watches listed (1 each, plus one per 410 Gone or error)."""
        with self._lock:
            return sum(w.relists for w in self._watchers.values())

    def _stop_watchers(self) -> None:
        with self._lock:
            watchers = list(self._watchers.values())
            self._watchers.clear()
        for watcher in watchers:
            watcher.stop()
        for watcher in watchers:
            watcher.thread.join(timeout=2.0)

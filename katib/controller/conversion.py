"""Spec models to api.v1.beta1 messages, filled the way Katib's controller fills them (ref 1.4)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from operator import attrgetter

from katib.api.models import (
    ComparisonType,
    EarlyStoppingRule,
    EarlyStoppingSpec,
    Experiment,
    ObjectiveSpec,
    Trial,
    TrialConditionType,
)
from katib.apis.v1beta1 import api_pb2
from katib.controller.observation import metric_value, strategies_of

_PARAMETER_TYPES = {
    "double": api_pb2.DOUBLE,
    "int": api_pb2.INT,
    "discrete": api_pb2.DISCRETE,
    "categorical": api_pb2.CATEGORICAL,
}
_DISTRIBUTIONS = {
    "uniform": api_pb2.UNIFORM,
    "logUniform": api_pb2.LOG_UNIFORM,
    "normal": api_pb2.NORMAL,
    "logNormal": api_pb2.LOG_NORMAL,
}
_OBJECTIVE_TYPES = {"minimize": api_pb2.MINIMIZE, "maximize": api_pb2.MAXIMIZE}
_CONDITIONS = {
    TrialConditionType.CREATED: api_pb2.TrialStatus.CREATED,
    TrialConditionType.RUNNING: api_pb2.TrialStatus.RUNNING,
    TrialConditionType.SUCCEEDED: api_pb2.TrialStatus.SUCCEEDED,
    TrialConditionType.KILLED: api_pb2.TrialStatus.KILLED,
    TrialConditionType.FAILED: api_pb2.TrialStatus.FAILED,
    TrialConditionType.METRICS_UNAVAILABLE: api_pb2.TrialStatus.METRICSUNAVAILABLE,
    TrialConditionType.EARLY_STOPPED: api_pb2.TrialStatus.EARLYSTOPPED,
}
_COMPARISONS = {
    api_pb2.EQUAL: ComparisonType.EQUAL,
    api_pb2.LESS: ComparisonType.LESS,
    api_pb2.GREATER: ComparisonType.GREATER,
}


def objective_to_pb(objective: ObjectiveSpec | None) -> api_pb2.ObjectiveSpec:
    if objective is None:
        return api_pb2.ObjectiveSpec()
    message = api_pb2.ObjectiveSpec(
        type=_OBJECTIVE_TYPES.get(str(objective.type or ""), api_pb2.UNKNOWN),
        objective_metric_name=objective.objective_metric_name or "",
        additional_metric_names=list(objective.additional_metric_names or []),
    )
    if objective.goal is not None:
        message.goal = objective.goal
    return message


def experiment_to_pb(
    experiment: Experiment, extra_settings: Sequence[tuple[str, str]] = ()
) -> api_pb2.Experiment:
    """`extra_settings` are settings a service returned earlier; they override the spec's."""
    spec = experiment.spec
    settings = (
        {s.name: s.value for s in (spec.algorithm.algorithm_settings or [])}
        if spec.algorithm
        else {}
    )
    settings.update(dict(extra_settings))
    parameters = []
    for p in spec.parameters or []:
        fs = p.feasible_space
        parameters.append(
            api_pb2.ParameterSpec(
                name=p.name or "",
                parameter_type=_PARAMETER_TYPES.get(
                    str(p.parameter_type or ""), api_pb2.UNKNOWN_TYPE
                ),
                feasible_space=api_pb2.FeasibleSpace(
                    max=(fs.max or "") if fs else "",
                    min=(fs.min or "") if fs else "",
                    list=list(fs.list_ or []) if fs else [],
                    step=(fs.step or "") if fs else "",
                    distribution=_DISTRIBUTIONS.get(
                        str(fs.distribution or "") if fs else "", api_pb2.DISTRIBUTION_UNSPECIFIED
                    ),
                ),
            )
        )
    message = api_pb2.Experiment(
        name=experiment.name,
        spec=api_pb2.ExperimentSpec(
            parameter_specs=api_pb2.ExperimentSpec.ParameterSpecs(parameters=parameters),
            objective=objective_to_pb(spec.objective),
            algorithm=api_pb2.AlgorithmSpec(
                algorithm_name=(spec.algorithm.algorithm_name or "") if spec.algorithm else "",
                algorithm_settings=[
                    api_pb2.AlgorithmSetting(name=k, value=v) for k, v in settings.items()
                ],
            ),
            parallel_trial_count=spec.parallel_trial_count or 0,
            max_trial_count=spec.max_trial_count or 0,
        ),
    )
    if spec.early_stopping is not None:
        message.spec.early_stopping.CopyFrom(early_stopping_to_pb(spec.early_stopping))
    return message


def early_stopping_to_pb(spec: EarlyStoppingSpec) -> api_pb2.EarlyStoppingSpec:
    return api_pb2.EarlyStoppingSpec(
        algorithm_name=spec.algorithm_name or "",
        algorithm_settings=[
            api_pb2.EarlyStoppingSetting(name=s.name, value=s.value)
            for s in spec.algorithm_settings or []
        ],
    )


def rule_from_pb(rule: api_pb2.EarlyStoppingRule) -> EarlyStoppingRule:
    """A reply's rule as the Trial CRD stores it (a comparison outside 1-3 becomes equal)."""
    return EarlyStoppingRule(
        name=rule.name,
        value=rule.value,
        comparison=_COMPARISONS.get(rule.comparison, ComparisonType.EQUAL),
        start_step=rule.start_step,
    )


def trial_to_pb(experiment: Experiment, trial: Trial) -> api_pb2.Trial:
    """One value per metric, chosen by that metric's strategy (Katib sends exactly this)."""
    strategies = strategies_of(experiment)
    metrics = []
    for name, strategy in strategies.items():
        value = metric_value(trial.status.observation, name, strategy)
        if value is not None:
            metrics.append(api_pb2.Metric(name=name, value=value))
    return api_pb2.Trial(
        name=trial.name,
        spec=api_pb2.TrialSpec(
            objective=objective_to_pb(experiment.spec.objective),
            parameter_assignments=api_pb2.TrialSpec.ParameterAssignments(
                assignments=[
                    api_pb2.ParameterAssignment(name=a.name, value=a.value)
                    for a in trial.spec.parameter_assignments
                ]
            ),
        ),
        status=api_pb2.TrialStatus(
            start_time=trial.status.start_time or "",
            completion_time=trial.status.completion_time or "",
            condition=_CONDITIONS[trial.condition],
            observation=api_pb2.Observation(metrics=metrics),
        ),
    )


def trials_for_request(experiment: Experiment, trials: Sequence[Trial]) -> list[api_pb2.Trial]:
    """Every trial, whatever its condition.

    Katib leaves out MetricsUnavailable trials (and early-stopped ones without an
    observation); we send them, so that an algorithm does not suggest a point that
    was already tried (grid would repeat it). Their condition tells the algorithm
    they carry no value.
    """
    return [trial_to_pb(experiment, trial) for trial in trials]


_ASSIGNMENT_FIELDS = attrgetter("name", "value")
_METRIC_FIELDS = attrgetter("name", "min", "max", "latest")


def trial_fingerprint(trial: Trial) -> Hashable:
    """Everything `trial_to_pb` reads from the trial itself (the experiment's part aside).

    The whole observation is included (not only the values sent), and the raw type
    of the last condition (what `Trial.condition` is read from), so two trials with
    one fingerprint always serialize to the same bytes. Field reads go through
    attrgetter: this runs for every trial of every request.
    """
    status = trial.status
    conditions = status.conditions
    observation = status.observation
    return (
        trial.metadata.name,
        tuple(map(_ASSIGNMENT_FIELDS, trial.spec.parameter_assignments)),
        status.start_time,
        status.completion_time,
        conditions[-1].type if conditions else None,
        None if observation is None else tuple(map(_METRIC_FIELDS, observation.metrics)),
    )


def _experiment_fingerprint(experiment: Experiment) -> Hashable:
    """What `trial_to_pb` reads from the experiment: its objective (metrics, strategies)."""
    objective = experiment.spec.objective
    return (
        experiment.namespace,
        experiment.name,
        None if objective is None else objective.model_dump_json(),
    )


def varint(value: int) -> bytes:
    """Protobuf base-128 varint; a negative int32 is sign-extended to 64 bits, as protobuf does."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_TRIAL_TAG = b"\x12"  # GetSuggestionsRequest.trials = 2, length-delimited


def frame_trial(serialized: bytes) -> bytes:
    """One `trials` field of a GetSuggestionsRequest: tag, length, then the Trial message."""
    return _TRIAL_TAG + varint(len(serialized)) + serialized


def trial_record(experiment: Experiment, trial: Trial) -> bytes:
    """The trial as one framed `trials` field of a GetSuggestionsRequest."""
    return frame_trial(trial_to_pb(experiment, trial).SerializeToString())


class TrialBytesCache:
    """Framed Trial records (`frame_trial`) by trial fingerprint, per experiment.

    Building and serializing a Trial message costs tens of microseconds; a history
    mostly repeats from one GetSuggestions call to the next, so each call only
    serializes the trials that are new or changed. Each experiment keeps just the
    trials of its last request (a vanished trial is forgotten), and at most
    `max_experiments` experiments are kept, least recently used evicted first.
    """

    def __init__(self, max_experiments: int = 16) -> None:
        self._max = max_experiments
        self._entries: OrderedDict[Hashable, dict[Hashable, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def serialize(self, experiment: Experiment, trials: Sequence[Trial]) -> list[bytes]:
        """`trial_record(experiment, t)` per trial, in order.

        Records are kept framed so a request is a single join of cached bytes.
        """
        key = _experiment_fingerprint(experiment)
        with self._lock:
            known = self._entries.pop(key, {})
        fingerprints = list(map(trial_fingerprint, trials))
        found: list[bytes | None] = list(map(known.get, fingerprints))
        for i, raw in enumerate(found):
            if raw is None:
                found[i] = trial_record(experiment, trials[i])
        out: list[bytes] = found  # type: ignore[assignment]  # no None is left
        fresh = dict(zip(fingerprints, out, strict=True))
        with self._lock:
            self._entries[key] = fresh
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return out

    def __len__(self) -> int:
        return len(self._entries)

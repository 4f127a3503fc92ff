"""Katib's defaulting (the `/mutate-experiment` webhook's SetDefault), done in-process.

Validation runs on the defaulted Experiment, exactly as in Katib, so the two must agree:
e.g. Katib's rule 6 rejects `maxTrialCount: 2` without `parallelTrialCount` only because
parallelTrialCount defaults to 3 first.

Collector kind `None` (the pre-v0.18 name of `Push`) is kept as written, not rewritten:
the defaulted document round-trips as the user wrote it, and consumers treat both alike
(see `is_push_collector`).
"""

from __future__ import annotations

from typing import Any

from katib.api.models import (
    CollectorKind,
    CollectorSpec,
    Distribution,
    Experiment,
    FeasibleSpace,
    FileFormat,
    FileSystemKind,
    FileSystemPath,
    MetricsCollectorSpec,
    MetricStrategy,
    MetricStrategyType,
    ObjectiveSpec,
    ObjectiveType,
    ResumePolicy,
    SourceSpec,
    TrialTemplate,
)

DEFAULT_PARALLEL_TRIAL_COUNT = 3
DEFAULT_NAMESPACE = "default"
DEFAULT_FILE_PATH = "/var/log/katib/metrics.log"
DEFAULT_TF_EVENT_DIR = "/var/log/katib/tfevent/"
DEFAULT_PROMETHEUS_PATH = "/metrics"
DEFAULT_PROMETHEUS_PORT = 8080

JOB_SUCCESS_CONDITION = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
JOB_FAILURE_CONDITION = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
KUBEFLOW_SUCCESS_CONDITION = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
KUBEFLOW_JOB_KINDS = frozenset({"TFJob", "PyTorchJob", "XGBoostJob", "MPIJob"})
KUBEFLOW_PRIMARY_POD_LABELS = {"training.kubeflow.org/job-role": "master"}
TRAINJOB_PRIMARY_POD_LABELS = {
    "jobset.sigs.k8s.io/replicatedjob-name": "node",
    "batch.kubernetes.io/job-completion-index": "0",
}


def is_push_collector(kind: str | None) -> bool:
    """`Push` and its old name `None` both mean: no sidecar, the trial pushes metrics."""
    return kind in (CollectorKind.PUSH, CollectorKind.NONE)


def default_strategy(objective_type: str | None) -> MetricStrategyType:
    """Katib's rule for every metric without a strategy: min/max by objective type."""
    if objective_type == ObjectiveType.MINIMIZE:
        return MetricStrategyType.MIN
    if objective_type == ObjectiveType.MAXIMIZE:
        return MetricStrategyType.MAX
    return MetricStrategyType.LATEST


def _default_objective(obj: ObjectiveSpec) -> None:
    strategies = list(obj.metric_strategies or [])
    named = {s.name for s in strategies}
    value = default_strategy(obj.type)
    for metric in [obj.objective_metric_name or "", *(obj.additional_metric_names or [])]:
        if metric not in named:
            strategies.append(MetricStrategy(name=metric, value=value))
            named.add(metric)
    obj.metric_strategies = strategies


def _default_trial_template(tt: TrialTemplate) -> None:
    spec: Any = tt.trial_spec
    if not isinstance(spec, dict):
        return
    kind = spec.get("kind")
    if kind == "Job":
        success, labels = JOB_SUCCESS_CONDITION, None
    elif kind in KUBEFLOW_JOB_KINDS:
        success, labels = KUBEFLOW_SUCCESS_CONDITION, KUBEFLOW_PRIMARY_POD_LABELS
    elif kind == "TrainJob":
        success, labels = JOB_SUCCESS_CONDITION, TRAINJOB_PRIMARY_POD_LABELS
    else:
        return
    if not tt.success_condition:
        tt.success_condition = success
    if not tt.failure_condition:
        tt.failure_condition = JOB_FAILURE_CONDITION
    if labels is not None and tt.primary_pod_labels is None:
        tt.primary_pod_labels = dict(labels)


def _default_metrics_collector(exp: Experiment) -> None:
    spec = exp.spec
    if spec.metrics_collector_spec is None:
        spec.metrics_collector_spec = MetricsCollectorSpec()
    mc = spec.metrics_collector_spec
    if mc.collector is None:
        mc.collector = CollectorSpec()
    if not mc.collector.kind:
        mc.collector.kind = CollectorKind.STDOUT
    kind = mc.collector.kind
    if kind not in (
        CollectorKind.PROMETHEUS,
        CollectorKind.FILE,
        CollectorKind.TENSORFLOW_EVENT,
    ):
        return
    if mc.source is None:
        mc.source = SourceSpec()
    src = mc.source
    if kind == CollectorKind.PROMETHEUS:
        http_get = dict(src.http_get or {})
        if not http_get.get("path"):
            http_get["path"] = DEFAULT_PROMETHEUS_PATH
        if http_get.get("port") in (None, 0, "", "0"):
            http_get["port"] = DEFAULT_PROMETHEUS_PORT
        src.http_get = http_get
    elif kind == CollectorKind.FILE:
        if src.file_system_path is None:
            src.file_system_path = FileSystemPath(kind=FileSystemKind.FILE, path=DEFAULT_FILE_PATH)
        if not src.file_system_path.format:
            src.file_system_path.format = FileFormat.TEXT
    elif src.file_system_path is None:  # TensorFlowEvent
        src.file_system_path = FileSystemPath(
            kind=FileSystemKind.DIRECTORY, path=DEFAULT_TF_EVENT_DIR
        )


def apply_defaults(exp: Experiment) -> Experiment:
    """Return a defaulted deep copy of `exp` (Katib's SetDefault plus namespace `default`)."""
    out = exp.model_copy(deep=True)
    spec = out.spec
    if not out.metadata.namespace:
        out.metadata.namespace = DEFAULT_NAMESPACE
    if spec.parallel_trial_count is None:
        spec.parallel_trial_count = DEFAULT_PARALLEL_TRIAL_COUNT
    if not spec.resume_policy:
        spec.resume_policy = ResumePolicy.NEVER
    if spec.objective is not None:
        _default_objective(spec.objective)
    if spec.trial_template is not None:
        _default_trial_template(spec.trial_template)
    _default_metrics_collector(out)
    for param in spec.parameters or []:
        if param.feasible_space is None:
            param.feasible_space = FeasibleSpace()
        if not param.feasible_space.distribution:
            param.feasible_space.distribution = Distribution.UNIFORM
    return out

"""Katib's SetDefault, field by field (reference 2.5)."""

from __future__ import annotations

from typing import Any

import pytest

from katib.api import Experiment, apply_defaults, is_push_collector
from katib.api.defaults import JOB_FAILURE_CONDITION, JOB_SUCCESS_CONDITION


def _exp(**spec: Any) -> Experiment:
    return Experiment.model_validate({"metadata": {"name": "e"}, "spec": spec})


def _job(kind: str, api_version: str = "batch/v1") -> dict[str, Any]:
    return {"trialTemplate": {"trialSpec": {"apiVersion": api_version, "kind": kind}}}


def test_top_level_defaults() -> None:
    out = apply_defaults(_exp())
    assert out.spec.parallel_trial_count == 3
    assert out.spec.resume_policy == "Never"
    assert out.metadata.namespace == "default"
    mc = out.spec.metrics_collector_spec
    assert mc is not None and mc.collector is not None and mc.collector.kind == "StdOut"
    assert out.spec.max_trial_count is None


def test_set_values_are_kept() -> None:
    exp = _exp(parallelTrialCount=1, resumePolicy="LongRunning")
    exp.metadata.namespace = "team"
    out = apply_defaults(exp)
    assert (out.spec.parallel_trial_count, out.spec.resume_policy) == (1, "LongRunning")
    assert out.metadata.namespace == "team"


def test_returns_a_copy() -> None:
    exp = _exp(objective={"type": "minimize", "objectiveMetricName": "loss"})
    apply_defaults(exp)
    assert exp.spec.parallel_trial_count is None
    assert exp.spec.objective is not None and exp.spec.objective.metric_strategies is None


@pytest.mark.parametrize(
    ("objective_type", "strategy"), [("minimize", "min"), ("maximize", "max"), ("", "latest")]
)
def test_metric_strategies_follow_objective_type(objective_type: str, strategy: str) -> None:
    exp = _exp(
        objective={
            "type": objective_type,
            "objectiveMetricName": "loss",
            "additionalMetricNames": ["acc", "f1"],
            "metricStrategies": [{"name": "acc", "value": "latest"}],
        }
    )
    obj = apply_defaults(exp).spec.objective
    assert obj is not None
    assert [(s.name, s.value) for s in obj.metric_strategies or []] == [
        ("acc", "latest"),
        ("loss", strategy),
        ("f1", strategy),
    ]


def test_job_conditions() -> None:
    tt = apply_defaults(_exp(**_job("Job"))).spec.trial_template
    assert tt is not None
    assert tt.success_condition == JOB_SUCCESS_CONDITION
    assert tt.failure_condition == JOB_FAILURE_CONDITION
    assert tt.primary_pod_labels is None


@pytest.mark.parametrize("kind", ["TFJob", "PyTorchJob", "XGBoostJob", "MPIJob"])
def test_kubeflow_job_conditions_and_labels(kind: str) -> None:
    tt = apply_defaults(_exp(**_job(kind, "kubeflow.org/v1"))).spec.trial_template
    assert tt is not None
    assert tt.success_condition == 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
    assert tt.failure_condition == JOB_FAILURE_CONDITION
    assert tt.primary_pod_labels == {"training.kubeflow.org/job-role": "master"}


def test_trainjob_conditions_and_labels() -> None:
    tt = apply_defaults(
        _exp(**_job("TrainJob", "trainer.kubeflow.org/v1alpha1"))
    ).spec.trial_template
    assert tt is not None
    assert tt.success_condition == JOB_SUCCESS_CONDITION
    assert tt.failure_condition == JOB_FAILURE_CONDITION
    assert tt.primary_pod_labels == {
        "jobset.sigs.k8s.io/replicatedjob-name": "node",
        "batch.kubernetes.io/job-completion-index": "0",
    }


def test_user_conditions_and_labels_are_kept() -> None:
    spec = _job("PyTorchJob")
    spec["trialTemplate"].update(successCondition="s", failureCondition="f", primaryPodLabels={})
    tt = apply_defaults(_exp(**spec)).spec.trial_template
    assert tt is not None
    assert (tt.success_condition, tt.failure_condition, tt.primary_pod_labels) == ("s", "f", {})


def test_unknown_kind_and_config_map_get_no_conditions() -> None:
    for spec in (
        _job("Pod", "v1"),
        {"trialTemplate": {"configMap": {"configMapName": "t"}}},
    ):
        tt = apply_defaults(_exp(**spec)).spec.trial_template
        assert tt is not None and tt.success_condition is None and tt.failure_condition is None


def test_file_collector_defaults() -> None:
    mc = apply_defaults(_exp(metricsCollectorSpec={"collector": {"kind": "File"}}))
    src = mc.spec.metrics_collector_spec.source  # type: ignore[union-attr]
    assert src is not None and src.file_system_path is not None
    fsp = src.file_system_path
    assert (fsp.kind, fsp.path, fsp.format) == ("File", "/var/log/katib/metrics.log", "TEXT")


def test_file_collector_keeps_user_path_and_defaults_format() -> None:
    exp = _exp(
        metricsCollectorSpec={
            "collector": {"kind": "File"},
            "source": {"fileSystemPath": {"kind": "File", "path": "/out/m.log"}},
        }
    )
    src = apply_defaults(exp).spec.metrics_collector_spec.source  # type: ignore[union-attr]
    assert src is not None and src.file_system_path is not None
    assert (src.file_system_path.path, src.file_system_path.format) == ("/out/m.log", "TEXT")


def test_tensorflow_event_defaults() -> None:
    out = apply_defaults(_exp(metricsCollectorSpec={"collector": {"kind": "TensorFlowEvent"}}))
    src = out.spec.metrics_collector_spec.source  # type: ignore[union-attr]
    assert src is not None and src.file_system_path is not None
    fsp = src.file_system_path
    assert (fsp.kind, fsp.path, fsp.format) == ("Directory", "/var/log/katib/tfevent/", None)


def test_prometheus_defaults() -> None:
    out = apply_defaults(_exp(metricsCollectorSpec={"collector": {"kind": "PrometheusMetric"}}))
    src = out.spec.metrics_collector_spec.source  # type: ignore[union-attr]
    assert src is not None and src.http_get == {"path": "/metrics", "port": 8080}


def test_none_collector_is_kept_and_means_push() -> None:
    out = apply_defaults(_exp(metricsCollectorSpec={"collector": {"kind": "None"}}))
    collector = out.spec.metrics_collector_spec.collector  # type: ignore[union-attr]
    assert collector is not None and collector.kind == "None"
    assert is_push_collector("None") and is_push_collector("Push")
    assert not is_push_collector("StdOut")


def test_distribution_uniform_for_every_parameter() -> None:
    exp = _exp(
        parameters=[
            {"name": "a", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}},
            {"name": "b", "parameterType": "categorical", "feasibleSpace": {"list": ["x"]}},
            {"name": "c", "parameterType": "discrete"},
            {
                "name": "d",
                "parameterType": "double",
                "feasibleSpace": {"min": "1", "max": "2", "distribution": "logUniform"},
            },
        ]
    )
    params = apply_defaults(exp).spec.parameters or []
    assert [p.feasible_space.distribution for p in params if p.feasible_space] == [
        "uniform",
        "uniform",
        "uniform",
        "logUniform",
    ]


def test_defaults_are_idempotent() -> None:
    exp = _exp(
        objective={"type": "maximize", "objectiveMetricName": "acc"},
        metricsCollectorSpec={"collector": {"kind": "File"}},
        **_job("Job"),
    )
    once = apply_defaults(exp)
    assert apply_defaults(once) == once

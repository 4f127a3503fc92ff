"""Every validation rule, one invalid Experiment each: exactly one problem, at the right path.

Each case is the valid random-job.yaml fixture with one edit, so a case that reports
more than one problem means a rule leaks noise into unrelated fields.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from katib.api import (
    Experiment,
    apply_defaults,
    load_experiment_dict,
    parse_experiment_dict,
    validate_experiment,
    validate_update,
)
from katib.api.validation import NAME_MESSAGE
from katib.errors import InvalidSpecError

FIXTURES = Path(__file__).parent / "invalid_experiments"
BASE: dict[str, Any] = yaml.safe_load((FIXTURES / "random-job.yaml").read_text())
CMD = "spec.trialTemplate.trialSpec.spec.template.spec.containers[0].command"
MC = "spec.metricsCollectorSpec"
P0 = "spec.parameters[0]"
TP = "spec.trialTemplate.trialParameters"

_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parts(path: str) -> list[str | int]:
    return [int(i) if i else k for k, i in _TOKEN.findall(path)]


def _walk(doc: Any, path: str) -> tuple[Any, str | int]:
    *head, last = _parts(path)
    for part in head:
        doc = doc[part]
    return doc, last


def edited(*ops: tuple[Any, ...]) -> dict[str, Any]:
    """The base document after ("set", path, value) / ("del", path) / ("add", path, item)."""
    doc = copy.deepcopy(BASE)
    for op, path, *value in ops:
        parent, key = _walk(doc, path)
        if op == "set":
            parent[key] = value[0]
        elif op == "del":
            del parent[key]
        else:
            parent[key].append(value[0])
    return doc


def set_(path: str, value: Any) -> tuple[Any, ...]:
    return ("set", path, value)


def del_(path: str) -> tuple[Any, ...]:
    return ("del", path)


def add(path: str, item: Any) -> tuple[Any, ...]:
    return ("add", path, item)


def collector(kind: str, **source: Any) -> tuple[Any, ...]:
    spec: dict[str, Any] = {"collector": {"kind": kind}}
    if source:
        spec["source"] = source
    return set_(MC, spec)


CASES: list[tuple[str, list[tuple[Any, ...]], str, str]] = [
    # --- Katib's rules (reference 2.6), message text as Katib's ---------------------------------
    ("r1-name-uppercase", [set_("metadata.name", "Random")], "metadata.name", NAME_MESSAGE),
    ("r1-name-too-long", [set_("metadata.name", "a" * 41)], "metadata.name", "longer than 40"),
    ("r1-name-empty", [del_("metadata.name")], "metadata.name", "name must consist"),
    (
        "r2-max-failed-negative",
        [set_("spec.maxFailedTrialCount", -1)],
        "spec.maxFailedTrialCount",
        "should not be less than 0",
    ),
    (
        "r3-max-trials-zero",
        [set_("spec.maxTrialCount", 0)],
        "spec.maxTrialCount",
        "must be greater than 0",
    ),
    (
        "r4-parallel-zero",
        [set_("spec.parallelTrialCount", 0)],
        "spec.parallelTrialCount",
        "must be greater than 0",
    ),
    (
        "r5-max-failed-above-max",
        [set_("spec.maxFailedTrialCount", 20)],
        "spec.maxFailedTrialCount",
        "should be less than or equal to spec.maxTrialCount",
    ),
    (
        "r6-default-parallel-above-max",
        [
            set_("spec.maxTrialCount", 2),
            set_("spec.maxFailedTrialCount", 1),
            del_("spec.parallelTrialCount"),
        ],
        "spec.parallelTrialCount",
        "should be less than or equal to spec.maxTrialCount",
    ),
    ("r10-no-objective", [del_("spec.objective")], "spec.objective", "must be specified"),
    (
        "r11-objective-type",
        [set_("spec.objective.type", "max")],
        "spec.objective.type",
        "must be minimize or maximize",
    ),
    (
        "r12-no-metric-name",
        [del_("spec.objective.objectiveMetricName")],
        "spec.objective.objectiveMetricName",
        "must be specified",
    ),
    (
        "r13-additional-has-objective",
        [add("spec.objective.additionalMetricNames", "Validation-accuracy")],
        "spec.objective.additionalMetricNames",
        "should not contain spec.objective.objectiveMetricName",
    ),
    ("r14-no-algorithm", [del_("spec.algorithm")], "spec.algorithm", "must be specified"),
    (
        "r14-empty-algorithm-name",
        [set_("spec.algorithm.algorithmName", "")],
        "spec.algorithm.algorithmName",
        "must be specified",
    ),
    (
        "r15-unknown-algorithm",
        [set_("spec.algorithm.algorithmName", "annealing")],
        "spec.algorithm.algorithmName",
        "unable to get Suggestion config data for algorithm annealing",
    ),
    (
        "r16-empty-early-stopping",
        [set_("spec.earlyStopping", {"algorithmName": ""})],
        "spec.earlyStopping.algorithmName",
        "must be specified",
    ),
    (
        "r16-unknown-early-stopping",
        [set_("spec.earlyStopping", {"algorithmName": "asha"})],
        "spec.earlyStopping.algorithmName",
        "unable to get EarlyStopping config data",
    ),
    (
        "r17-resume-policy",
        [set_("spec.resumePolicy", "Sometimes")],
        "spec.resumePolicy",
        "invalid ResumePolicyType",
    ),
    (
        "r18-no-trial-template",
        [del_("spec.trialTemplate")],
        "spec.trialTemplate",
        "must be specified",
    ),
    (
        "r19-no-primary-container",
        [del_("spec.trialTemplate.primaryContainerName")],
        "spec.trialTemplate.primaryContainerName",
        "must be specified",
    ),
    (
        "r20-no-conditions-for-custom-kind",
        [
            set_("spec.trialTemplate.trialSpec.kind", "CustomJob"),
            set_("spec.trialTemplate.trialSpec.apiVersion", "example.com/v1"),
        ],
        "spec.trialTemplate",
        "successCondition and failureCondition must be specified",
    ),
    ("r21-no-trial-parameters", [del_(TP)], TP, "must be specified"),
    (
        "r22-no-trial-source",
        [del_("spec.trialTemplate.trialSpec")],
        "spec.trialTemplate.TrialSource",
        "spec.trialTemplate.trialSpec or spec.trialTemplate.configMap must be specified",
    ),
    (
        "r23-both-sources",
        [
            set_(
                "spec.trialTemplate.configMap",
                {"configMapName": "t", "configMapNamespace": "kubeflow", "templatePath": "x.yaml"},
            )
        ],
        "spec.trialTemplate",
        "only one of spec.trialTemplate.trialSpec",
    ),
    (
        "r24-config-map-incomplete",
        [
            del_("spec.trialTemplate.trialSpec"),
            set_("spec.trialTemplate.configMap", {"configMapName": "t", "configMapNamespace": "k"}),
            set_("spec.trialTemplate.successCondition", "status.done"),
            set_("spec.trialTemplate.failureCondition", "status.failed"),
        ],
        "spec.trialTemplate.configMap",
        "configMapName, configMapNamespace and templatePath must be specified",
    ),
    (
        "r26-brace-in-name",
        [add(TP, {"name": "pod}", "reference": "${trialSpec.Name}"})],
        f"{TP}[3]",
        "name must not contain '{' or '}'",
    ),
    (
        "r27-duplicate-name",
        [add(TP, {"name": "optimizer", "reference": "${trialSpec.Name}"})],
        f"{TP}[3].name",
        "parameter name optimizer can't be duplicated",
    ),
    (
        "r28-duplicate-reference",
        [add(TP, {"name": "lr2", "reference": "lr"}), add(CMD, "--lr2=${trialParameters.lr2}")],
        f"{TP}[3].reference",
        "parameter reference lr can't be duplicated",
    ),
    (
        "r29-unknown-reference",
        [add(TP, {"name": "m", "reference": "momentum"}), add(CMD, "--m=${trialParameters.m}")],
        f"{TP}[3].reference",
        "parameter reference momentum does not exist in spec.parameters",
    ),
    (
        "r30-placeholder-missing",
        [add(TP, {"name": "pod", "reference": "${trialSpec.Name}"})],
        f"{TP}[3].name",
        "parameter name: pod in spec.trialParameters not found in",
    ),
    (
        "r31-undeclared-placeholder",
        [add(CMD, "--m=${trialParameters.momentum}")],
        "spec.trialTemplate",
        "parameters: [${trialParameters.momentum}] in spec.trialTemplate",
    ),
    (
        "r33-template-metadata-name",
        [set_("spec.trialTemplate.trialSpec.metadata", {"name": "fixed"})],
        "spec.trialTemplate",
        "metadata.name and metadata.namespace in spec.trialTemplate",
    ),
    (
        "r34-template-no-api-version",
        [del_("spec.trialTemplate.trialSpec.apiVersion")],
        "spec.trialTemplate",
        "APIVersion and Kind in spec.trialTemplate must be specified",
    ),
    (
        "r35-primary-container-not-in-job",
        [set_("spec.trialTemplate.primaryContainerName", "trainer")],
        "spec.trialTemplate.primaryContainerName",
        "container trainer not found in spec.trialTemplate.trialSpec",
    ),
    (
        "r36-no-search-space",
        [del_("spec.parameters")],
        "spec",
        "spec.parameters or spec.nasConfig must be specified",
    ),
    (
        "r37-parameters-and-nas",
        [set_("spec.nasConfig", {"graphConfig": {"numLayers": 2}})],
        "spec",
        "only one of spec.parameters and spec.nasConfig can be specified",
    ),
    (
        "r38-parameter-type",
        [set_(f"{P0}.parameterType", "float")],
        f"{P0}.parameterType",
        "parameterType: float is not supported",
    ),
    (
        "r39-distribution",
        [set_(f"{P0}.feasibleSpace.distribution", "gaussian")],
        f"{P0}.feasibleSpace.distribution",
        "distribution: gaussian is not supported",
    ),
    (
        "r41-list-on-double",
        [set_(f"{P0}.feasibleSpace.list", ["0.1"])],
        f"{P0}.feasibleSpace.list",
        "feasibleSpace.list is not supported for parameterType: double",
    ),
    (
        "r42-no-max",
        [del_(f"{P0}.feasibleSpace.max")],
        f"{P0}.feasibleSpace.max",
        "feasibleSpace.max or feasibleSpace.min must be specified for parameterType: double",
    ),
    (
        "r43-min-on-categorical",
        [set_("spec.parameters[2].feasibleSpace.min", "1")],
        "spec.parameters[2].feasibleSpace",
        "feasibleSpace .max, .min and .step is not supported for parameterType: categorical",
    ),
    (
        "r45-file-relative-path",
        [collector("File", fileSystemPath={"path": "m.log", "kind": "File"})],
        f"{MC}.source.fileSystemPath.path",
        "file path where metrics file exists is required",
    ),
    (
        "r46-file-format",
        [collector("File", fileSystemPath={"path": "/m.log", "kind": "File", "format": "XML"})],
        f"{MC}.source.fileSystemPath.format",
        "format of metrics file is required",
    ),
    (
        "r47-json-with-filter",
        [
            collector(
                "File",
                fileSystemPath={"path": "/m.json", "kind": "File", "format": "JSON"},
                filter={"metricsFormat": ["([a-z]+)=([0-9.]+)"]},
            )
        ],
        f"{MC}.source.filter",
        "filter must be nil when format of metrics file is json",
    ),
    (
        "r48-tfevent-not-directory",
        [collector("TensorFlowEvent", fileSystemPath={"path": "/logs", "kind": "File"})],
        f"{MC}.source",
        "directory path where tensorflow event files exist is required",
    ),
    (
        "r49-tfevent-format",
        [
            collector(
                "TensorFlowEvent",
                fileSystemPath={"path": "/logs", "kind": "Directory", "format": "TEXT"},
            )
        ],
        f"{MC}.source.fileSystemPath.format",
        "must be empty",
    ),
    (
        "r50-prometheus-port",
        [collector("PrometheusMetric", httpGet={"port": -1})],
        f"{MC}.source.httpGet.port",
        "must be a positive integer value",
    ),
    (
        "r51-prometheus-path",
        [collector("PrometheusMetric", httpGet={"path": "metrics"})],
        f"{MC}.source.httpGet.path",
        "path is invalid for metrics collector kind: PrometheusMetric",
    ),
    (
        "r52-custom-without-container",
        [collector("Custom")],
        f"{MC}.collector.customCollector",
        "metrics collector kind: Custom is required",
    ),
    (
        "r53-custom-relative-path",
        [
            set_(
                MC,
                {
                    "collector": {"kind": "Custom", "customCollector": {"name": "c"}},
                    "source": {"fileSystemPath": {"path": "rel", "kind": "File"}},
                },
            )
        ],
        f"{MC}.source.fileSystemPath",
        ".spec.metricsCollectorSpec.source is invalid",
    ),
    (
        "r54-collector-kind",
        [collector("Stdout")],
        f"{MC}.collector.kind",
        "invalid metrics collector kind: Stdout",
    ),
    (
        "r55-filter-does-not-compile",
        [collector("StdOut", filter={"metricsFormat": ["(a)(["]})],
        f"{MC}.source.filter.metricsFormat",
        "invalid filter:",
    ),
    (
        "r56-filter-one-group",
        [collector("StdOut", filter={"metricsFormat": [r"loss=(\S+)"]})],
        f"{MC}.source.filter.metricsFormat",
        "two top subexpressions are required",
    ),
    # --- checks Katib misses --------------------------------------------------------------------
    (
        "min-not-a-number",
        [set_(f"{P0}.feasibleSpace.min", "abc")],
        f"{P0}.feasibleSpace.min",
        "min: abc must be a finite number",
    ),
    (
        "int-min-not-integer",
        [set_("spec.parameters[1].feasibleSpace.min", "1.5")],
        "spec.parameters[1].feasibleSpace.min",
        "must be an integer",
    ),
    (
        "min-not-below-max",
        [set_(f"{P0}.feasibleSpace.min", "0.03")],
        f"{P0}.feasibleSpace",
        "min must be less than max",
    ),
    (
        "step-zero",
        [set_(f"{P0}.feasibleSpace.step", "0")],
        f"{P0}.feasibleSpace.step",
        "must be greater than 0",
    ),
    (
        "int-step-fraction",
        [set_("spec.parameters[1].feasibleSpace.step", "0.5")],
        "spec.parameters[1].feasibleSpace.step",
        "must be an integer",
    ),
    (
        "categorical-empty-list",
        [set_("spec.parameters[2].feasibleSpace.list", [])],
        "spec.parameters[2].feasibleSpace.list",
        "must not be empty",
    ),
    (
        "discrete-not-number",
        [
            set_("spec.parameters[2].parameterType", "discrete"),
            set_("spec.parameters[2].feasibleSpace.list", ["1", "x"]),
        ],
        "spec.parameters[2].feasibleSpace.list[1]",
        "discrete value x is not a number",
    ),
    (
        "duplicate-parameter",
        [
            add(
                "spec.parameters",
                {
                    "name": "lr",
                    "parameterType": "double",
                    "feasibleSpace": {"min": "1", "max": "2"},
                },
            )
        ],
        "spec.parameters[3].name",
        "parameter name lr is duplicated in spec.parameters",
    ),
    (
        "duplicate-additional-metric",
        [add("spec.objective.additionalMetricNames", "Train-accuracy")],
        "spec.objective.additionalMetricNames[1]",
        "metric name Train-accuracy is duplicated",
    ),
    (
        "unreferenced-parameter",
        [
            add(
                "spec.parameters",
                {
                    "name": "momentum",
                    "parameterType": "double",
                    "feasibleSpace": {"min": "0.1", "max": "0.9"},
                },
            )
        ],
        "spec.parameters[3].name",
        "parameter momentum is not referenced by any spec.trialTemplate.trialParameters[*]"
        ".reference; Katib would create no trials",
    ),
    (
        "log-uniform-min-zero",
        [
            set_(f"{P0}.feasibleSpace.min", "0"),
            set_(f"{P0}.feasibleSpace.distribution", "logUniform"),
        ],
        f"{P0}.feasibleSpace.min",
        "must be greater than 0 for distribution: logUniform",
    ),
    (
        "strategy-unknown-metric",
        [set_("spec.objective.metricStrategies", [{"name": "loss", "value": "min"}])],
        "spec.objective.metricStrategies[0].name",
        "metric loss is neither",
    ),
    (
        "strategy-bad-value",
        [set_("spec.objective.metricStrategies", [{"name": "Train-accuracy", "value": "avg"}])],
        "spec.objective.metricStrategies[0].value",
        "strategy: avg is not supported",
    ),
    (
        "goal-infinite",
        [set_("spec.objective.goal", float("inf"))],
        "spec.objective.goal",
        "must be a finite number",
    ),
    (
        "illegal-meta-reference",
        [
            add(TP, {"name": "pod", "reference": "${trialSpec.Uid}"}),
            add(CMD, "${trialParameters.pod}"),
        ],
        f"{TP}[3].reference",
        "illegal reference of trial metadata: ${trialSpec.Uid}",
    ),
    # --- structure (what Go's decoder rejects) ---------------------------------------------
    (
        "max-trials-string",
        [set_("spec.maxTrialCount", "12")],
        "spec.maxTrialCount",
        "must be an integer",
    ),
    (
        "parallel-float",
        [set_("spec.parallelTrialCount", 2.5)],
        "spec.parallelTrialCount",
        "must be an integer",
    ),
    (
        "unknown-field-typo",
        [set_("spec.maxTrialCounts", 5)],
        "spec.maxTrialCounts",
        "unknown field; did you mean maxTrialCount?",
    ),
    (
        "snake-case-field",
        [set_("spec.trialTemplate.primary_container_name", "x")],
        "spec.trialTemplate.primary_container_name",
        "unknown field",
    ),
    (
        "min-is-bool",
        [set_(f"{P0}.feasibleSpace.min", True)],
        f"{P0}.feasibleSpace.min",
        "must be a string",
    ),
    (
        "parameters-not-a-list",
        [set_("spec.parameters", {"name": "lr"})],
        "spec.parameters",
        "must be a list",
    ),
    (
        "retain-string",
        [set_("spec.trialTemplate.retain", "yes")],
        "spec.trialTemplate.retain",
        "must be a boolean",
    ),
    (
        "strategy-without-name",
        [set_("spec.objective.metricStrategies", [{"value": "max"}])],
        "spec.objective.metricStrategies[0].name",
        "must be specified",
    ),
    ("kind-trial", [set_("kind", "Trial")], "kind", "must be Experiment"),
    (
        "api-version-v1alpha3",
        [set_("apiVersion", "kubeflow.org/v1alpha3")],
        "apiVersion",
        "must be kubeflow.org/v1beta1",
    ),
]


def test_base_fixture_is_valid() -> None:
    exp, problems = parse_experiment_dict(BASE)
    assert problems == []
    assert exp is not None


def test_enough_distinct_cases() -> None:
    assert len({c[0] for c in CASES}) == len(CASES) >= 35


@pytest.mark.parametrize(
    ("ops", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_invalid_experiment_has_one_clear_problem(
    ops: list[tuple[Any, ...]], path: str, message: str
) -> None:
    _, problems = parse_experiment_dict(edited(*ops))
    assert len(problems) == 1, "\n".join(map(str, problems))
    assert problems[0].path == path
    assert message in problems[0].message


def test_load_experiment_dict_raises_with_every_problem() -> None:
    doc = edited(
        set_("spec.maxTrialCount", 0),
        set_("spec.algorithm.algorithmName", ""),
        set_(f"{P0}.feasibleSpace.min", "abc"),
    )
    with pytest.raises(InvalidSpecError) as info:
        load_experiment_dict(doc, source="exp.yaml")
    paths = [p.path for p in info.value.problems]
    assert paths == [
        "spec.maxTrialCount",
        "spec.algorithm.algorithmName",
        f"{P0}.feasibleSpace.min",
    ]
    assert str(info.value).startswith("exp.yaml: 3 problem(s)")


def test_unknown_fields_do_not_hide_rule_problems() -> None:
    _, problems = parse_experiment_dict(edited(set_("spec.foo", 1), set_("spec.maxTrialCount", 0)))
    assert [p.path for p in problems] == ["spec.foo", "spec.maxTrialCount"]


def test_type_errors_are_all_reported_together() -> None:
    _, problems = parse_experiment_dict(
        edited(
            set_("spec.maxTrialCount", "x"),
            set_(f"{P0}.feasibleSpace.max", [1]),
            set_("spec.objective.type", {"a": 1}),
        )
    )
    assert {p.path for p in problems} == {
        "spec.maxTrialCount",
        f"{P0}.feasibleSpace.max",
        "spec.objective.type",
    }


def test_algorithm_names_can_be_extended() -> None:
    doc = edited(set_("spec.algorithm.algorithmName", "annealing"))
    _, problems = parse_experiment_dict(doc, algorithm_names={"annealing"})
    assert problems == []


def test_generate_name_without_name_is_accepted() -> None:
    doc = edited(del_("metadata.name"), set_("metadata.generateName", "random-"))
    assert parse_experiment_dict(doc)[1] == []


def test_meta_references_are_not_parameters() -> None:
    doc = edited(
        add(TP, {"name": "trialName", "reference": "${trialSpec.Name}"}),
        add(TP, {"name": "team", "reference": "${trialSpec.Labels[team]}"}),
        add(CMD, "--name=${trialParameters.trialName}"),
        add(CMD, "--team=${trialParameters.team}"),
    )
    assert parse_experiment_dict(doc)[1] == []


def test_push_and_none_collectors_are_accepted() -> None:
    for kind in ("Push", "None"):
        assert parse_experiment_dict(edited(collector(kind)))[1] == []


def test_nas_config_without_parameters_is_accepted() -> None:
    doc = edited(
        del_("spec.parameters"),
        set_("spec.algorithm.algorithmName", "enas"),
        set_("spec.nasConfig", {"graphConfig": {"numLayers": 8}}),
    )
    doc["spec"]["trialTemplate"]["trialParameters"] = [
        {"name": "learningRate", "reference": "architecture"},
        {"name": "numberLayers", "reference": "nn_config"},
        {"name": "optimizer", "reference": "${trialSpec.Name}"},
    ]
    assert parse_experiment_dict(doc)[1] == []


def test_config_map_template_is_checked_when_loadable() -> None:
    doc = edited(
        del_("spec.trialTemplate.trialSpec"),
        set_(
            "spec.trialTemplate.configMap",
            {"configMapName": "t", "configMapNamespace": "kubeflow", "templatePath": "job.yaml"},
        ),
        set_("spec.trialTemplate.successCondition", "status.done"),
        set_("spec.trialTemplate.failureCondition", "status.failed"),
    )
    assert parse_experiment_dict(doc)[1] == []  # no cluster: taken on trust
    text = yaml.safe_dump(BASE["spec"]["trialTemplate"]["trialSpec"])
    assert parse_experiment_dict(doc, config_map_loader=lambda ns, n, k: text)[1] == []
    _, problems = parse_experiment_dict(doc, config_map_loader=lambda ns, n, k: None)
    assert [p.path for p in problems] == ["spec.trialTemplate"]
    assert "unable to find trial template in ConfigMap" in problems[0].message
    bad = text.replace("${trialParameters.optimizer}", "${trialParameters.opt}")
    _, problems = parse_experiment_dict(doc, config_map_loader=lambda ns, n, k: bad)
    assert [p.path for p in problems] == [f"{TP}[2].name", "spec.trialTemplate"]


def test_validate_experiment_on_model_directly() -> None:
    exp = apply_defaults(Experiment.model_validate(BASE))
    assert validate_experiment(exp) == []
    exp.spec.max_trial_count = -1
    assert [p.path for p in validate_experiment(exp)] == ["spec.maxTrialCount"]


# --- UPDATE rules 7-9 -----------------------------------------------------------------------------


def _exp(*ops: tuple[Any, ...], status: dict[str, Any] | None = None) -> Experiment:
    doc = edited(*ops)
    if status is not None:
        doc["status"] = status
    return Experiment.model_validate(doc)


MAX_REACHED = {
    "trials": 12,
    "conditions": [{"type": "Succeeded", "status": "True", "reason": "ExperimentMaxTrialsReached"}],
}


def test_update_unchanged_spec_is_fine() -> None:
    assert validate_update(_exp(), _exp(), trials_count=5) == []


def test_update_editable_counts() -> None:
    new = _exp(set_("spec.parallelTrialCount", 4), set_("spec.maxTrialCount", 20))
    assert validate_update(_exp(), new, trials_count=5) == []


def test_update_max_trials_must_exceed_trials() -> None:
    problems = validate_update(_exp(), _exp(set_("spec.maxTrialCount", 6)), trials_count=6)
    assert [(p.path, p.message) for p in problems] == [
        ("spec.maxTrialCount", "must be greater than status.trials count")
    ]


def test_update_other_fields_forbidden() -> None:
    problems = validate_update(_exp(), _exp(set_("spec.algorithm.algorithmName", "tpe")), 0)
    assert [p.path for p in problems] == ["spec"]
    assert "are editable" in problems[0].message


def test_update_completed_needs_restartable() -> None:
    old = _exp(status=MAX_REACHED)
    new = _exp(set_("spec.maxTrialCount", 20), status=MAX_REACHED)
    problems = validate_update(old, new)
    assert [p.path for p in problems] == ["spec.resumePolicy"]
    old = _exp(set_("spec.resumePolicy", "LongRunning"), status=MAX_REACHED)
    new = _exp(set_("spec.resumePolicy", "LongRunning"), set_("spec.maxTrialCount", 20))
    assert validate_update(old, new) == []
    assert validate_update(old, new, trials_count=12, completed_restartable=False)[0].path == (
        "spec.resumePolicy"
    )

"""The GJSON condition evaluator on every default and example expression Katib uses,
against realistic status objects of each trial kind (true and false)."""

from __future__ import annotations

from typing import Any

import pytest

from katib.api.defaults import (
    JOB_FAILURE_CONDITION,
    JOB_SUCCESS_CONDITION,
    KUBEFLOW_SUCCESS_CONDITION,
)
from katib.api.loading import parse_experiment_dict
from katib.controller import conditions
from katib.controller.conditions import (
    ARGO_FAILURE_CONDITION,
    ARGO_SUCCESS_CONDITION,
    TEKTON_FAILURE_CONDITION,
    TEKTON_SUCCESS_CONDITION,
    default_conditions,
    evaluate,
    get,
    job_status,
    match,
)
from katib.errors import InvalidArgumentError

T = "2026-01-02T03:04:05Z"


def cond(type_: str, status: str = "True", reason: str = "", message: str = "") -> dict[str, str]:
    out = {"type": type_, "status": status, "lastTransitionTime": T, "lastProbeTime": T}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def obj(kind: str, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "x/v1",
        "kind": kind,
        "metadata": {"name": "t"},
        "spec": {},
        "status": status,
    }


# --- batch/v1 Job ---------------------------------------------------------------------------------
JOB_RUNNING = obj("Job", {"active": 1, "ready": 1, "startTime": T, "terminating": 0})
JOB_COMPLETE = obj(
    "Job",
    {
        "conditions": [
            cond("SuccessCriteriaMet", reason="CompletionsReached"),
            cond(
                "Complete",
                reason="CompletionsReached",
                message="Reached expected number of succeeded pods",
            ),
        ],
        "succeeded": 1,
        "startTime": T,
        "completionTime": T,
    },
)
JOB_FAILED = obj(
    "Job",
    {
        "conditions": [
            cond("FailureTarget", reason="BackoffLimitExceeded"),
            cond(
                "Failed",
                reason="BackoffLimitExceeded",
                message="Job has reached the specified backoff limit",
            ),
        ],
        "failed": 1,
    },
)
JOB_SUSPENDED = obj("Job", {"conditions": [cond("Suspended", reason="JobSuspended")]})
JOB_COMPLETE_FALSE = obj("Job", {"conditions": [cond("Complete", status="False")]})

# --- Kubeflow training operator jobs (TFJob, PyTorchJob, XGBoostJob, MPIJob) ---


def kubeflow(
    kind: str, *conds: dict[str, str], replicas: dict[str, Any] | None = None
) -> dict[str, Any]:
    return obj(kind, {"conditions": list(conds), "replicaStatuses": replicas or {}, "startTime": T})


CREATED = cond("Created", reason="JobCreated")
RUNNING = cond("Running", reason="JobRunning")
RUNNING_FALSE = cond("Running", status="False", reason="JobRunning")

# --- TrainJob, Argo, Tekton ---
TRAINJOB_COMPLETE = obj(
    "TrainJob",
    {
        "conditions": [cond("Complete", reason="JobsCompleted", message="jobset completed")],
        "jobsStatus": [],
    },
)
TRAINJOB_FAILED = obj(
    "TrainJob", {"conditions": [cond("Failed", reason="FailedJobs", message="jobset failed")]}
)
TRAINJOB_RUNNING = obj("TrainJob", {"jobsStatus": [{"name": "node", "active": 2}]})
ARGO = {
    p: obj("Workflow", {"phase": p, "startedAt": T, "progress": "1/2"})
    for p in ("Pending", "Running", "Succeeded", "Failed", "Error")
}
TEKTON_OK = obj(
    "PipelineRun",
    {
        "conditions": [
            cond(
                "Succeeded",
                reason="Succeeded",
                message="Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0",
            )
        ]
    },
)
TEKTON_FAILED = obj(
    "PipelineRun",
    {
        "conditions": [
            cond(
                "Succeeded",
                status="False",
                reason="Failed",
                message="Tasks Completed: 1 (Failed: 1)",
            )
        ]
    },
)
TEKTON_RUNNING = obj(
    "PipelineRun", {"conditions": [cond("Succeeded", status="Unknown", reason="Running")]}
)

CASES: list[tuple[str, str, dict[str, Any], bool]] = [
    ("job success on Complete", JOB_SUCCESS_CONDITION, JOB_COMPLETE, True),
    ("job success not on Failed", JOB_SUCCESS_CONDITION, JOB_FAILED, False),
    ("job success not while running", JOB_SUCCESS_CONDITION, JOB_RUNNING, False),
    ("job success not when suspended", JOB_SUCCESS_CONDITION, JOB_SUSPENDED, False),
    ("job success needs status True", JOB_SUCCESS_CONDITION, JOB_COMPLETE_FALSE, False),
    ("job failure on Failed", JOB_FAILURE_CONDITION, JOB_FAILED, True),
    ("job failure not on Complete", JOB_FAILURE_CONDITION, JOB_COMPLETE, False),
    ("job failure not while running", JOB_FAILURE_CONDITION, JOB_RUNNING, False),
    ("trainjob success", JOB_SUCCESS_CONDITION, TRAINJOB_COMPLETE, True),
    ("trainjob failure", JOB_FAILURE_CONDITION, TRAINJOB_FAILED, True),
    ("trainjob running: no success", JOB_SUCCESS_CONDITION, TRAINJOB_RUNNING, False),
    ("trainjob running: no failure", JOB_FAILURE_CONDITION, TRAINJOB_RUNNING, False),
    ("argo success", ARGO_SUCCESS_CONDITION, ARGO["Succeeded"], True),
    ("argo success not when failed", ARGO_SUCCESS_CONDITION, ARGO["Failed"], False),
    ("argo success not while running", ARGO_SUCCESS_CONDITION, ARGO["Running"], False),
    ("argo failure", ARGO_FAILURE_CONDITION, ARGO["Failed"], True),
    (
        "argo failure not on Error (not in the example)",
        ARGO_FAILURE_CONDITION,
        ARGO["Error"],
        False,
    ),
    ("argo failure not while pending", ARGO_FAILURE_CONDITION, ARGO["Pending"], False),
    ("tekton success", TEKTON_SUCCESS_CONDITION, TEKTON_OK, True),
    ("tekton success not when failed", TEKTON_SUCCESS_CONDITION, TEKTON_FAILED, False),
    ("tekton success not while running", TEKTON_SUCCESS_CONDITION, TEKTON_RUNNING, False),
    ("tekton failure", TEKTON_FAILURE_CONDITION, TEKTON_FAILED, True),
    ("tekton failure not when ok", TEKTON_FAILURE_CONDITION, TEKTON_OK, False),
    ("tekton failure not while running", TEKTON_FAILURE_CONDITION, TEKTON_RUNNING, False),
    ("no status at all", JOB_SUCCESS_CONDITION, {"kind": "Job"}, False),
]
for _kind in ("TFJob", "PyTorchJob", "XGBoostJob", "MPIJob"):
    CASES += [
        (
            f"{_kind} success",
            KUBEFLOW_SUCCESS_CONDITION,
            kubeflow(_kind, CREATED, RUNNING_FALSE, cond("Succeeded", reason=f"{_kind}Succeeded")),
            True,
        ),
        (
            f"{_kind} success not while running",
            KUBEFLOW_SUCCESS_CONDITION,
            kubeflow(_kind, CREATED, RUNNING),
            False,
        ),
        (
            f"{_kind} success not when failed",
            KUBEFLOW_SUCCESS_CONDITION,
            kubeflow(_kind, CREATED, RUNNING_FALSE, cond("Failed", reason=f"{_kind}Failed")),
            False,
        ),
        (
            f"{_kind} failure",
            JOB_FAILURE_CONDITION,
            kubeflow(_kind, CREATED, RUNNING_FALSE, cond("Failed", reason=f"{_kind}Failed")),
            True,
        ),
        (
            f"{_kind} failure not when succeeded",
            JOB_FAILURE_CONDITION,
            kubeflow(_kind, CREATED, cond("Succeeded")),
            False,
        ),
        (
            f"{_kind} restarting is not failure",
            JOB_FAILURE_CONDITION,
            kubeflow(_kind, CREATED, cond("Restarting", reason="JobRestarting")),
            False,
        ),
    ]
CASES += [
    # the replica-count form: a one-element array once the count exists, even 0 (as GJSON)
    (
        "replica count present",
        "status.[replicaStatuses.Worker.succeeded]",
        kubeflow("TFJob", replicas={"Worker": {"succeeded": 2}}),
        True,
    ),
    (
        "replica count present but 0 still holds (Katib semantics)",
        "status.[replicaStatuses.Worker.succeeded]",
        kubeflow("TFJob", replicas={"Worker": {"succeeded": 0, "active": 2}}),
        True,
    ),
    (
        "replica count absent",
        "status.[replicaStatuses.Worker.succeeded]",
        kubeflow("TFJob", replicas={"Worker": {"active": 2}}),
        False,
    ),
    (
        "a scalar never holds (Katib wants an object or array)",
        "status.succeeded",
        JOB_COMPLETE,
        False,
    ),
    ("an object holds", "status.conditions.0", JOB_COMPLETE, True),
    (
        "first-match query holds (object)",
        'status.conditions.#(type=="Complete")',
        JOB_COMPLETE,
        True,
    ),
    ("first-match query without match", 'status.conditions.#(type=="Failed")', JOB_COMPLETE, False),
]


@pytest.mark.parametrize(
    ("expression", "resource", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_expression(expression: str, resource: dict[str, Any], expected: bool) -> None:
    assert evaluate(expression, resource) is expected


@pytest.mark.parametrize(
    ("kind", "success", "failure"),
    [
        ("Job", JOB_SUCCESS_CONDITION, JOB_FAILURE_CONDITION),
        ("TFJob", KUBEFLOW_SUCCESS_CONDITION, JOB_FAILURE_CONDITION),
        ("PyTorchJob", KUBEFLOW_SUCCESS_CONDITION, JOB_FAILURE_CONDITION),
        ("XGBoostJob", KUBEFLOW_SUCCESS_CONDITION, JOB_FAILURE_CONDITION),
        ("MPIJob", KUBEFLOW_SUCCESS_CONDITION, JOB_FAILURE_CONDITION),
        ("TrainJob", JOB_SUCCESS_CONDITION, JOB_FAILURE_CONDITION),
        ("Workflow", ARGO_SUCCESS_CONDITION, ARGO_FAILURE_CONDITION),
        ("PipelineRun", TEKTON_SUCCESS_CONDITION, TEKTON_FAILURE_CONDITION),
    ],
)
def test_default_conditions(kind: str, success: str, failure: str) -> None:
    assert default_conditions("any.group/v9", kind) == (success, failure)
    conditions.check(success)
    conditions.check(failure)


def test_katib_default_strings_are_exact() -> None:
    assert JOB_SUCCESS_CONDITION == 'status.conditions.#(type=="Complete")#|#(status=="True")#'
    assert JOB_FAILURE_CONDITION == 'status.conditions.#(type=="Failed")#|#(status=="True")#'
    assert (
        KUBEFLOW_SUCCESS_CONDITION == 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
    )


def test_unknown_kind_has_no_default() -> None:
    with pytest.raises(InvalidArgumentError, match=r"no default successCondition.*'Deployment'"):
        default_conditions("apps/v1", "Deployment")


def test_job_status_checks_failure_first_and_carries_reason() -> None:
    both = obj(
        "Job",
        {
            "conditions": [
                cond("Complete"),
                cond("Failed", reason="DeadlineExceeded", message="late"),
            ]
        },
    )
    assert job_status(both, JOB_SUCCESS_CONDITION, JOB_FAILURE_CONDITION) == conditions.JobStatus(
        "Failed", "DeadlineExceeded", "late"
    )
    ok = job_status(JOB_COMPLETE, JOB_SUCCESS_CONDITION, JOB_FAILURE_CONDITION)
    assert (ok.phase, ok.reason) == ("Succeeded", "CompletionsReached")
    assert job_status(JOB_RUNNING, JOB_SUCCESS_CONDITION, JOB_FAILURE_CONDITION).phase == "Running"
    argo = job_status(ARGO["Succeeded"], ARGO_SUCCESS_CONDITION, ARGO_FAILURE_CONDITION)
    assert argo == conditions.JobStatus("Succeeded")


def test_match_gives_first_element() -> None:
    found = match(JOB_FAILURE_CONDITION, JOB_FAILED)
    assert found is not None
    assert found.reason == "BackoffLimitExceeded"
    assert found.message == "Job has reached the specified backoff limit"
    assert match(JOB_FAILURE_CONDITION, JOB_COMPLETE) is None


FRIENDS = {
    "name": {"first": "Tom", "last": "Anderson"},
    "age": 37,
    "children": ["Sara", "Alex", "Jack"],
    "fav.movie": "Deer Hunter",
    "friends": [
        {"first": "Dale", "last": "Murphy", "age": 44, "nets": ["ig", "fb", "tw"]},
        {"first": "Roger", "last": "Craig", "age": 68, "nets": ["fb", "tw"]},
        {"first": "Jane", "last": "Murphy", "age": 47, "nets": ["ig", "tw"]},
    ],
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("name.last", "Anderson"),
        ("age", 37),
        ("children", ["Sara", "Alex", "Jack"]),
        ("children.#", 3),
        ("children.1", "Alex"),
        ("child*.2", "Jack"),
        ("c?ildren.0", "Sara"),
        ("fav\\.movie", "Deer Hunter"),
        ("friends.#.first", ["Dale", "Roger", "Jane"]),
        ("friends.1.last", "Craig"),
        ('friends.#(last=="Murphy").first', "Dale"),
        ('friends.#(last=="Murphy")#.first', ["Dale", "Jane"]),
        ("friends.#(age>45)#.last", ["Craig", "Murphy"]),
        ("friends.#(age>=47)#.first", ["Roger", "Jane"]),
        ("friends.#(age<45).first", "Dale"),
        ('friends.#(first%"D*").last', "Murphy"),
        ('friends.#(first!%"D*").last', "Craig"),
        ('friends.#(first!="Dale")#.age', [68, 47]),
        ('friends.#(nets.#(=="fb"))#.first', ["Dale", "Roger"]),
        ("friends.#(nets)#.first", ["Dale", "Roger", "Jane"]),
        ('friends.#(last=="Murphy")#|#', 2),
        ("friends.#.first|@reverse", ["Jane", "Roger", "Dale"]),
        ("children|@reverse|0", "Jack"),
        ("[name.first,age,nothing]", ["Tom", 37]),
        (
            '{name.first,age,"murphys":friends.#(last=="Murphy")#.first}',
            {"first": "Tom", "age": 37, "murphys": ["Dale", "Jane"]},
        ),
        ("name.@keys", ["first", "last"]),
        ("name.@values", ["Tom", "Anderson"]),
        ("[children,children]|@flatten", ["Sara", "Alex", "Jack", "Sara", "Alex", "Jack"]),
        ("missing.path", None),
        ("children.9", None),
        ('friends.#(last=="Nobody").first', None),
    ],
)
def test_gjson_paths(path: str, expected: Any) -> None:
    assert get(path, FRIENDS) == expected


@pytest.mark.parametrize(
    ("expression", "column", "fragment"),
    [
        ("", None, "the expression is empty"),
        ('status.phase=="Succeeded"', 13, 'e.g. status.[@this].#(phase=="Succeeded")#'),
        ('status.conditions.#(type=="Complete"', 19, "expected ')' to close '#('"),
        ("status..phase", 8, "empty path component"),
        ("status.", 8, "nothing after '.'"),
        ('status.#(type=="x)', 16, "unterminated string"),
        ("status.[phase", 8, "unclosed '['"),
        ("status.@nope", 8, "unknown modifier @nope"),
        ("status.#(type==)", 16, "a value is needed after '=='"),
        ('status.#(type~"x")', 15, "unexpected '\"' in the key 'type~'"),
        ("a)b", 2, "expected '.' or '|' before ')'"),
    ],
)
def test_bad_expressions_name_the_column(
    expression: str, column: int | None, fragment: str
) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        conditions.check(expression)
    text = str(err.value)
    assert fragment in text
    if column is not None:
        assert f"at column {column}:" in text
        assert repr(expression) in text


def _experiment(success: str, failure: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": "cond"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": 1,
            "maxTrialCount": 1,
            "parameters": [
                {"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}}
            ],
            "trialTemplate": {
                "primaryContainerName": "main",
                "successCondition": success,
                "failureCondition": failure,
                "trialParameters": [{"name": "x", "reference": "x"}],
                "trialSpec": {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Workflow",
                    "spec": {
                        "templates": [
                            {
                                "name": "t",
                                "container": {"image": "i", "args": ["${trialParameters.x}"]},
                            }
                        ]
                    },
                },
            },
        },
    }


def test_experiment_validation_reports_bad_conditions() -> None:
    _, problems = parse_experiment_dict(
        _experiment('status.phase=="Succeeded"', ARGO_FAILURE_CONDITION)
    )
    assert [p.path for p in problems] == ["spec.trialTemplate.successCondition"]
    assert "column 13" in problems[0].message
    exp, problems = parse_experiment_dict(
        _experiment(ARGO_SUCCESS_CONDITION, ARGO_FAILURE_CONDITION)
    )
    assert problems == [] and exp is not None

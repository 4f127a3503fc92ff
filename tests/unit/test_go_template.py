"""The Go text/template subset: v1alpha3 trial templates, the language's pieces, errors."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from katib.api.loading import parse_experiment
from katib.controller.go_template import GoTemplateError, render, trial_data
from katib.controller.templating import render_run_spec

DATA = trial_data(
    "random-example", "random-example-abc", "kubeflow", [("--lr", "0.0123"), ("--num-layers", "3")]
)

# the v1alpha3 random example's rawTemplate (reference 3.2), as users wrote it
V1ALPHA3_RAW = """apiVersion: batch/v1
kind: Job
metadata:
  name: {{.Trial}}
  namespace: {{.NameSpace}}
spec:
  template:
    spec:
      containers:
      - name: {{.Trial}}
        image: docker.io/kubeflowkatib/mxnet-mnist
        command:
        - "python3"
        - "/opt/mxnet-mnist/mnist.py"
        - "--batch-size=64"
        {{- with .HyperParameters}}
        {{- range .}}
        - "{{.Name}}={{.Value}}"
        {{- end}}
        {{- end}}
      restartPolicy: Never
"""


def test_v1alpha3_raw_template_renders_to_the_job() -> None:
    job = yaml.safe_load(render(V1ALPHA3_RAW, DATA))
    assert job["metadata"] == {"name": "random-example-abc", "namespace": "kubeflow"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "random-example-abc"
    assert container["command"] == [
        "python3",
        "/opt/mxnet-mnist/mnist.py",
        "--batch-size=64",
        "--lr=0.0123",
        "--num-layers=3",
    ]


def test_range_one_line_form_from_the_issue() -> None:
    text = "{{- range .HyperParameters}}{{.Name}}={{.Value}} {{- end}}"
    assert render(text, DATA) == "--lr=0.0123--num-layers=3"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain text", "plain text"),
        ("{{.Trial}}/{{.NameSpace}}/{{.Experiment}}", "random-example-abc/kubeflow/random-example"),
        ("a  {{- .Trial -}}  b", "arandom-example-abcb"),
        ("a\n\n  {{- /* gone */ -}}\n  b", "ab"),
        ("a{{/* comment */}}b", "ab"),
        ("{{ .Trial }}", "random-example-abc"),
        ("{{$.Trial}}", "random-example-abc"),
        ("{{with .NameSpace}}ns={{.}}{{end}}", "ns=kubeflow"),
        ("{{with .Missing}}x{{else}}none{{end}}", "none"),
        ("{{if .HyperParameters}}yes{{else}}no{{end}}", "yes"),
        ('{{if eq .NameSpace "x"}}1{{else if eq .NameSpace "kubeflow"}}2{{else}}3{{end}}', "2"),
        (
            "{{range $i, $p := .HyperParameters}}{{$i}}:{{$p.Name}} {{end}}",
            "0:--lr 1:--num-layers ",
        ),
        ("{{range $p := .HyperParameters}}{{$p.Value}},{{end}}", "0.0123,3,"),
        ("{{range .Empty}}x{{else}}empty{{end}}", "empty"),
        ("{{range .Map}}{{.}}{{end}}", "12"),
        ("{{$x := .Trial}}{{$x}}", "random-example-abc"),
        ("{{$x := 1}}{{range .HyperParameters}}{{$x = 2}}{{end}}{{$x}}", "2"),
        ("{{len .HyperParameters}}", "2"),
        ("{{(index .HyperParameters 1).Value}}", "3"),
        ('{{printf "%s-%d-%v" .Trial 7 true}}', "random-example-abc-7-true"),
        ('{{.Trial | printf "%q"}}', '"random-example-abc"'),
        ("{{print 1.5 2 nil}}", "1.52<no value>"),
        ('{{and 1 0}}|{{or 0 "" "x"}}|{{not 0}}', "0|x|true"),
        ("{{if and (gt 3 2) (le 2 2) (ne 1 2) (lt 1.5 2)}}ok{{end}}", "ok"),
        ("{{`raw {{ text`}}", "raw {{ text"),
        ('{{"quoted \\"q\\""}}', 'quoted "q"'),
    ],
)
def test_language(template: str, expected: str) -> None:
    data: dict[str, Any] = {**DATA, "Missing": None, "Empty": [], "Map": {"b": 2, "a": 1}}
    assert render(template, data) == expected


@pytest.mark.parametrize(
    ("template", "line", "column", "fragment"),
    [
        (
            "{{.Namespace}}",
            1,
            3,
            "can't evaluate field Namespace in .Namespace "
            "(fields: Experiment, HyperParameters, NameSpace, Trial)",
        ),
        ("a\n  {{range .HyperParameters}}x", 2, 3, "{{range}} has no {{end}}"),
        ("x\ny {{end}}", 2, 3, "unexpected {{end}} outside if/range/with"),
        ("{{.Trial", 1, 1, "unclosed action: missing }}"),
        ("{{foo .Trial}}", 1, 3, 'function "foo" not defined'),
        ("{{.Trial.Name}}", 1, 3, "can't evaluate field Name in type string"),
        ("{{/* open }}", 1, 1, "unclosed comment"),
        ("{{$nope}}", 1, 3, "undefined variable: $nope"),
        ('{{template "x"}}', 1, 1, "{{template}} is not supported"),
        ("{{if}}x{{end}}", 1, 1, "missing value for if"),
        ("{{.Trial | }}", 1, 10, "missing value for command"),
        ("{{(.Trial}}", 1, 3, "unclosed left paren"),
        ("{{range .Trial}}{{end}}", 1, 1, "range can't iterate over random-example-abc"),
        ("{{index .HyperParameters 5}}", 1, 3, "error calling index: index out of range: 5"),
        ("{{.Trial 1}}", 1, 3, "can't give argument to non-function .Trial"),
        ("{{else}}", 1, 1, "unexpected {{else}} outside if/range/with"),
        ('{{"unterminated}}', 1, 3, "unterminated quoted string"),
    ],
)
def test_errors_name_line_and_column(template: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(GoTemplateError) as err:
        render(template, DATA)
    assert (err.value.line, err.value.column) == (line, column), str(err.value)
    assert fragment in str(err.value)
    assert str(err.value).startswith(f"line {line}, column {column}: ")


def _v1alpha3(raw: str, **extra: Any) -> str:
    body = {
        "apiVersion": "kubeflow.org/v1alpha3",
        "kind": "Experiment",
        "metadata": {"name": "random-example", "namespace": "kubeflow"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "Validation-accuracy"},
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": 1,
            "maxTrialCount": 2,
            "parameters": [
                {
                    "name": "--lr",
                    "parameterType": "double",
                    "feasibleSpace": {"min": "0.01", "max": "0.03"},
                },
                {
                    "name": "--num-layers",
                    "parameterType": "int",
                    "feasibleSpace": {"min": "2", "max": "5"},
                },
            ],
            "trialTemplate": {"goTemplate": {"rawTemplate": raw}, **extra},
        },
    }
    return yaml.safe_dump(body, sort_keys=False)


def test_v1alpha3_experiment_is_accepted_with_defaults_from_its_kind() -> None:
    exp, problems = parse_experiment(_v1alpha3(V1ALPHA3_RAW))
    assert problems == [] and exp is not None
    assert exp.api_version == "kubeflow.org/v1beta1"
    tt = exp.spec.trial_template
    assert tt is not None
    assert tt.success_condition == 'status.conditions.#(type=="Complete")#|#(status=="True")#'
    assert tt.failure_condition == 'status.conditions.#(type=="Failed")#|#(status=="True")#'
    job = render_run_spec(exp, "random-example-x1", {"--lr": "0.02", "--num-layers": "4"})
    assert job["metadata"]["name"] == "random-example-x1"
    args = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert args[-2:] == ["--lr=0.02", "--num-layers=4"]


def test_v1alpha3_template_errors_are_located() -> None:
    bad = V1ALPHA3_RAW.replace("{{.NameSpace}}", "{{.Namespace}}")
    _, problems = parse_experiment(_v1alpha3(bad))
    assert len(problems) == 1
    problem = problems[0]
    assert problem.path == "spec.trialTemplate.goTemplate.rawTemplate"
    assert "line 5, column 16: can't evaluate field Namespace" in problem.message
    assert problem.line is not None


def test_v1alpha3_template_that_is_not_yaml() -> None:
    _, problems = parse_experiment(_v1alpha3("kind: Job\n  bad: [\n"))
    assert [p.path for p in problems] == ["spec.trialTemplate.goTemplate.rawTemplate"]
    assert "not valid YAML/JSON" in problems[0].message


def test_v1alpha3_apiversion_needs_a_go_template() -> None:
    text = _v1alpha3(V1ALPHA3_RAW).replace("goTemplate:", "goTemplateX:")
    _, problems = parse_experiment(text)
    assert problems[0].path == "apiVersion"
    assert "read only for Experiments whose trialTemplate is a goTemplate" in problems[0].message


def test_go_template_and_trial_spec_are_exclusive() -> None:
    text = _v1alpha3(V1ALPHA3_RAW, trialSpec={"apiVersion": "batch/v1", "kind": "Job"})
    _, problems = parse_experiment(text)
    assert any("only one of spec.trialTemplate.trialSpec" in p.message for p in problems)


def test_template_spec_needs_all_fields() -> None:
    text = _v1alpha3("x").replace("rawTemplate: x", "templateSpec: {configMapName: cm}")
    _, problems = parse_experiment(text)
    assert [p.path for p in problems] == ["spec.trialTemplate.goTemplate.templateSpec"]
    assert (
        "configMapName, configMapNamespace and templatePath must be specified"
        in problems[0].message
    )

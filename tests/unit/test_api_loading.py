"""Loading Experiments from YAML/JSON: documents, line numbers, and file-level problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from katib.api import Experiment, load_experiment, load_experiment_dict, parse_experiment
from katib.api.loading import FILE_PATH, line_for
from katib.errors import InvalidSpecError, Problem

FIXTURES = Path(__file__).parent / "invalid_experiments"
RANDOM = FIXTURES / "random-job.yaml"
SDK = FIXTURES / "sdk-trainjob.yaml"


def _problems(text: str) -> list[Problem]:
    _, problems = parse_experiment(text)
    return problems


def _line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing `needle`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# --- valid examples -------------------------------------------------------------------------------


def test_katib_random_example_loads_and_is_defaulted() -> None:
    exp = load_experiment(RANDOM)
    assert isinstance(exp, Experiment)
    assert exp.name == "random" and exp.namespace == "kubeflow"
    tt = exp.spec.trial_template
    assert tt is not None and tt.trial_spec is not None
    assert tt.success_condition == 'status.conditions.#(type=="Complete")#|#(status=="True")#'
    command = tt.trial_spec["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--lr=${trialParameters.learningRate}" in command
    assert [
        p.feasible_space.distribution for p in exp.spec.parameters or [] if p.feasible_space
    ] == ["uniform"] * 3


def test_kubeflow_sdk_trainjob_shape_loads() -> None:
    exp = load_experiment(str(SDK))
    tt = exp.spec.trial_template
    assert tt is not None
    assert tt.retain is True and tt.primary_container_name == "node"
    assert tt.primary_pod_labels == {
        "jobset.sigs.k8s.io/replicatedjob-name": "node",
        "batch.kubernetes.io/job-completion-index": "0",
    }
    assert [(t.name, t.reference) for t in tt.trial_parameters or []] == [
        ("lr", "lr"),
        ("batch_size", "batch_size"),
    ]


def test_text_and_json_text_load_the_same() -> None:
    text = RANDOM.read_text()
    from_text = load_experiment(text)
    from_json = load_experiment(json.dumps(yaml.safe_load(text)))
    assert from_text == from_json == load_experiment(RANDOM)


def test_dict_loading_matches_file_loading() -> None:
    assert load_experiment_dict(yaml.safe_load(RANDOM.read_text())) == load_experiment(RANDOM)


def test_kind_and_api_version_may_be_omitted() -> None:
    doc = yaml.safe_load(RANDOM.read_text())
    del doc["kind"], doc["apiVersion"]
    exp = load_experiment_dict(doc)
    assert exp.kind == "Experiment" and exp.api_version == "kubeflow.org/v1beta1"


def test_dates_stay_strings() -> None:
    text = RANDOM.read_text().replace(
        "  name: random\n", "  name: random\n  annotations:\n    created: 2024-01-02\n"
    )
    exp = load_experiment(text)
    assert exp.metadata.annotations == {"created": "2024-01-02"}


# --- documents ------------------------------------------------------------------------------------


def test_multi_document_picks_the_experiment() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n" + RANDOM.read_text()
    exp = load_experiment(text)
    assert exp.name == "random"


def test_multi_document_lines_are_absolute() -> None:
    body = RANDOM.read_text().replace("maxTrialCount: 12", "maxTrialCount: 0")
    text = "kind: ConfigMap\n---\n" + body
    [problem] = _problems(text)
    assert problem.path == "spec.maxTrialCount"
    assert problem.line == _line_of(text, "maxTrialCount: 0")


def test_two_experiments_is_one_problem() -> None:
    text = RANDOM.read_text() + "\n---\n" + RANDOM.read_text()
    [problem] = _problems(text)
    assert problem.path == FILE_PATH
    assert "2 documents with kind: Experiment" in problem.message
    assert problem.line is not None and problem.line > 10


def test_no_experiment_among_documents() -> None:
    [problem] = _problems("kind: ConfigMap\n---\nkind: Job\n")
    assert "no document with kind: Experiment" in problem.message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n...\n"])
def test_empty_document(text: str) -> None:
    [problem] = _problems(text)
    assert problem.path == FILE_PATH and "empty" in problem.message


@pytest.mark.parametrize(("text", "got"), [("- a\n- b\n", "a list"), ("just text\n", "'just")])
def test_non_mapping_document(text: str, got: str) -> None:
    [problem] = _problems(text)
    assert "expected a mapping" in problem.message and got in problem.message
    assert problem.line == 1


def test_yaml_syntax_error_has_a_line() -> None:
    text = RANDOM.read_text().replace("    goal: 0.99\n", "    goal: [0.99\n")
    [problem] = _problems(text)
    assert problem.path == FILE_PATH
    assert problem.message.startswith("invalid YAML")
    assert problem.line is not None and problem.line >= _line_of(text, "goal:")


def test_yaml_bad_indentation_is_a_problem_not_a_traceback() -> None:
    with pytest.raises(InvalidSpecError) as info:
        load_experiment("spec:\n  a: 1\n b: 2\n")
    [problem] = info.value.problems
    assert problem.line == 3


def test_duplicate_key_is_reported() -> None:
    text = RANDOM.read_text().replace(
        "  maxTrialCount: 12\n", "  maxTrialCount: 12\n  maxTrialCount: 6\n"
    )
    [problem] = _problems(text)
    assert problem.path == "spec.maxTrialCount" and "duplicate key" in problem.message
    assert problem.line == _line_of(text, "maxTrialCount: 6")


# --- files ----------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InvalidSpecError) as info:
        load_experiment(missing)
    assert info.value.source == str(missing)
    [problem] = info.value.problems
    assert "file not found" in problem.message


def test_missing_file_given_as_string(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpecError, match="file not found"):
        load_experiment(str(tmp_path / "nope.yml"))


def test_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "exp.yaml"
    bad.write_bytes(b"\xff\xfe\x00kind")
    [problem] = parse_experiment(bad)[1]
    assert "UTF-8" in problem.message


def test_error_carries_the_source(tmp_path: Path) -> None:
    f = tmp_path / "exp.yaml"
    f.write_text(RANDOM.read_text().replace("algorithmName: random", "algorithmName: nope"))
    with pytest.raises(InvalidSpecError) as info:
        load_experiment(f)
    assert info.value.source == str(f)
    assert str(info.value).startswith(f"{f}: 1 problem(s)")
    with pytest.raises(InvalidSpecError) as info:
        load_experiment(f.read_text(), source="given.yaml")
    assert info.value.source == "given.yaml"


# --- line numbers ---------------------------------------------------------------------------------


def test_rule_problem_lines() -> None:
    text = RANDOM.read_text().replace('min: "2"', 'min: "2.5"')
    [problem] = _problems(text)
    assert problem.path == "spec.parameters[1].feasibleSpace.min"
    assert problem.line == _line_of(text, 'min: "2.5"')


def test_unknown_field_line_and_suggestion() -> None:
    text = RANDOM.read_text().replace("  parallelTrialCount: 3", "  paralelTrialCount: 3")
    [problem] = _problems(text)
    assert problem.path == "spec.paralelTrialCount"
    assert problem.message == "unknown field; did you mean parallelTrialCount?"
    assert problem.line == _line_of(text, "paralelTrialCount")


def test_missing_node_uses_nearest_parent_line() -> None:
    text = RANDOM.read_text().replace('        max: "0.03"\n', "")
    [problem] = _problems(text)
    assert problem.path == "spec.parameters[0].feasibleSpace.max"
    assert problem.line == _line_of(text, "feasibleSpace:")


def test_list_item_line() -> None:
    text = RANDOM.read_text().replace("        reference: optimizer\n", "        reference: ''\n")
    lines = {p.path: p.line for p in _problems(text)}
    item = "spec.trialTemplate.trialParameters[2]"
    assert lines[item] == _line_of(text, "      - name: optimizer")


def test_all_problems_at_once_with_lines() -> None:
    text = (
        RANDOM.read_text()
        .replace("maxTrialCount: 12", "maxTrialCount: 0")
        .replace("type: maximize", "type: up")
        .replace("algorithmName: random", "algorithmName: simulated-annealing")
    )
    problems = _problems(text)
    assert [(p.path, p.line) for p in problems] == [
        ("spec.maxTrialCount", _line_of(text, "maxTrialCount: 0")),
        ("spec.objective.type", _line_of(text, "type: up")),
        ("spec.algorithm.algorithmName", _line_of(text, "simulated-annealing")),
    ]


def test_line_for_walks_up() -> None:
    lines = {"": 1, "spec": 2, "spec.parameters": 3, "spec.parameters[0]": 4}
    assert line_for("spec.parameters[0].feasibleSpace.min", lines) == 4
    assert line_for("spec.trialTemplate.TrialSource", lines) == 2
    assert line_for("kind", lines) == 1
    assert line_for("x", {}) is None


def test_recursive_alias_is_a_problem_not_a_crash() -> None:
    text = RANDOM.read_text().replace(
        "      kind: Job\n", "      kind: Job\n      extra: &x [*x]\n"
    )
    [problem] = _problems(text)
    assert "recursive YAML alias" in problem.message


def test_counts_must_fit_int32() -> None:
    text = RANDOM.read_text().replace("maxTrialCount: 12", "maxTrialCount: 99999999999999999999")
    [problem] = _problems(text)
    assert problem.path == "spec.maxTrialCount" and "32-bit" in problem.message


def test_python_tags_are_refused() -> None:
    [problem] = _problems("kind: !!python/object:os.system x\n")
    assert problem.message.startswith("invalid YAML") and problem.line == 1

"""katib.search: parameter specs as Katib's CRD wants them, and clear errors for bad bounds."""

from __future__ import annotations

import pytest

import katib
from katib import errors
from katib.api.loading import parse_experiment_dict
from katib.api.models import ParameterSpec
from katib.sdk import search


def test_double_int_categorical_discrete_documents() -> None:
    assert search.double(0.001, 1, distribution="logUniform").to_dict() == {
        "parameterType": "double",
        "feasibleSpace": {"min": "0.001", "max": "1", "distribution": "logUniform"},
    }
    assert search.double(-1.5, 2.25, step=0.25).to_dict() == {
        "parameterType": "double",
        "feasibleSpace": {"min": "-1.5", "max": "2.25", "step": "0.25"},
    }
    assert search.int(1, 10, step=2).to_dict() == {
        "parameterType": "int",
        "feasibleSpace": {"min": "1", "max": "10", "step": "2"},
    }
    assert search.categorical(["sgd", "adam", 3, 0.5, True]).to_dict() == {
        "parameterType": "categorical",
        "feasibleSpace": {"list": ["sgd", "adam", "3", "0.5", "True"]},
    }
    assert search.discrete([1, 2.5, "4"]).to_dict() == {
        "parameterType": "discrete",
        "feasibleSpace": {"list": ["1", "2.5", "4"]},
    }


def test_categorical_uses_list_not_distribution() -> None:
    """Katib's SDK put the values in `distribution`, which its webhook rejects."""
    spec = search.categorical(["a", "b"])
    assert spec.feasible_space is not None
    assert spec.feasible_space.list_ == ["a", "b"]
    assert spec.feasible_space.distribution is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("uniform", "uniform"),
        ("log_uniform", "logUniform"),
        ("LOGUNIFORM", "logUniform"),
        ("normal", "normal"),
        ("log-normal", "logNormal"),
    ],
)
def test_distribution_spellings(given: str, expected: str) -> None:
    spec = search.double(0.1, 1, distribution=given)
    assert spec.feasible_space is not None and spec.feasible_space.distribution == expected


def test_numbers_round_trip_exactly() -> None:
    spec = search.double(1e-7, 0.1)
    assert spec.feasible_space is not None
    assert float(spec.feasible_space.min or "") == 1e-7
    big = search.int(0, 10**20).feasible_space
    assert big is not None and big.max == "100000000000000000000"
    assert search.int("3", "7").to_dict()["feasibleSpace"] == {"min": "3", "max": "7"}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: search.double(1, 0), "search.double: min (1) must be less than max (0)"),
        (lambda: search.double(1, 1), "min (1) must be less than max (1)"),
        (
            lambda: search.int(1.5, 3),  # type: ignore[arg-type]
            "search.int: min must be an integer, got 1.5",
        ),
        (lambda: search.int(0, "ten"), "search.int: max must be an integer, got 'ten'"),
        (lambda: search.double("x", 1), "search.double: min must be a finite number, got 'x'"),
        (lambda: search.double(0, float("inf")), "search.double: max must be finite"),
        (lambda: search.double(0, float("nan")), "search.double: max must be finite"),
        (lambda: search.double(True, 2), "min must be a finite number, got bool True"),
        (lambda: search.int(0, 5, step=0), "search.int: step must be greater than 0, got 0"),
        (lambda: search.double(0, 1, step=-0.1), "step must be greater than 0"),
        (
            lambda: search.double(0, 1, distribution="logUniform"),
            "min (0) must be greater than 0 for the logUniform distribution",
        ),
        (lambda: search.double(0, 1, distribution="gaussian"), "distribution 'gaussian' is not"),
        (lambda: search.categorical("abc"), "search.categorical: expected a list of values"),
        (lambda: search.categorical([]), "search.categorical: the list of values is empty"),
        (lambda: search.categorical(["a", "a"]), "value [1] 'a' is a duplicate"),
        (lambda: search.categorical([None]), "value [0] must be a string or a number"),
        (lambda: search.discrete(["a"]), "search.discrete: value [0] must be a finite number"),
        (lambda: search.discrete([True]), "search.discrete: value [0] must be a string or a"),
    ],
)
def test_bad_input_is_one_clear_error(call: object, message: str) -> None:
    with pytest.raises(errors.InvalidArgumentError) as info:
        call()  # type: ignore[operator]
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)  # what Katib's SDK users catch


def test_specs_pass_experiment_validation() -> None:
    params: dict[str, ParameterSpec] = {
        "lr": search.double(1e-4, 1e-1, distribution="logUniform"),
        "layers": search.int(1, 5),
        "optimizer": search.categorical(["sgd", "adam"]),
        "batch": search.discrete([16, 32, 64]),
    }
    doc = {
        "metadata": {"name": "search-space"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "parameters": [{"name": k, **v.to_dict()} for k, v in params.items()],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": k, "reference": k} for k in params],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [
                                    {
                                        "name": "main",
                                        "image": "python",
                                        "command": ["echo"]
                                        + [f"${{trialParameters.{k}}}" for k in params],
                                    }
                                ]
                            }
                        }
                    },
                },
            },
        },
    }
    experiment, problems = parse_experiment_dict(doc)
    assert problems == []
    assert experiment is not None and experiment.spec.parameters is not None
    assert [p.parameter_type for p in experiment.spec.parameters] == [
        "double",
        "int",
        "categorical",
        "discrete",
    ]


def test_exported_from_katib() -> None:
    from katib import KatibClient
    from katib import search as exported

    assert exported is search
    assert KatibClient is katib.KatibClient
